"""Cooperative branch edge agent: the daemon core, supervisor, uplink and CLI."""

__version__ = "0.2.0"

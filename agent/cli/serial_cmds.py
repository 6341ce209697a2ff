"""Commands of this device family (placeholder until its drivers land)."""

from __future__ import annotations

import click


def register(cli: click.Group) -> None:
    """Add this family's command groups to the top-level CLI."""

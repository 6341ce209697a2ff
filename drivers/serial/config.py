"""Config models of the serial devices and branch workflows (owned by the serial drivers).

Placeholder until the serial drivers land: the agent's top-level config imports these
names, so they must keep existing.
"""

from __future__ import annotations

from agent.config.base import Section


class ScannerConfig(Section):
    name: str
    port: str


class ScaleConfig(Section):
    name: str
    port: str
    protocol: str


class WorkflowConfig(Section):
    pass

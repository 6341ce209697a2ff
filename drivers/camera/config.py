"""Config models of cameras, recording and clip rules (owned by the camera drivers).

Placeholder until the camera drivers land: the agent's top-level config imports these
names, so they must keep existing.
"""

from __future__ import annotations

from agent.config.base import Section


class CameraConfig(Section):
    name: str
    url: str | None = None


class RecordingConfig(Section):
    pass


class ClipRuleConfig(Section):
    camera: str

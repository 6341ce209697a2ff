"""Builds the camera subsystem's supervised components from the config (drivers.camera.system)."""

from __future__ import annotations

from core.interfaces import AgentContext, Component


def build_components(ctx: AgentContext) -> list[Component]:
    if not ctx.config.cameras:
        return []
    from drivers.camera.system import CameraSystem  # opencv and ffmpeg only when cameras are configured

    return CameraSystem(ctx).components

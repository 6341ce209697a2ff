"""Which subsystems the daemon builds, by module path, so a missing optional piece is explicit."""

from __future__ import annotations

import importlib

from core.interfaces import AgentContext, Component

# Each entry: "module:function", function(ctx) -> list[Component]
SUBSYSTEMS = [
    "drivers.serial.runtime:build_components",
    "drivers.camera.runtime:build_components",
]


def build_all(ctx: AgentContext) -> list[Component]:
    components: list[Component] = []
    for spec in SUBSYSTEMS:
        module, _, func = spec.partition(":")
        factory = getattr(importlib.import_module(module), func)
        components.extend(factory(ctx))
    return components

"""The device families the agent knows, by module path, so a missing optional piece is explicit.

One line per family: its components (what the daemon runs), its doctor checks and its CLI
commands. The core reaches a family only through these names; a new family is one folder
and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from core.doctor import Check, DoctorContext
from core.interfaces import AgentContext, Component


@dataclass(frozen=True)
class Family:
    name: str
    components: str          # "module:function", function(ctx) -> list[Component]
    doctor: str | None       # module with checks() -> list[Check] and bundle(ctx, minutes) -> {name: text}
    cli: str | None          # "module:function", function(click.Group) -> None


FAMILIES = [
    Family("serial", "drivers.serial.runtime:build_components", "drivers.serial.doctor",
           "drivers.serial.cli:register"),
    Family("camera", "drivers.camera.runtime:build_components", "drivers.camera.doctor",
           "drivers.camera.cli:register"),
]

SUBSYSTEMS = [f.components for f in FAMILIES]


def _load(spec: str) -> Any:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def build_all(ctx: AgentContext) -> list[Component]:
    components: list[Component] = []
    for spec in SUBSYSTEMS:
        components.extend(_load(spec)(ctx))
    return components


def doctor_checks() -> list[Check]:
    """Every family's checks, in the order of FAMILIES."""
    checks: list[Check] = []
    for f in FAMILIES:
        if f.doctor is not None:
            checks.extend(importlib.import_module(f.doctor).checks())
    return checks


def bundle_parts(ctx: DoctorContext, minutes: int) -> dict[str, str]:
    """Every family's files for the support bundle (device lists, recent frames), by member name."""
    parts: dict[str, str] = {}
    for f in FAMILIES:
        if f.doctor is not None:
            parts.update(importlib.import_module(f.doctor).bundle(ctx, minutes))
    return parts


def register_cli(group: Any) -> None:
    for f in FAMILIES:
        if f.cli is not None:
            _load(f.cli)(group)

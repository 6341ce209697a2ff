"""The device families the agent knows, by module path, so a missing optional piece is explicit.

One line per family: its components (what the daemon runs), its doctor checks, its CLI
commands and its status page panel. The core reaches a family only through these names; a new family is one folder
and one line here.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import Any

from core.doctor import Check, DoctorContext
from core.interfaces import AgentContext, Component
from core.panels import Panel, Publish


@dataclass(frozen=True)
class Family:
    name: str
    components: str          # "module:function", function(ctx) -> list[Component]
    doctor: str | None       # module with checks() -> list[Check] and bundle(ctx, minutes) -> {name: text}
    cli: str | None          # "module:function", function(click.Group) -> None
    panel: str | None = None  # "module:function", a core.panels.PanelBuilder
    routes: str | None = None  # "module:attribute", an APIRouter the local API serves (e.g. /v1/count)


FAMILIES = [
    Family("serial", "drivers.serial.runtime:build_components", "drivers.serial.doctor",
           "drivers.serial.cli:register", "drivers.serial.panel:build", "drivers.serial.workflows.api:router"),
    Family("camera", "drivers.camera.runtime:build_components", "drivers.camera.doctor",
           "drivers.camera.cli:register", "drivers.camera.panel:build"),
]

SUBSYSTEMS = [f.components for f in FAMILIES]


def _load(spec: str) -> Any:
    module, _, func = spec.partition(":")
    return getattr(importlib.import_module(module), func)


def build_all(ctx: AgentContext) -> list[Component]:
    return [c for comps in build_families(ctx).values() for c in comps]


def build_families(ctx: AgentContext) -> dict[str, list[Component]]:
    """Every family's components, by family name, in the order of FAMILIES."""
    return {f.name: list(_load(f.components)(ctx)) for f in FAMILIES}


def build_panels(ctx: AgentContext, built: dict[str, list[Component]], publish: Publish) -> list[Panel]:
    """The status page's panels of the families that have something configured."""
    panels: list[Panel] = []
    for f in FAMILIES:
        if f.panel is not None:
            panel = _load(f.panel)(ctx, built.get(f.name, []), publish)
            if panel is not None:
                panels.append(panel)
    return panels


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


def api_routers() -> list[Any]:
    """The families' routes for the local API, in the order of FAMILIES."""
    return [_load(f.routes) for f in FAMILIES if f.routes is not None]


def register_cli(group: Any) -> None:
    for f in FAMILIES:
        if f.cli is not None:
            _load(f.cli)(group)

"""Builds the serial subsystem's supervised components from the config: one reader per device,
and the workflow engine (shared by all of them and by the local API's /v1/count routes)."""

from __future__ import annotations

import logging
from pathlib import Path

from core.auth import load_token
from core.interfaces import AgentContext, Component
from drivers.serial.config import cross_check
from drivers.serial.devices import ScaleDevice, ScannerDevice
from drivers.serial.workflows.component import WorkflowTicker
from drivers.serial.workflows.engine import WorkflowEngine

log = logging.getLogger(__name__)

_engine: WorkflowEngine | None = None
_token: bytes | None = None


def workflow_engine() -> WorkflowEngine | None:
    """The engine built by the last build_components (the local API's count routes use it)."""
    return _engine


def api_token() -> bytes | None:
    """The local API token, read when the subsystem was built (None: the count routes refuse all)."""
    return _token


def _load_token(path: Path) -> bytes | None:
    try:
        return load_token(path)
    except ValueError as exc:
        log.warning("count API disabled: %s", exc)
        return None


def build_components(ctx: AgentContext) -> list[Component]:
    global _engine, _token
    cfg = ctx.config
    problems = cross_check(cfg.scanners, cfg.scales)
    if problems:
        # AgentConfig validation should have caught these; refuse rather than guess.
        raise ValueError("; ".join(problems))
    if not cfg.scanners and not cfg.scales:
        return []
    if _engine is not None:
        _engine.close()
    engine = WorkflowEngine(cfg.workflow, cfg.scanners, cfg.agent.data_dir, ctx.records)
    _engine = engine
    _token = _load_token(cfg.api.token_file)
    components: list[Component] = [WorkflowTicker(engine)]
    components += [ScannerDevice(s, ctx, cfg.workflow, engine) for s in cfg.scanners]
    components += [ScaleDevice(s, ctx, engine) for s in cfg.scales]
    log.info("serial: %d scanner(s), %d scale(s)", len(cfg.scanners), len(cfg.scales))
    return components

"""Live device checks for technicians (`coopagent scanner test`, `coopagent scale test`).

They open the port themselves, so they are for a device the agent is not holding (stop the
agent, or test a device before adding it to the config); the port is opened exclusively and
a busy port says so.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from drivers.serial.config import ScannerConfig, WorkflowConfig
from drivers.serial.framing import DelimitedFramer
from drivers.serial.placement import PlacementFilter
from drivers.serial.port import open_port
from drivers.serial.scales import ScaleConfigBase, make_protocol
from drivers.serial.scanner import ScanInterpreter


def scanner_reads(cfg: ScannerConfig, wf: WorkflowConfig, seconds: float | None) -> Iterator[dict[str, Any]]:
    """Yield each read's interpretation until `seconds` pass (None: until the caller stops or Ctrl-C)."""
    framer = DelimitedFramer(cfg.suffix_bytes, cfg.prefix_bytes, cfg.max_frame_bytes)
    interpreter = ScanInterpreter(wf)
    deadline = None if seconds is None else time.monotonic() + seconds
    with open_port(cfg, timeout=0.1) as port:
        while deadline is None or time.monotonic() < deadline:
            for frame in framer.feed(port.read(max(1, port.in_waiting))):
                yield interpreter.interpret(frame)


def scale_readings(
    cfg: ScaleConfigBase, seconds: float | None, actions: list[str]
) -> Iterator[dict[str, Any]]:
    """Yield each reading with what the agent would do with it (record / state change)."""
    proto = make_protocol(cfg)
    placement = PlacementFilter(cfg.zero_band_g, cfg.change_band_g)
    deadline = None if seconds is None else time.monotonic() + seconds
    with open_port(cfg, timeout=0.02) as port:
        for action in actions:
            cmd = {
                "zero": proto.zero_command,
                "tare": proto.tare_command,
                "clear-tare": proto.clear_tare_command,
            }[action]()
            if cmd is None:
                yield {"status": "error", "detail": {"error": f"{cfg.protocol} has no {action} command"}}
            else:
                port.write(cmd)
        last_poll = 0.0
        while deadline is None or time.monotonic() < deadline:
            poll = proto.poll_command()
            now = time.monotonic()
            if poll is not None and now - last_poll >= cfg.poll_interval_s:
                port.write(poll)
                last_poll = now
            for r in proto.feed(port.read(max(1, port.in_waiting))):
                d = placement.update(r)
                out: dict[str, Any] = {"status": r.status, "grams": r.grams}
                if r.net:
                    out["net"] = True
                if r.tare_g is not None:
                    out["tare_g"] = r.tare_g
                if r.detail:
                    out["detail"] = r.detail
                if d.weight_g is not None:
                    out["record"] = d.weight_g
                if d.state_change:
                    out["state"] = d.state_change
                yield out

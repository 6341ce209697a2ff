"""Live device checks for technicians (`coopagent scanner test`, `coopagent scale test`).

They open the port themselves, so they are for a device the agent is not holding (stop the
agent, or test a device before adding it to the config); the port is opened exclusively and
a busy port says so.

Both keep a `Capture` of what arrived and, when nothing useful arrives within
`explain_after` seconds (sooner when bytes arrive that do not parse), yield a `Diagnosis`
(drivers/serial/diagnose.py): a scale test then ends, since a working scale streams or
answers its poll within a second; a scanner test goes on waiting after saying it heard
nothing (a scanner is silent until someone scans), and ends when bytes arrive that frame
into no read.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

from drivers.serial.config import ScannerConfig, WorkflowConfig
from drivers.serial.diagnose import Capture, Diagnosis, diagnose_scale, diagnose_scanner
from drivers.serial.framing import DelimitedFramer
from drivers.serial.placement import PlacementFilter
from drivers.serial.port import open_port, strip_bit7
from drivers.serial.scales import ScaleConfigBase, make_protocol
from drivers.serial.scanner import ScanInterpreter

Event = dict[str, Any] | Diagnosis


def _due(cap: Capture, explain_after: float) -> bool:
    """Time to explain: nothing parsed after explain_after, or sooner when bytes keep failing."""
    elapsed = cap.elapsed()
    if elapsed >= explain_after:
        return True
    noisy = cap.refused_total >= 5 or cap.bytes_seen >= 512
    return cap.bytes_seen > 0 and noisy and elapsed >= min(2.0, explain_after)


def scanner_reads(
    cfg: ScannerConfig,
    wf: WorkflowConfig,
    seconds: float | None,
    capture: Capture | None = None,
    explain_after: float = 5.0,
) -> Iterator[Event]:
    """Yield each read's interpretation until `seconds` pass (None: until the caller stops or Ctrl-C)."""
    cap = capture if capture is not None else Capture()
    framer = DelimitedFramer(cfg.suffix_bytes, cfg.prefix_bytes, cfg.max_frame_bytes)
    interpreter = ScanInterpreter(wf)
    deadline = None if seconds is None else time.monotonic() + seconds
    said_silent = False
    with open_port(cfg, timeout=0.1) as port:
        cap.started = time.monotonic()
        while deadline is None or time.monotonic() < deadline:
            data = strip_bit7(port.read(max(1, port.in_waiting)), cfg)
            cap.add_bytes(data)
            for frame in framer.feed(data):
                cap.frames += 1
                yield interpreter.interpret(frame)
            if framer.stats.overruns:
                cap.refused["longer than max_frame_bytes"] = framer.stats.overruns
            if framer.stats.garbage_bytes and cfg.prefix_bytes:
                cap.refused["bytes without the prefix"] = framer.stats.garbage_bytes
            if cap.frames == 0 and _due(cap, explain_after):
                if cap.bytes_seen:
                    yield diagnose_scanner(cfg, cap)
                    return
                if not said_silent:
                    said_silent = True
                    yield diagnose_scanner(cfg, cap)


def scale_readings(
    cfg: ScaleConfigBase,
    seconds: float | None,
    actions: list[str],
    capture: Capture | None = None,
    explain_after: float = 5.0,
) -> Iterator[Event]:
    """Yield each reading with what the agent would do with it (record / state change)."""
    cap = capture if capture is not None else Capture()
    proto = make_protocol(cfg)
    placement = PlacementFilter(cfg.zero_band_g, cfg.change_band_g)
    deadline = None if seconds is None else time.monotonic() + seconds
    with open_port(cfg, timeout=0.02) as port:
        cap.started = time.monotonic()
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
                cap.polls += 1
                last_poll = now
            data = strip_bit7(port.read(max(1, port.in_waiting)), cfg)
            cap.add_bytes(data)
            for r in proto.feed(data):
                if r.refused is not None:
                    example = str(r.detail.get("frame") or r.detail.get("line") or r.detail.get("reply") or "")
                    cap.refuse(r.refused, example.encode("unicode_escape").decode("ascii")[:48])
                    yield {"status": r.status, "refused": r.refused, "detail": r.detail}
                    continue
                cap.frames += 1
                yield _reading(r, placement)
            for reason, n in proto.dropped.items():
                cap.refused[reason] = n
                cap.examples[reason] = proto.dropped_example[reason]
            if cap.frames == 0 and _due(cap, explain_after):
                yield diagnose_scale(cfg, cap)
                return


def _reading(r: Any, placement: PlacementFilter) -> dict[str, Any]:
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
    return out


def weight_line(r: dict[str, Any]) -> str:
    """A reading as the technician reads it: `   1.200 kg  stable  net  tare 0.200 kg  -> recorded`."""
    grams = r.get("grams")
    parts = [f"{grams / 1000:>9.3f} kg" if isinstance(grams, int) else " " * 9 + "--   ", r["status"]]
    if r.get("net"):
        parts.append("net")
    if r.get("tare_g"):
        parts.append(f"tare {r['tare_g'] / 1000:.3f} kg")
    if r.get("refused"):
        parts.append(f"refused: {r['refused']}")
    elif r["status"] in ("error", "info") and r.get("detail"):
        parts.append(", ".join(f"{k} {v}" for k, v in r["detail"].items() if k != "frame"))
    if "record" in r:
        parts.append("-> recorded")
    if r.get("state"):
        parts.append(f"(state {r['state']})")
    return "  ".join(parts)

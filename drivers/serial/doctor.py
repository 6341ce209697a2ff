"""The serial devices' doctor checks: the port is there and opens, and its frames parse.

Registered by its line in agent/subsystems.py; ids are serial.NAME.port and serial.NAME.frames.
While the agent runs it holds the ports, so its own health of the device is the answer then.
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import serial

from core.doctor import Check, DoctorContext, Finding, error, ok, skipped
from drivers.serial.config import ScannerConfig
from drivers.serial.diagnose import Diagnosis
from drivers.serial.port import open_port
from drivers.serial.scales import ScaleConfigBase
from drivers.serial.testers import scale_readings

# A polled scale answers within a poll interval, a streaming one sends several frames a second.
FRAME_WAIT_S = 3.0


def checks() -> list[Check]:
    return [serial_checks]


def serial_checks(c: DoctorContext) -> Iterator[Finding]:
    comps = (c.status or {}).get("components") or {}
    devices: list[ScannerConfig | ScaleConfigBase] = [*c.cfg.scanners, *c.cfg.scales]
    for dev in devices:
        kind = "scanner" if isinstance(dev, ScannerConfig) else "scale"
        base = f"serial.{dev.name}"
        if not Path(dev.port).exists():
            yield error(f"{base}.port", f"{kind} {dev.name}: {dev.port} is not there (unplugged?)",
                        f"plug the {kind} in and power it on; ls -l /dev/serial/by-id/ and use that name as "
                        f"its port in the config")
            yield skipped(f"{base}.frames", "no port")
            continue
        health = comps.get(f"{kind}:{dev.name}")
        if health is not None:
            yield ok(f"{base}.port", f"{dev.port} held by the running agent")
            if health == "ok":
                yield ok(f"{base}.frames", f"the running agent reads the {kind} (health ok)")
            else:
                yield error(f"{base}.frames", f"the running agent's {kind} {dev.name} is {health}",
                            f"check the cable and power; systemctl stop coopagent, then coopagent-svc {kind} test "
                            f"{dev.name}")
            continue
        yield from _probe(dev, kind, base)


def _probe(dev: ScannerConfig | ScaleConfigBase, kind: str, base: str) -> Iterator[Finding]:
    try:
        port = open_port(dev, timeout=0.05)
    except (serial.SerialException, OSError) as exc:
        yield error(f"{base}.port", f"{dev.port} does not open: {exc}",
                    "another program holds it (stop it), or the agent user lacks group dialout")
        yield skipped(f"{base}.frames", "the port does not open")
        return
    port.close()
    yield ok(f"{base}.port", f"{dev.port} opens ({dev.baudrate} baud)")
    if isinstance(dev, ScannerConfig):
        yield skipped(f"{base}.frames", f"a scanner sends only when something is scanned: "
                      f"coopagent-svc scanner test {dev.name}")
        return
    yield _scale_frames(dev, base)


def _scale_frames(dev: ScaleConfigBase, base: str) -> Finding:
    """The same reading and the same diagnosis as `coopagent scale test` (drivers.serial.testers):
    a scale that says nothing, or whose bytes do not parse, gets the cause and the setting that
    reads (checked by replaying what arrived), not only "check the scale's menu"."""
    settings = f"{dev.protocol}, {dev.baudrate} baud {dev.bytesize}{dev.parity}{dev.stopbits}"
    for event in scale_readings(dev, FRAME_WAIT_S, [], explain_after=FRAME_WAIT_S):
        if isinstance(event, Diagnosis):
            fixes = "; ".join(f.fix for f in event.findings) or f"the scale must speak {settings}"
            causes = "; ".join(f.cause for f in event.findings)
            return error(f"{base}.frames", event.summary + (f" ({causes})" if causes else ""), fixes)
        if event.get("grams") is not None and not event.get("refused"):
            return ok(f"{base}.frames", f"reads {event['grams']} g ({event['status']}) over {settings}")
    return error(f"{base}.frames", f"no frame parsed in {FRAME_WAIT_S:g} s",
                 f"is the scale on? check the cable; the scale must speak {settings}; or run "
                 f"coopagent scale detect {dev.port}")


def bundle(c: DoctorContext, minutes: int) -> dict[str, str]:
    """serial-devices.json (ports on this PC, configured devices) and serial-frames.txt: the
    last minutes' scans and weights from the buffer, each scan's frame in hex (without its
    suffix, which the framer strips); weights as the agent recorded them."""
    from serial.tools import list_ports

    by_id = Path("/dev/serial/by-id")
    links = {str(p.resolve()): str(p) for p in by_id.iterdir()} if by_id.is_dir() else {}
    ports = [{"device": p.device, "by_id": links.get(p.device), "description": p.description, "hwid": p.hwid}
             for p in list_ports.comports()]
    conf = [{"name": d.name, "port": d.port, "exists": Path(d.port).exists(), "baudrate": d.baudrate,
             "kind": "scanner" if isinstance(d, ScannerConfig) else f"scale ({d.protocol})"}
            for d in [*c.cfg.scanners, *c.cfg.scales]]
    lines = [f"# scans and weights of the last {minutes} minutes (time UTC, source, frame hex | weight)"]
    for r in c.recent_records(("scan", "weight"), minutes):
        at = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(int(r["at"]) / 1000)) + f".{int(r['at']) % 1000:03d}Z"
        data = r.get("data") or {}
        if r["kind"] == "scan":
            lines.append(f"{at} {r.get('src')} {str(data.get('raw', '')).encode('latin-1', 'replace').hex(' ')}")
        else:
            lines.append(f"{at} {r.get('src')} weight {data.get('grams')} g{' net' if data.get('net') else ''}")
    return {"serial-devices.json": json.dumps({"ports": ports, "configured": conf}, indent=2),
            "serial-frames.txt": "\n".join(lines) + "\n"}

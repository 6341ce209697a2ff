"""The cameras' doctor checks: ONVIF reachable and its clock, the stream probed, the ring written.

Registered by its line in agent/subsystems.py; ids are camera.NAME.onvif|clock|stream|recording.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from typing import Any

from core.doctor import Check, DoctorContext, Finding, error, ok, skipped, warning
from drivers.camera.config import CameraConfig
from drivers.camera.onvif_client import CameraAuthError, CameraError, CameraUnreachable, OnvifInfo
from drivers.camera.probe import probe
from drivers.camera.quiet import quiet_camera_logs
from drivers.camera.secrets import scrub, strip_credentials
from drivers.camera.source import CameraSource


def checks() -> list[Check]:
    return [camera_checks]


def camera_checks(c: DoctorContext) -> Iterator[Finding]:
    # the drivers' own log lines would repeat what the findings say: quiet in this thread only
    with quiet_camera_logs():
        for cam in c.cfg.cameras:
            yield from _one(c, cam)


def _onvif(cam: CameraConfig, src: CameraSource) -> Iterator[Finding]:
    base = f"camera.{cam.name}"
    if cam.onvif is None:
        yield skipped(f"{base}.onvif", "plain RTSP url configured, no ONVIF")
        yield skipped(f"{base}.clock", "no ONVIF to ask the camera's clock")
        return
    where = f"{cam.onvif.host}:{cam.onvif.port}"
    try:
        info: OnvifInfo = src.refresh()
    except CameraAuthError as exc:
        yield error(f"{base}.onvif", scrub(str(exc), src.password),
                    f"check the camera's user ({cam.username}) and its password file ({cam.password_file}) "
                    "against the camera's web page")
        yield skipped(f"{base}.clock", "ONVIF refused")
        return
    except CameraUnreachable as exc:
        yield error(f"{base}.onvif", scrub(str(exc), src.password),
                    f"is the camera on (power, PoE port lit)? ping {cam.onvif.host}; check [[cameras]] onvif "
                    f"host and port ({where})")
        yield skipped(f"{base}.clock", "camera unreachable")
        return
    except CameraError as exc:
        yield error(f"{base}.onvif", scrub(str(exc), src.password), f"coopagent-svc camera test {cam.name}")
        yield skipped(f"{base}.clock", "ONVIF failed")
        return
    yield ok(f"{base}.onvif", f"{info.manufacturer} {info.model} at {where}")
    drift = info.clock_drift_s
    if drift is None:
        yield skipped(f"{base}.clock", "the camera did not give its time")
    elif abs(drift) > cam.clock_drift_s:
        yield warning(f"{base}.clock", f"the camera's clock is {drift:+.0f} s from this PC's "
                      f"(more than {cam.clock_drift_s:g} s): its overlay and events disagree with the records",
                      "set NTP on the camera's web page (server: this PC or the branch's NTP server)")
    else:
        yield ok(f"{base}.clock", f"{drift:+.1f} s from this PC")


def _one(c: DoctorContext, cam: CameraConfig) -> Iterator[Finding]:
    base = f"camera.{cam.name}"
    try:
        src = CameraSource(cam, lambda ev, d: None)
    except ValueError as exc:  # unreadable password file
        yield error(f"{base}.onvif", str(exc), f"check {cam.password_file} exists (credentials folder)")
        return
    found = list(_onvif(cam, src))
    yield from found
    if cam.onvif is not None and found[0].result.value == "error":
        yield skipped(f"{base}.stream", "ONVIF failed, so no stream URI")
    else:
        yield from _stream(c, cam, src)
    yield from _recording(c, cam)


def _stream(c: DoctorContext, cam: CameraConfig, src: CameraSource) -> Iterator[Finding]:
    fid = f"camera.{cam.name}.stream"
    try:
        url = src.main_url()
        s: dict[str, Any] = probe(url, c.cfg.recording.ffprobe, cam.stale_after_s, cam.transport)
    except (CameraError, RuntimeError, subprocess.TimeoutExpired, OSError) as exc:
        yield error(fid, f"the main stream does not play: {scrub(str(exc), src.password)}",
                    "is the camera on and streaming? check the RTSP path, user and password "
                    f"(coopagent-svc camera test {cam.name})")
        return
    yield ok(fid, f"{s.get('codec_name')} {s.get('width')}x{s.get('height')} @ {s.get('avg_frame_rate')} fps")


def _recording(c: DoctorContext, cam: CameraConfig) -> Iterator[Finding]:
    fid = f"camera.{cam.name}.recording"
    if not cam.record:
        yield skipped(fid, "record = false for this camera")
        return
    if c.status is None:
        yield skipped(fid, f"only the running agent records: {c.status_reason}")
        return
    health = (c.status.get("components") or {}).get(f"camera:{cam.name}:record")
    if health == "ok":
        yield ok(fid, "the recording ring is being written")
    else:
        yield error(fid, f"the recording ring is not being written (recorder {health})",
                    f"check the stream (camera.{cam.name}.stream) and disk (disk.free); "
                    "journalctl -u coopagent -b | grep record")


def bundle(c: DoctorContext, minutes: int) -> dict[str, str]:
    """camera-devices.json: each camera's address (credentials stripped) and its newest segments."""
    from drivers.camera.system import recordings_dir  # numpy and OpenCV: only for the bundle

    rec = recordings_dir(c.cfg)
    cams = []
    for cam in c.cfg.cameras:
        d = rec / cam.name
        segs = sorted(d.glob("*"), key=lambda p: p.stat().st_mtime)[-5:] if d.is_dir() else []
        cams.append({
            "name": cam.name, "record": cam.record, "transport": cam.transport,
            "url": strip_credentials(cam.url) if cam.url else None,
            "sub_url": strip_credentials(cam.sub_url) if cam.sub_url else None,
            "onvif": None if cam.onvif is None else {"host": cam.onvif.host, "port": cam.onvif.port},
            "username": cam.username, "newest_segments": [{"name": p.name, "bytes": p.stat().st_size} for p in segs],
        })
    return {"camera-devices.json": json.dumps(cams, indent=2)}

"""`coopagent camera discover|list|test|snapshot|clip`: what a technician needs at the branch.

Every line printed goes through scrub(): stream URLs carry credentials once resolved.
`clip` cuts from the ring the running agent records (same config, same recordings dir).
"""

from __future__ import annotations

import functools
import json
import re
import subprocess
import time
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import click

from core.cli import config_option, fail, handle_errors
from core.cli import load_config as resolve_config
from drivers.camera.probe import probe as _probe
from drivers.camera.quiet import quiet_camera_logs_process

TIME_HELP = "epoch ms, ISO 8601 (2026-05-01T14:03:00+03:00), 'now' or relative like -90s / -5m"
_REL = re.compile(r"^-(\d+(?:\.\d+)?)([smh])$")


F = TypeVar("F", bound=Callable[..., Any])


def parse_when(value: str, now: float | None = None) -> int:
    """A time for --start/--end as epoch ms; the error says which forms are allowed."""
    now = time.time() if now is None else now
    v = value.strip()
    if v == "now":
        return int(now * 1000)
    m = _REL.match(v)
    if m:
        return int((now - float(m.group(1)) * {"s": 1, "m": 60, "h": 3600}[m.group(2)]) * 1000)
    if v.isdigit():
        return int(v)
    try:
        dt = datetime.fromisoformat(v)
    except ValueError:
        raise click.BadParameter(f"{value!r} is not a time; use {TIME_HELP}") from None
    if dt.tzinfo is None:
        dt = dt.astimezone()  # local time of the branch PC
    return int(dt.timestamp() * 1000)


def _camera(cfg: Any, name: str) -> Any:
    for cam in cfg.cameras:
        if cam.name == name:
            return cam
    fail(f"no camera {name!r} in the config; configured: {', '.join(c.name for c in cfg.cameras) or 'none'}")


@click.group("camera")
def camera() -> None:
    """Find, check and use the branch's cameras."""


@camera.command("discover")
@click.option("--timeout", "timeout_s", type=float, default=3.0, show_default=True, help="seconds to listen")
@click.option("--user", default=None, help="ONVIF user for GetDeviceInformation")
@click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False), default=None)
@click.option("--host", default=None, help="probe this address directly instead of multicasting (another subnet)")
@click.option("--port", "wsd_port", type=int, default=3702, show_default=True, help="WS-Discovery UDP port")
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@handle_errors
def discover_cmd(
    timeout_s: float,
    user: str | None,
    password_file: Path | None,
    host: str | None,
    wsd_port: int,
    as_json: bool,
) -> None:
    """WS-Discovery: list ONVIF cameras with maker, model, serial and address, and the devices
    that answered in a way that could not be understood, with what was wrong."""
    from drivers.camera.discovery import discover
    from drivers.camera.secrets import read_password, scrub

    try:
        password = read_password(password_file)
    except ValueError as exc:
        fail(str(exc))
    result = discover(user, password, timeout_s, host, wsd_port)
    rows = [
        {
            "address": f"{f.host}:{f.port}",
            "xaddr": f.xaddr,
            "name": f.name,
            "maker": f.info.manufacturer if f.info else None,
            "model": f.info.model if f.info else None,
            "serial": f.info.serial if f.info else None,
            "error": scrub(f.error, password) if f.error else None,
        }
        for f in result.found
    ]
    bad = [{"sender": u.sender, "problem": u.problem, "excerpt": u.excerpt} for u in result.unreadable]
    if as_json:
        click.echo(json.dumps({"cameras": rows, "not_understood": bad}, indent=2))
        return
    if not rows and not bad:
        click.echo("no ONVIF camera answered")
        return
    for r in rows:
        who = f"{r['maker']} {r['model']} serial {r['serial']}" if r["serial"] else f"? ({r['error']})"
        click.echo(f"{r['address']:<22} {who}  {r['name']}")
    for b in bad:
        click.echo(f"{b['sender']:<22} answered, but not understood: {b['problem']}")


@camera.command("list")
@config_option
@handle_errors
def list_cmd(config_path: Path | None) -> None:
    """The configured cameras and what their rings hold."""
    cfg = resolve_config(config_path)
    from drivers.camera.ring import Ring
    from drivers.camera.system import recordings_dir

    base = recordings_dir(cfg)
    if not cfg.cameras:
        click.echo("no cameras configured")
    for cam in cfg.cameras:
        src = f"onvif {cam.onvif.host}:{cam.onvif.port}" if cam.onvif else f"rtsp {cam.url}"
        line = f"{cam.name:<16} {src}"
        ring_dir = base / cam.name
        if cam.record and ring_dir.is_dir():
            segs = Ring(ring_dir, cfg.recording.ring_minutes, cfg.recording.ring_mb * 2**20).segments()
            if segs:
                span = (segs[-1].end_ms - segs[0].start_ms) / 60_000
                mb = sum(s.size for s in segs) / 2**20
                last = datetime.fromtimestamp(segs[-1].end_ms / 1000).isoformat(timespec="seconds")
                line += f"  ring {len(segs)} segments, {span:.1f} min, {mb:.0f} MB, last {last}"
        elif not cam.record:
            line += "  (not recorded)"
        click.echo(line)


def _quiet(func: F) -> F:
    """The CLI prints each problem once, itself; the drivers' own log lines would repeat it."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        with quiet_camera_logs_process():
            return func(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


def _source(cam: Any) -> Any:
    from drivers.camera.source import CameraSource

    try:
        return CameraSource(cam, lambda ev, d: None)
    except ValueError as exc:  # unreadable password file
        fail(str(exc))


@camera.command("test")
@config_option
@click.argument("name")
@handle_errors
@_quiet
def test_cmd(config_path: Path | None, name: str) -> None:
    """Check one camera: ONVIF identity and clock, both streams, one frame."""
    cfg = resolve_config(config_path)
    cam = _camera(cfg, name)
    from drivers.camera.grabber import open_capture
    from drivers.camera.onvif_client import CameraError
    from drivers.camera.secrets import scrub

    src = _source(cam)
    problems = 0
    try:
        if cam.onvif is not None:
            info = src.refresh()
            click.echo(f"onvif    {info.manufacturer} {info.model} serial {info.serial} firmware {info.firmware}")
            drift = "unknown" if info.clock_drift_s is None else f"{info.clock_drift_s:+.1f} s"
            click.echo(f"clock    camera is {drift} from this PC (threshold {cam.clock_drift_s:g} s)")
        urls = {"main": src.main_url(), "sub": src.sub_url()}
    except CameraError as exc:
        fail(scrub(str(exc), src.password))
    for which, url in urls.items():
        try:
            s = _probe(url, cfg.recording.ffprobe, cam.stale_after_s, cam.transport)
            click.echo(
                f"{which:<8} {scrub(url, src.password)}  {s.get('codec_name')} {s.get('width')}x"
                f"{s.get('height')} @ {s.get('avg_frame_rate')}"
            )
        except (RuntimeError, subprocess.TimeoutExpired) as exc:
            problems += 1
            click.echo(f"{which:<8} {scrub(url, src.password)}  FAILED: {scrub(str(exc), src.password)}")
    cap = open_capture(urls["sub"], cam.transport, cam.stale_after_s)
    ok = False
    if cap is not None:
        ok = bool(cap.read()[0])
        cap.release()
    click.echo(f"frame    {'ok' if ok else 'FAILED: no frame from the sub stream'}")
    if problems or not ok:
        raise SystemExit(1)


@camera.command("snapshot")
@config_option
@click.argument("name")
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="JPEG file")
@click.option("--main", "use_main", is_flag=True, help="from the main stream (full resolution)")
@handle_errors
@_quiet
def snapshot_cmd(config_path: Path | None, name: str, out: Path, use_main: bool) -> None:
    """Grab one frame from the camera now and write it as JPEG."""
    cfg = resolve_config(config_path)
    cam = _camera(cfg, name)
    import cv2

    from drivers.camera.grabber import open_capture
    from drivers.camera.onvif_client import CameraError
    from drivers.camera.secrets import scrub

    src = _source(cam)
    try:
        url = src.main_url() if use_main else src.sub_url()
    except CameraError as exc:
        fail(scrub(str(exc), src.password))
    cap = open_capture(url, cam.transport, cam.stale_after_s)
    if cap is None:
        fail(f"camera {name}: stream {scrub(url, src.password)} does not open")
        return
    try:
        ok, frame = cap.read()
    finally:
        cap.release()
    if not ok or frame is None or not cv2.imwrite(str(out), frame):
        fail(f"camera {name}: no frame (or cannot write {out})")
    click.echo(f"wrote {out} ({frame.shape[1]}x{frame.shape[0]})")


@camera.command("clip")
@config_option
@click.argument("name")
@click.option("--start", required=True, help=TIME_HELP)
@click.option("--end", required=True, help=TIME_HELP)
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), required=True, help="MP4 file")
@handle_errors
def clip_cmd(config_path: Path | None, name: str, start: str, end: str, out: Path) -> None:
    """Cut [start, end] from the recorded ring (stream copy, no re-encoding) into one MP4."""
    cfg = resolve_config(config_path)
    cam = _camera(cfg, name)
    from drivers.camera.clips import ClipFailed, ClipUnavailable, cut_clip
    from drivers.camera.ring import Ring
    from drivers.camera.system import recordings_dir

    s, e = parse_when(start), parse_when(end)
    if e <= s:
        fail(f"--end ({end}) must be after --start ({start})")
    if not cam.record:
        fail(f"camera {name} is not recorded (record = false)")
    rc = cfg.recording
    ring = Ring(recordings_dir(cfg) / name, rc.ring_minutes, rc.ring_mb * 2**20, rc.ffprobe)
    try:
        clip = cut_clip(ring, s, e, out, rc.ffmpeg, rc.ffprobe)
    except (ClipUnavailable, ClipFailed) as exc:
        fail(str(exc))
    click.echo(f"wrote {out}: {(clip.end_ms - clip.start_ms) / 1000:.1f} s from {clip.segments} segments")


def register(cli: click.Group) -> None:
    """Add `coopagent camera ...` to the top-level CLI."""
    cli.add_command(camera)

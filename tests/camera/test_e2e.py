"""Cameras end to end: the real agent (buffer, uplink) with a real RTSP camera, Mosquitto and the
reference receiver. A clip reaches the receiver with a verified SHA-256; a rule-triggered clip
names its record; the central clip and snapshot commands are carried out."""

from __future__ import annotations

import hashlib
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest

from tests.camera.conftest import ffprobe
from tests.peers.agent import Branch
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera

pytestmark = pytest.mark.slow


def camera_over(tmp_path: Path, cam: RtspCamera, **extra: Any) -> dict[str, Any]:
    return {
        "cameras": [{"name": "dock", "url": cam.url("main"), "sub_url": cam.url("sub"), "stale_after_s": 4}],
        "recording": {"dir": str(tmp_path / "recordings"), "segment_s": 1, "io_timeout_s": 3},
        **extra,
    }


def finals(ring_dir: Path) -> list[Path]:
    """Closed segments (START-END.ts), not the open part-RUN-N.ts."""
    return sorted(p for p in ring_dir.glob("*.ts") if not p.name.startswith("part-"))


def media_records(branch: Branch) -> list[dict[str, Any]]:
    return [r for r in branch.rx_records() if r["kind"] == "media"]


def complete_file(branch: Branch, media_id: str) -> Path | None:
    with branch.rx_store() as s:
        return s.media_path(branch.device, media_id)


def verified(branch: Branch, manifest: dict[str, Any]) -> Path:
    """The receiver's file, checked here again against the manifest in the signed chain."""
    path = wait_for(lambda: complete_file(branch, manifest["media"]), timeout=30, what="media complete")
    data = path.read_bytes()
    assert len(data) == manifest["size"]
    assert hashlib.sha256(data).digest() == bytes(manifest["sha256"])
    return path


def test_rule_clip_names_its_record_and_arrives_verified(
    tmp_path: Path, branch: Branch, rtsp_camera: RtspCamera
) -> None:
    rules = [
        {
            "name": "dock-waste",
            "kind": "stock_move",
            "match": {"type": ["waste", "adjust"], "to": "dock"},
            "camera": "dock",
            "pre_s": 2,
            "post_s": 2,
        }
    ]
    branch.start_receiver()
    agent = branch.start_agent(**camera_over(tmp_path, rtsp_camera, clip_rules=rules))
    ring_dir = tmp_path / "recordings" / "dock"
    wait_for(lambda: len(finals(ring_dir)) >= 4, timeout=40, what="4 s of recording")
    moves = [
        {
            "kind": "stock_move",
            "data": {
                "type": t,
                "gtin": "09506000134352",
                "qty": 2,
                "from": "store",
                "to": to,
                "doc": f"D-{i}",
            },
        }
        for i, (t, to) in enumerate([("receive", "dock"), ("waste", "dock"), ("waste", "shelf")])
    ]
    r = branch.post(moves)
    assert r.status_code == 201, r.text
    waste_id = r.json()["ids"][1]
    wait_for(lambda: media_records(branch), timeout=40, what="a media record at the receiver")
    (man,) = [m["data"] for m in media_records(branch)]  # only the waste at the dock asked for a clip
    assert man["reason"]["record"] == waste_id and man["reason"]["rule"] == "dock-waste"
    assert man["camera"] == "dock" and man["type"] == "video/mp4"
    path = verified(branch, man)
    info = ffprobe(path)
    assert [(s["codec_name"], s["width"], s["height"]) for s in info["streams"]] == [("h264", 640, 360)]
    assert 4.0 - 0.2 <= float(info["format"]["duration"]) <= 4.0 + 1.2
    assert agent.health().get("camera:dock:record") == "ok"


def test_central_clip_and_snapshot_commands(tmp_path: Path, branch: Branch, rtsp_camera: RtspCamera) -> None:
    rx = branch.start_receiver()
    branch.start_agent(with_api=False, **camera_over(tmp_path, rtsp_camera))
    ring_dir = tmp_path / "recordings" / "dock"
    segs = wait_for(
        lambda: finals(ring_dir)[1:4] if len(finals(ring_dir)) >= 4 else None,
        timeout=40,
        what="4 s of recording",
    )
    start = int(segs[0].name.split("-")[0]) + 300
    end = start + 2500
    clip_cmd = rx.send_command(branch.device, "clip", {"camera": "dock", "start": start, "end": end})
    snap_cmd = rx.send_command(branch.device, "snapshot", {"camera": "dock"})
    bad_cmd = rx.send_command(branch.device, "clip", {"camera": "till-9", "start": start, "end": end})

    def by_reason(cid: str) -> dict[str, Any] | None:
        return next((m["data"] for m in media_records(branch) if m["data"]["reason"].get("command") == cid), None)

    clip = wait_for(lambda: by_reason(clip_cmd), timeout=40, what="the commanded clip")
    snap = wait_for(lambda: by_reason(snap_cmd), timeout=40, what="the commanded snapshot")
    assert clip["start"] <= start + 1 and clip["end"] >= end - 1
    assert float(ffprobe(verified(branch, clip))["format"]["duration"]) >= 2.5 - 0.2
    jpeg = verified(branch, snap).read_bytes()
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (360, 640, 3) and snap["type"] == "image/jpeg"  # full resolution, from the main stream

    def answer(cid: str) -> dict[str, Any] | None:
        return next(
            (
                r["data"]["detail"]
                for r in branch.rx_records()
                if r["kind"] == "device_event" and r["data"].get("detail", {}).get("command") == cid
            ),
            None,
        )

    assert wait_for(lambda: answer(clip_cmd), timeout=20, what="clip answer")["media"] == clip["media"]
    failed = wait_for(lambda: answer(bad_cmd), timeout=20, what="refusal of the unknown camera")
    assert failed["result"] == "failed" and "till-9" in failed["reason"]


def ffmpeg_pids(ring_dir: Path) -> list[int]:
    pids = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = (proc / "cmdline").read_bytes()
            except OSError:
                continue
            if cmd.startswith(b"ffmpeg") and str(ring_dir).encode() in cmd:
                pids.append(int(proc.name))
    return pids


def test_agent_killed_mid_segment(tmp_path: Path, branch: Branch, rtsp_camera: RtspCamera) -> None:
    """SIGKILL of the agent process: its ffmpeg dies with it (no orphan recording on its own),
    the open segment stays readable and is named at the next start, and `coopagent camera clip`
    cuts from it."""
    ring_dir = tmp_path / "recordings" / "dock"
    over = camera_over(tmp_path, rtsp_camera)
    over["recording"]["segment_s"] = 30  # one long open segment
    branch.start_agent_process(**over)
    part = wait_for(
        lambda: [p for p in ring_dir.glob("part-*.ts") if p.stat().st_size > 150_000],
        timeout=40,
        what="a few seconds in the open segment",
    )[0]
    assert len(ffmpeg_pids(ring_dir)) == 1
    branch.kill_agent_process()
    wait_for(lambda: not ffmpeg_pids(ring_dir), timeout=10, what="ffmpeg to die with the agent")
    assert part.exists() and not finals(ring_dir)
    size = part.stat().st_size
    over["recording"]["segment_s"] = 1
    branch.start_agent_process(**over)
    seg = wait_for(lambda: finals(ring_dir), timeout=30, what="the part recovered")[0]
    assert not part.exists() and seg.stat().st_size == size  # renamed, not rewritten
    start, end = (int(x) for x in seg.stem.split("-"))
    out = tmp_path / "after-kill.mp4"
    conf = branch.write_agent_config(**over)
    cli = subprocess.run(
        [
            sys.executable,
            "-m",
            "agent.cli.main",
            "camera",
            "clip",
            "dock",
            "--config",
            str(conf),
            "--start",
            str(start),
            "--end",
            str(end),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert cli.returncode == 0, cli.stderr
    assert float(ffprobe(out)["format"]["duration"]) >= (end - start) / 1000 - 0.3
    branch.kill_agent_process(signal.SIGTERM)
    wait_for(lambda: not ffmpeg_pids(ring_dir), timeout=10, what="ffmpeg stopped with the agent")


def test_motion_clip_and_periodic_snapshot(tmp_path: Path, branch: Branch, rtsp_camera: RtspCamera) -> None:
    """Motion in the configured hours makes a clip; snapshot_interval_s makes periodic JPEGs."""
    over = camera_over(tmp_path, rtsp_camera)
    over["cameras"][0].update(
        snapshot_interval_s=2,
        tamper={"enabled": False},
        motion={"enabled": True, "hours": "00:00-23:59", "clip_s": 2, "cooldown_s": 600, "threshold": 0.01},
    )
    branch.start_receiver()
    branch.start_agent(with_api=False, **over)
    snap = wait_for(
        lambda: next((m["data"] for m in media_records(branch) if "periodic_s" in m["data"]["reason"]), None),
        timeout=40,
        what="a periodic snapshot",
    )
    assert snap["type"] == "image/jpeg"
    verified(branch, snap)
    assert not [m for m in media_records(branch) if m["data"]["reason"].get("motion")]  # a still scene
    rtsp_camera.pattern("ball")  # a moving ball: motion
    clip = wait_for(
        lambda: next((m["data"] for m in media_records(branch) if m["data"]["reason"].get("motion")), None),
        timeout=40,
        what="a motion clip",
    )
    assert clip["type"] == "video/mp4" and clip["end"] - clip["start"] >= 2000  # clip_s after the motion
    verified(branch, clip)

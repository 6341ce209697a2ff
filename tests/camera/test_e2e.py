"""Cameras end to end: the real agent (buffer, uplink) with a real RTSP camera, Mosquitto and the
reference receiver. A clip reaches the receiver with a verified SHA-256; a rule-triggered clip
names its record; the central clip and snapshot commands are carried out."""

from __future__ import annotations

import hashlib
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
    wait_for(lambda: len(list(ring_dir.glob("*-*.ts"))) >= 4, timeout=40, what="4 s of recording")
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
        lambda: sorted(ring_dir.glob("*-*.ts"))[1:4] if len(list(ring_dir.glob("*-*.ts"))) >= 4 else None,
        timeout=40,
        what="4 s of recording",
    )
    start = int(segs[0].name.split("-")[0]) + 300
    end = start + 2500
    clip_cmd = rx.send_command(branch.device, "clip", {"camera": "dock", "start": start, "end": end})
    snap_cmd = rx.send_command(branch.device, "snapshot", {"camera": "dock"})
    bad_cmd = rx.send_command(branch.device, "clip", {"camera": "till-9", "start": start, "end": end})

    def by_reason(cid: str) -> dict[str, Any] | None:
        return next(
            (m["data"] for m in media_records(branch) if m["data"]["reason"].get("command") == cid), None
        )

    clip = wait_for(lambda: by_reason(clip_cmd), timeout=40, what="the commanded clip")
    snap = wait_for(lambda: by_reason(snap_cmd), timeout=40, what="the commanded snapshot")
    assert clip["start"] <= start + 1 and clip["end"] >= end - 1
    assert float(ffprobe(verified(branch, clip))["format"]["duration"]) >= 2.5 - 0.2
    jpeg = verified(branch, snap).read_bytes()
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (180, 320, 3) and snap["type"] == "image/jpeg"

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

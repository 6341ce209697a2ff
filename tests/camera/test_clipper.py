"""Clip requests and rules without a camera: a ring of real H.264 MPEG-TS segments made by ffmpeg,
and a MediaSink test double of our own interface (core.interfaces.MediaSink) that keeps the files."""

from __future__ import annotations

import shutil
import subprocess
import threading
from pathlib import Path
from typing import Any

import pytest

from core.interfaces import StoredRecord
from drivers.camera.clipper import Clipper, ClipRequest
from drivers.camera.clips import cut_clip
from drivers.camera.config import ClipRuleConfig, RecordingConfig
from drivers.camera.ring import Ring
from drivers.camera.rules import RuleListener, matches
from tests.camera.conftest import Running, ffprobe
from tests.peers.net import wait_for

BASE = 1_700_000_000_000


class KeepingMedia:
    """MediaSink test double: takes ownership of the file like the real one (moves it) and records the call."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.calls: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def add_media(self, path: Path, **kw: Any) -> str:
        with self.lock:
            media_id = f"m{len(self.calls)}"
            dest = self.root / f"{media_id}{path.suffix}"
            self.root.mkdir(parents=True, exist_ok=True)
            shutil.move(str(path), dest)
            self.calls.append({"path": dest, **kw})
            return media_id


def fill_ring(ring: Ring, seconds: int) -> None:
    """Real H.264 (1 s GOP) in 1 s MPEG-TS segments, named as the recorder names them, from BASE."""
    work = ring.dir / "gen"
    work.mkdir()
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-f",
            "lavfi",
            "-i",
            "testsrc=size=320x180:rate=10",
            "-t",
            str(seconds),
            "-c:v",
            "libx264",
            "-preset",
            "ultrafast",
            "-g",
            "10",
            "-f",
            "segment",
            "-segment_time",
            "1",
            "-segment_format",
            "mpegts",
            "-reset_timestamps",
            "0",
            str(work / "p%03d.ts"),
        ],
        check=True,
    )
    for i, part in enumerate(sorted(work.glob("p*.ts"))):
        ring.add(part, BASE + i * 1000, BASE + (i + 1) * 1000)
    work.rmdir()


def test_pending_clip_survives_restart_and_is_cut_when_recorded(tmp_path: Path, running: Running) -> None:
    cfg = RecordingConfig(segment_s=1, io_timeout_s=1)
    ring = Ring(tmp_path / "rec" / "dock", 60 * 24 * 365 * 10, 2**30)
    media = KeepingMedia(tmp_path / "media")
    req = ClipRequest("dock", BASE + 1500, BASE + 3500, {"record": "r-1", "rule": "dock-waste"})
    Clipper({"dock": ring}, media, cfg, tmp_path / "work").request(req)  # then the agent "dies"
    restarted = Clipper({"dock": ring}, media, cfg, tmp_path / "work")
    assert [r.id for r in restarted.pending()] == [req.id]
    fill_ring(ring, 6)
    running.start(restarted)
    wait_for(lambda: media.calls, timeout=20, what="the clip handed to the media sink")
    (call,) = media.calls
    assert call["reason"] == {"record": "r-1", "rule": "dock-waste"} and call["media_type"] == "video/mp4"
    # from the keyframe that opens the segment holding the start (1 s GOP = 1 s segments)
    assert (call["start_ms"], call["end_ms"]) == (BASE + 1000, BASE + 3500)
    info = ffprobe(call["path"])
    assert [(s["codec_name"], s["width"]) for s in info["streams"]] == [("h264", 320)]
    assert abs(float(info["format"]["duration"]) - 2.5) <= 0.15
    wait_for(lambda: not restarted.pending(), timeout=5, what="the request to be done")
    assert not Clipper({"dock": ring}, media, cfg, tmp_path / "work").pending()
    assert not list((tmp_path / "work").glob("clip-*.mp4"))  # nothing left behind


def test_clip_of_a_span_never_recorded_fails_with_an_event(tmp_path: Path, running: Running) -> None:
    ring = Ring(tmp_path / "rec" / "dock", 60, 2**30)
    events: list[tuple[str, str, dict[str, Any]]] = []
    clipper = Clipper(
        {"dock": ring},
        KeepingMedia(tmp_path / "m"),
        RecordingConfig(segment_s=1, io_timeout_s=1),
        tmp_path / "work",
        on_event=lambda c, e, d: events.append((c, e, d)),
    )
    clipper.request(ClipRequest("dock", BASE, BASE + 2000, {"record": "r-2"}))  # long past, ring empty
    running.start(clipper)
    wait_for(lambda: events, timeout=10, what="clip_failed")
    assert events[0][1] == "clip_failed" and events[0][2]["reason"] == {"record": "r-2"}
    with pytest.raises(KeyError, match="no recorded camera 'till-9'"):
        clipper.request(ClipRequest("till-9", BASE, BASE + 1, {}))


def rec(kind: str, data: dict[str, Any], src: str = "api:pos-3", rid: str = "r") -> StoredRecord:
    return {"id": rid, "kind": kind, "at": BASE, "src": src, "data": data}


def test_rule_matching() -> None:
    waste = ClipRuleConfig(kind="stock_move", match={"type": ["waste", "adjust"], "to": "dock"}, camera="dock")
    assert matches(waste, rec("stock_move", {"type": "waste", "to": "dock"}))
    assert matches(waste, rec("stock_move", {"type": "adjust", "to": "dock"}))
    assert not matches(waste, rec("stock_move", {"type": "receive", "to": "dock"}))
    assert not matches(waste, rec("stock_move", {"type": "waste", "to": "shelf"}))
    assert not matches(waste, rec("sale", {"type": "waste", "to": "dock"}))
    void = ClipRuleConfig(kind="sale", match={"till": 3, "void": True}, camera="till-3", src="api:pos-3")
    assert matches(void, rec("sale", {"till": "3", "void": True}))
    assert matches(void, rec("sale", {"till": 3, "void": {"by": "sup-1"}}))
    assert not matches(void, rec("sale", {"till": "3", "void": False}))
    assert not matches(void, rec("sale", {"till": "3"}))
    assert not matches(void, rec("sale", {"till": "3", "void": True}, src="api:pos-4"))
    closed = ClipRuleConfig(kind="count_session", match={"state": "closed"}, camera="store", pre_s=5, post_s=1)
    got: list[ClipRequest] = []
    RuleListener([waste, closed], got.append)(
        [
            rec("count_session", {"state": "closed"}, rid="cs-1"),
            rec("stock_move", {"type": "waste", "to": "dock"}, rid="sm-1"),
        ]
    )
    assert [(r.camera, r.start_ms - BASE, r.end_ms - BASE, r.reason["record"]) for r in got] == [
        ("store", -5000, 1000, "cs-1"),
        ("dock", -10_000, 10_000, "sm-1"),
    ]


def test_leftovers_of_a_killed_agent_are_swept_and_the_pending_list_kept(tmp_path: Path) -> None:
    """A SIGKILL mid-cut leaves clip-ID.mp4 half-written (and maybe the concat listing, a
    snapshot on its way to the media sink, the pending list's temporary copy): the next
    start removes them. Found by tests/e2e/test_kills.py; a command's clip is never retried,
    so its file stayed in the data dir for good."""
    cfg = RecordingConfig(segment_s=1, io_timeout_s=1)
    ring = Ring(tmp_path / "rec" / "dock", 60, 2**30)
    work = tmp_path / "work"
    first = Clipper({"dock": ring}, KeepingMedia(tmp_path / "media"), cfg, work)
    req = ClipRequest("dock", BASE, BASE + 2000, {"record": "r-3"})
    first.request(req)
    fill_ring(ring, 3)
    # a cut killed half-way: the first half of a real MP4 cut
    full = cut_clip(ring, BASE, BASE + 2000, work / "whole.mp4")
    data = full.path.read_bytes()
    full.path.unlink()
    leftovers = [f"clip-{req.id}.mp4", "tmpab12.ffconcat", "snap-dock-1-2.jpg", "pending-clips.tmp"]
    (work / leftovers[0]).write_bytes(data[: len(data) // 2])
    for name in leftovers[1:]:
        (work / name).write_bytes(b"x")
    restarted = Clipper({"dock": ring}, KeepingMedia(tmp_path / "media"), cfg, work)
    assert restarted.swept == sorted(leftovers)
    assert sorted(p.name for p in work.iterdir()) == ["pending-clips.json"]
    assert [r.id for r in restarted.pending()] == [req.id]  # the request itself is kept and cut again

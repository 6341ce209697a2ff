"""Recording into the ring and cutting clips, against a real GStreamer RTSP camera and real ffmpeg."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

import pytest

from drivers.camera.clips import ClipUnavailable, cut_clip
from drivers.camera.config import RecordingConfig
from drivers.camera.recorder import Recorder
from drivers.camera.ring import Ring
from tests.camera.conftest import Running, ffprobe, moov_before_mdat
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera

GOP_S = 1.0  # the test camera sends a keyframe every 10 frames at 10 fps


def make_recorder(tmp_path: Path, cam: RtspCamera, **cfg: float) -> Recorder:
    rcfg = RecordingConfig(**{"segment_s": 1, "io_timeout_s": 3, **cfg})
    ring = Ring(tmp_path / "rec" / "dock", rcfg.ring_minutes, rcfg.ring_mb * 1024 * 1024)
    return Recorder("dock", lambda: cam.url("main"), ring, rcfg, backoff_max_s=2)


def span(ring: Ring) -> float:
    segs = ring.segments()
    return (segs[-1].end_ms - segs[0].start_ms) / 1000 if segs else 0.0


@pytest.mark.slow
def test_clip_is_stream_copy_of_the_requested_span(tmp_path: Path, rtsp_camera: RtspCamera, running: Running) -> None:
    rec = make_recorder(tmp_path, rtsp_camera)
    running.start(rec)
    wait_for(lambda: span(rec.ring) >= 7, timeout=30, what="7 s of recording")
    segs = rec.ring.segments()
    # segments follow each other on the wall clock (anchored by the segment list's arrival)
    for a, b in zip(segs, segs[1:], strict=False):
        assert abs(b.start_ms - a.end_ms) < 300, (a, b)
    assert abs(segs[-1].end_ms - time.time() * 1000) < 3000
    start = segs[0].start_ms + 1500
    end = start + 4000
    clip = cut_clip(rec.ring, start, end, tmp_path / "clip.mp4")
    info = ffprobe(clip.path)
    video = [s for s in info["streams"] if s["codec_type"] == "video"]
    assert [(s["codec_name"], s["width"], s["height"]) for s in video] == [("h264", 640, 360)]
    duration = float(info["format"]["duration"])
    # starts at or before the requested start (preceding keyframe), so at least the request,
    # and at most one GOP more (plus a frame of rounding)
    assert 4.0 - 0.15 <= duration <= 4.0 + GOP_S + 0.15, duration
    assert moov_before_mdat(clip.path)
    assert "mp4" in info["format"]["format_name"]


@pytest.mark.slow
def test_frozen_and_restarted_camera_resumes_recording(
    tmp_path: Path, rtsp_camera: RtspCamera, running: Running
) -> None:
    rec = make_recorder(tmp_path, rtsp_camera, io_timeout_s=2)
    running.start(rec)
    wait_for(lambda: rec.segments_written >= 2, timeout=20, what="first segments")
    rtsp_camera.pause()  # frozen: RTSP session open, no packets
    wait_for(lambda: rec.runs >= 2, timeout=15, what="ffmpeg to give up on the frozen stream and restart")
    assert rec.health() in ("ok", "down")
    rtsp_camera.resume()
    n = rec.segments_written
    wait_for(lambda: rec.segments_written >= n + 2, timeout=30, what="recording after the freeze")
    rtsp_camera.stop()  # outage: connection refused
    runs = rec.runs
    wait_for(lambda: rec.runs >= runs + 2, timeout=20, what="failed reconnects")
    wait_for(lambda: rec.health() == "down", timeout=10, what="health down")
    rtsp_camera.start()  # same port
    n = rec.segments_written
    wait_for(lambda: rec.segments_written >= n + 2, timeout=40, what="recording after the restart")
    assert wait_for(rec.health, timeout=5, what="health ok") == "ok"
    names = [s.path.name for s in rec.ring.segments()]
    assert names == sorted(names) and not list(rec.ring.dir.glob("part-*-000000.ts.tmp"))


@pytest.mark.slow
def test_ffmpeg_killed_mid_segment_leaves_a_readable_segment(
    tmp_path: Path, rtsp_camera: RtspCamera, running: Running
) -> None:
    """kill -9 of the recording process (as when the agent dies): the open MPEG-TS part stays
    readable; the next start names it from its probed duration and clips can use it."""
    rec = make_recorder(tmp_path, rtsp_camera, segment_s=30)  # one long open segment
    running.start(rec)
    parts = wait_for(
        lambda: [p for p in rec.ring.dir.glob("part-*.ts") if p.stat().st_size > 200_000],
        timeout=30,
        what="a part file with a few seconds in it",
    )
    proc = rec._proc
    assert proc is not None
    os.kill(proc.pid, signal.SIGKILL)
    wait_for(lambda: rec.ring.segments(), timeout=20, what="the killed part to be recovered")
    seg = rec.ring.segments()[0]
    assert seg.path.name != parts[0].name and seg.end_ms - seg.start_ms >= 1000
    clip = cut_clip(rec.ring, seg.start_ms, seg.end_ms, tmp_path / "after-kill.mp4")
    assert float(ffprobe(clip.path)["format"]["duration"]) >= (seg.end_ms - seg.start_ms) / 1000 - 0.3


def test_ring_prunes_by_minutes_and_bytes(tmp_path: Path) -> None:
    ring = Ring(tmp_path / "ring", max_minutes=1, max_bytes=3000)
    now = 10_000_000_000_000 // 10
    for i in range(6):  # 6 segments of 1000 bytes, 20 s each, the last ending now
        part = ring.dir / f"part-1-{i:06d}.ts"
        part.write_bytes(b"\0" * 1000)
        ring.add(part, now - (6 - i) * 20_000, now - (5 - i) * 20_000)
    assert ring.prune(now) == 3  # bytes: 6000 > 3000 drops three; minutes: the rest end within 60 s
    assert [s.end_ms for s in ring.segments()] == [now - 40_000, now - 20_000, now]
    ring.max_bytes = 10_000
    assert ring.prune(now + 45_000) == 2  # those ending 85 s and 65 s ago are past one minute
    assert [s.end_ms for s in ring.segments()] == [now]
    with pytest.raises(ClipUnavailable):
        cut_clip(ring, now - 600_000, now - 500_000, tmp_path / "none.mp4")

"""`[recording] processes = "shared"`: one ffmpeg for the healthy cameras, against two real RTSP cameras.

The pool exists for memory (one ffmpeg for 8 cameras: 44 MB against 116 MB). Its risk was
measured before it was written: in one ffmpeg, a frozen camera's input ends after the read
timeout and is never reconnected while the process goes on recording the others, and a
camera down at start makes the whole process exit. These tests pin both: the others keep
recording, and the failing camera records again on its own once it is back.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from drivers.camera.config import RecordingConfig
from drivers.camera.pool import PooledRecorder, RecordingPool
from drivers.camera.ring import Ring
from tests.camera.conftest import Running
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera


def pooled(tmp_path: Path, pool: RecordingPool, name: str, cam: RtspCamera, cfg: RecordingConfig) -> PooledRecorder:
    ring = Ring(tmp_path / "rec" / name, cfg.ring_minutes, cfg.ring_mb * 2**20)
    return PooledRecorder(pool, name, lambda: cam.url("main"), ring, cfg, backoff_max_s=2)


def largest_gap_s(rec: PooledRecorder) -> float:
    segs = rec.ring.segments()
    return max((b.start_ms - a.end_ms) / 1000 for a, b in zip(segs, segs[1:], strict=False))


@pytest.fixture
def two_cameras(tmp_path: Path) -> Iterator[list[RtspCamera]]:
    cams = [RtspCamera(tmp_path / f"rtsp-{n}") for n in ("a", "b")]
    yield cams
    for c in cams:
        c.stop()


@pytest.mark.slow
def test_a_frozen_camera_leaves_the_shared_ffmpeg_and_the_other_keeps_recording(
    tmp_path: Path, two_cameras: list[RtspCamera], running: Running
) -> None:
    cam_a, cam_b = (c.start() for c in two_cameras)
    cfg = RecordingConfig(segment_s=1, io_timeout_s=2, processes="shared")
    pool = RecordingPool(cfg)
    a, b = pooled(tmp_path, pool, "a", cam_a, cfg), pooled(tmp_path, pool, "b", cam_b, cfg)
    for comp in (pool, a, b):
        running.start(comp)
    wait_for(lambda: a.segments_written >= 3 and b.segments_written >= 3, timeout=40, what="both recording")
    assert pool._proc is not None and a._proc is None and b._proc is None, "one ffmpeg for both"
    cam_b.pause()  # frozen: connection open, nothing sent
    wait_for(b.evicted.is_set, timeout=30, what="the frozen camera to leave the pool")
    n = a.segments_written
    wait_for(lambda: a.segments_written >= n + 3, timeout=30, what="camera a recording in the pool without b")
    assert pool._proc is not None and a._proc is None
    cam_b.resume()
    m = b.segments_written
    wait_for(lambda: b.segments_written >= m + 2, timeout=60, what="camera b recording in its own ffmpeg")
    assert b._proc is not None
    # a lost at most the pool's restart, not the whole freeze
    assert largest_gap_s(a) < 4.0, [s.path.name for s in a.ring.segments()]


@pytest.mark.slow
def test_a_camera_down_at_start_does_not_stop_the_others(
    tmp_path: Path, two_cameras: list[RtspCamera], running: Running
) -> None:
    cam_a = two_cameras[0].start()
    cam_b = two_cameras[1]  # not started: connection refused
    cfg = RecordingConfig(segment_s=1, io_timeout_s=2, processes="shared")
    pool = RecordingPool(cfg)
    a, b = pooled(tmp_path, pool, "a", cam_a, cfg), pooled(tmp_path, pool, "b", cam_b, cfg)
    for comp in (pool, a, b):
        running.start(comp)
    wait_for(lambda: a.segments_written >= 3, timeout=40, what="camera a recording")
    assert b.evicted.is_set() and not a.evicted.is_set()
    assert pool._proc is not None and a._proc is None
    cam_b.start()
    wait_for(lambda: b.segments_written >= 2, timeout=60, what="camera b recording once it is up")
    assert not a.evicted.is_set()

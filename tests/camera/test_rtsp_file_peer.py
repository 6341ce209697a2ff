"""The benchmarks' looping file camera (tests/peers/rtsp_file.py) behaves like a camera for the recorder.

bench_budget and bench_camera_memory count the agent's CPU against a floor; both rest on this
peer sending a stamped H.264 stream at the camera's pace, on and on past the end of its file.
A raw H.264 file has no presentation times, and without them ffmpeg's muxer refuses the
packets ("first pts and dts value must be set"): the peer copies the decoding time over.
"""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

import pytest

from bench.bench_budget import FileCameras, encode_clip
from drivers.camera.config import RecordingConfig
from drivers.camera.recorder import Recorder
from drivers.camera.ring import Ring
from tests.camera.conftest import Running
from tests.peers.net import wait_for


@pytest.mark.slow
def test_looped_file_is_recorded_at_the_camera_pace_past_the_end_of_the_file(
    tmp_path: Path, running: Running
) -> None:
    fps = 10
    clip = encode_clip(tmp_path / "clip.h264", 320, 180, fps, 200, seconds=2)
    cams = FileCameras(clip, clip, fps, tmp_path / "rtsp.log")
    try:
        cfg = RecordingConfig(segment_s=1, io_timeout_s=3)
        ring = Ring(tmp_path / "rec", cfg.ring_minutes, cfg.ring_mb * 2**20)
        rec = Recorder("file", lambda: cams.url("main"), ring, cfg)
        t0 = time.monotonic()
        running.start(rec)
        # 5 s of stream from a 2 s file: it must have looped twice
        wait_for(lambda: len(ring.segments()) >= 5, timeout=30, what="5 one-second segments")
        took = time.monotonic() - t0
        segs = ring.segments()
        assert took >= 4.0, f"5 s of stream came in {took:.1f} s: the peer does not pace the frames"
        for a, b in zip(segs, segs[1:], strict=False):
            assert abs(b.start_ms - a.end_ms) < 300, (a, b)
        info = json.loads(subprocess.run(
            ["ffprobe", "-v", "error", "-count_packets", "-show_entries", "stream=nb_read_packets,width",
             "-of", "json", str(segs[2].path)],
            capture_output=True, text=True, check=True,
        ).stdout)["streams"][0]
        assert info["width"] == 320
        seconds = (segs[2].end_ms - segs[2].start_ms) / 1000
        assert abs(int(info["nb_read_packets"]) - fps * seconds) <= 2, (info, seconds)
    finally:
        cams.stop()

"""Camera test fixtures: a real GStreamer RTSP camera, a recorder thread, ffprobe helpers."""

from __future__ import annotations

import json
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.interfaces import Component
from tests.peers.rtsp_server import RtspCamera


@pytest.fixture
def rtsp_camera(tmp_path: Path) -> Iterator[RtspCamera]:
    """640x360 main, 320x180 sub, 10 fps, a keyframe every second: cheap on a shared 2-core box."""
    cam = RtspCamera(tmp_path / "rtsp").start()
    try:
        yield cam
    finally:
        cam.stop()


class Running:
    """Runs components in threads and stops them (joined) at the end of the test."""

    def __init__(self) -> None:
        self.stop = threading.Event()
        self.threads: list[threading.Thread] = []
        self.errors: list[BaseException] = []

    def start(self, comp: Component) -> Component:
        def target() -> None:
            try:
                comp.run(self.stop)
            except BaseException as exc:  # reported by the fixture
                self.errors.append(exc)

        t = threading.Thread(target=target, name=comp.name, daemon=True)
        t.start()
        self.threads.append(t)
        return comp

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(timeout=20)
            assert not t.is_alive(), f"component thread {t.name} did not stop"


@pytest.fixture
def running() -> Iterator[Running]:
    r = Running()
    try:
        yield r
    finally:
        r.close()
    assert not r.errors, r.errors


def ffprobe(path: Path) -> dict[str, Any]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration,format_name:stream=codec_name,width,height,codec_type",
            "-of",
            "json",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout))


def moov_before_mdat(path: Path) -> bool:
    """faststart: the MP4 index (moov) comes before the media data (mdat)."""
    data = path.read_bytes()
    return 0 <= data.find(b"moov") < data.find(b"mdat")

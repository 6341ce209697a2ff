"""Frames from the sub stream of a real RTSP camera: liveness under freeze and outage, tamper, snapshots."""

from __future__ import annotations

import threading
import time
from typing import Any

import cv2
import numpy as np
import pytest

from drivers.camera.config import CameraConfig, TamperConfig
from drivers.camera.grabber import FrameGrabber
from tests.camera.conftest import Running
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera


class Events:
    """Collects (event, detail, monotonic time) from the grabber; a test double for ctx.device_event."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, Any], float]] = []
        self.lock = threading.Lock()

    def __call__(self, event: str, detail: dict[str, Any]) -> None:
        with self.lock:
            self.items.append((event, detail, time.monotonic()))

    def names(self) -> list[str]:
        with self.lock:
            return [e for e, _, _ in self.items]

    def last(self, name: str) -> tuple[dict[str, Any], float] | None:
        with self.lock:
            for e, d, t in reversed(self.items):
                if e == name:
                    return d, t
        return None


def grabber(cam: RtspCamera, events: Events, **over: Any) -> FrameGrabber:
    cfg = CameraConfig.model_validate(
        {
            "name": "dock",
            "url": cam.url("main"),
            "sub_url": cam.url("sub"),
            "grab_fps": 5,
            "stale_after_s": 4,
            "reconnect_max_s": 2,
            "tamper": {"hold_s": 1, "learn_s": 1},
            **over,
        }
    )
    return FrameGrabber(cfg, lambda: cam.url("sub"), events)


@pytest.mark.slow
def test_frozen_stream_is_offline_within_ten_seconds_and_comes_back(rtsp_camera: RtspCamera, running: Running) -> None:
    events = Events()
    g = grabber(rtsp_camera, events)
    running.start(g)
    wait_for(lambda: events.names() == ["online"], timeout=20, what="online")
    assert g.health() == "ok"
    rtsp_camera.pause()  # connection stays open, nothing arrives
    frozen_at = time.monotonic()
    wait_for(lambda: events.last("offline"), timeout=12, what="offline after the freeze")
    detected = events.last("offline")
    assert detected is not None and detected[1] - frozen_at <= 10.0
    assert g.health() == "down"
    rtsp_camera.resume()
    wait_for(lambda: events.names()[-1:] == ["online"], timeout=20, what="online after the freeze")
    rtsp_camera.stop()
    wait_for(lambda: events.names()[-1:] == ["offline"], timeout=12, what="offline in the outage")
    rtsp_camera.start()
    wait_for(lambda: events.names()[-1:] == ["online"], timeout=30, what="online after the restart")
    assert events.names() == ["online", "offline", "online", "offline", "online"]


@pytest.mark.slow
def test_tamper_covered_blurred_moved(rtsp_camera: RtspCamera, running: Running) -> None:
    events = Events()
    g = grabber(rtsp_camera, events)
    running.start(g)
    wait_for(lambda: g.tamper.ref_thumb is not None, timeout=20, what="reference picture learnt")
    # black with the clock overlay still showing: dark rather than uniformly covered
    for action, condition in (
        (lambda: rtsp_camera.pattern("black"), ("covered", "dark")),
        (lambda: rtsp_camera.blur(6), ("blurred",)),
        (lambda: rtsp_camera.pattern("checkers-8"), ("moved",)),
    ):
        action()
        wait_for(
            lambda c=condition: (events.last("tamper") or ({}, 0))[0].get("condition") in c,
            timeout=15,
            what=f"tamper {condition}",
        )
        assert g.health() == "degraded"
        rtsp_camera.pattern("smpte")
        rtsp_camera.blur(0)
        n = events.names().count("tamper_end")
        wait_for(lambda n=n: events.names().count("tamper_end") > n, timeout=15, what=f"{condition} cleared")
    jpeg, at_ms = g.snapshot_jpeg()
    img = cv2.imdecode(np.frombuffer(jpeg, np.uint8), cv2.IMREAD_COLOR)
    assert img.shape == (180, 320, 3)
    assert abs(at_ms - time.time() * 1000) < 2000


def test_tamper_rules_on_synthetic_frames() -> None:
    """The judge without a camera: seeded noise texture as the scene."""
    from drivers.camera.tamper import TamperJudge

    rng = np.random.default_rng(7)
    blocks = rng.integers(0, 255, (22, 40), dtype=np.uint8)
    scene = cv2.resize(blocks, (320, 180), interpolation=cv2.INTER_NEAREST)
    judge = TamperJudge(TamperConfig(hold_s=1, learn_s=1))
    t = 0.0
    for _ in range(3):
        assert judge.feed(scene, t) is None
        t += 0.5
    assert judge.ref_thumb is not None
    assert judge.classify(scene).condition is None
    assert judge.classify(np.full_like(scene, 128)).condition == "covered"
    assert judge.classify((scene // 6).astype(np.uint8)).condition == "dark"
    assert judge.classify(cv2.GaussianBlur(scene, (0, 0), 4)).condition == "blurred"
    assert judge.classify(np.ascontiguousarray(scene[::-1, ::-1])).condition == "moved"
    # a condition is reported once, after hold_s, and its end likewise
    covered = np.full_like(scene, 128)
    assert judge.feed(covered, t) is None
    got = judge.feed(covered, t + 1.1)
    assert got is not None and got[0] == "tamper" and got[1].condition == "covered"
    assert judge.feed(covered, t + 2) is None
    assert judge.feed(scene, t + 3) is None
    end = judge.feed(scene, t + 4.2)
    assert end is not None and end[0] == "tamper_end"


def test_motion_and_hours() -> None:
    from drivers.camera.config import MotionConfig
    from drivers.camera.tamper import MotionDetector, in_hours

    assert in_hours("20:00-07:00", 21 * 60) and in_hours("20:00-07:00", 6 * 60 + 59)
    assert not in_hours("20:00-07:00", 7 * 60) and not in_hours("20:00-07:00", 12 * 60)
    assert in_hours("09:00-17:00", 9 * 60) and not in_hours("09:00-17:00", 17 * 60)
    rng = np.random.default_rng(11)
    scene = cv2.resize(rng.integers(0, 255, (18, 32), dtype=np.uint8), (320, 180), interpolation=cv2.INTER_NEAREST)
    det = MotionDetector(MotionConfig(threshold=0.02))
    assert not det.moving(scene) and not det.moving(scene)  # first frame, then the same
    moved = scene.copy()
    moved[40:120, 100:200] = 255 - moved[40:120, 100:200]  # something crosses a sixth of the view
    assert det.moving(moved)
    assert not det.moving(moved)

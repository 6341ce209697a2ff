"""The camera family's doctor checks against the real GStreamer RTSP camera and the ipycam ONVIF
device: a camera that streams, one switched off (never started), one whose clock is minutes off,
and the running agent's recording ring."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest

from tests.doctor.conftest import Pc
from tests.peers.agent import Branch
from tests.peers.net import free_port, wait_for
from tests.peers.onvif_camera import OnvifCamera
from tests.peers.rtsp_server import RtspCamera


@pytest.mark.slow
def test_streaming_camera_is_probed(tmp_path: Path, rtsp_camera: RtspCamera) -> None:
    pc = Pc(tmp_path / "pc")
    _, checks = pc.doctor(cameras=[{"name": "dock", "url": rtsp_camera.url("main")}])
    stream = checks["camera.dock.stream"]
    assert stream["result"] == "ok" and "h264 640x360 @ 10/1" in stream["message"], stream
    assert checks["camera.dock.onvif"]["result"] == "skipped"
    assert checks["camera.dock.recording"]["result"] == "skipped"
    assert "not running" in checks["camera.dock.recording"]["message"]


def test_camera_off(tmp_path: Path) -> None:
    """Nothing serves RTSP on the camera's port: the stream fails with a fix, exit 2."""
    pc = Pc(tmp_path / "pc")
    cams: list[dict[str, Any]] = [{"name": "dock", "url": f"rtsp://127.0.0.1:{free_port()}/main",
                                   "stale_after_s": 2}]
    code, checks = pc.doctor(cameras=cams)
    assert code == 2
    stream = checks["camera.dock.stream"]
    assert stream["result"] == "error" and "is the camera on" in stream["fix"], stream


def test_onvif_camera_off(tmp_path: Path) -> None:
    pc = Pc(tmp_path / "pc")
    (pc.root / "cam.pw").write_text("s3cret-Pa55\n")
    cams = [{"name": "front", "username": "admin", "password_file": str(pc.root / "cam.pw"),
             "onvif": {"host": "127.0.0.1", "port": free_port()}}]
    code, checks = pc.doctor(cameras=cams)
    assert code == 2
    onvif = checks["camera.front.onvif"]
    assert onvif["result"] == "error" and "is the camera on" in onvif["fix"], onvif
    assert checks["camera.front.stream"]["result"] == "skipped"


@pytest.mark.slow
def test_onvif_camera_clock_minutes_off(tmp_path: Path, rtsp_camera: RtspCamera) -> None:
    """ipycam answers GetSystemDateAndTime 5 minutes ahead of this PC."""
    pc = Pc(tmp_path / "pc")
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=rtsp_camera.port, clock_offset_s=300).start()
    try:
        (pc.root / "cam.pw").write_text(cam.password + "\n")
        cams = [{"name": "front", "username": cam.user, "password_file": str(pc.root / "cam.pw"),
                 "onvif": {"host": "127.0.0.1", "port": cam.port}}]
        code, checks = pc.doctor(cameras=cams)
    finally:
        cam.stop()
    assert checks["camera.front.onvif"]["result"] == "ok"
    clock = checks["camera.front.clock"]
    # ONVIF gives whole seconds: 299 or 300
    assert clock["result"] == "warning" and re.search(r"\+(299|300|301) s", clock["message"]), clock
    assert "NTP" in clock["fix"]
    assert checks["camera.front.stream"]["result"] == "ok"
    assert cam.password not in str(checks)


@pytest.mark.slow
def test_running_agent_recording_ring(tmp_path: Path, branch: Branch, rtsp_camera: RtspCamera) -> None:
    """The running agent records; the doctor reads the recorder's health from GET /v1/status.
    Then the camera goes off and the ring stops growing: the check fails."""
    cams = [{"name": "dock", "url": rtsp_camera.url("main"), "stale_after_s": 2}]
    branch.overrides = {"cameras": cams, "recording": {"segment_s": 1, "io_timeout_s": 2}}
    branch.start_agent()
    pc = Pc(tmp_path / "pc")

    def recorder() -> str:
        return str(branch.agent.health().get("camera:dock:record"))

    wait_for(lambda: recorder() == "ok", timeout=30, what="the first segment")
    _, checks = pc.doctor(config=branch.write_agent_config())
    assert checks["camera.dock.recording"]["result"] == "ok", checks["camera.dock.recording"]
    rtsp_camera.stop()
    wait_for(lambda: recorder() != "ok", timeout=30, what="the recorder to notice")
    _, checks = pc.doctor(config=branch.write_agent_config())
    rec = checks["camera.dock.recording"]
    assert rec["result"] == "error" and "not being written" in rec["message"], rec

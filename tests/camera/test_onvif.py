"""ONVIF against a real virtual camera (PyPI ipycam): queries, wrong password, clock drift,
WS-Discovery and following a camera by serial inside a private network namespace."""

from __future__ import annotations

import json
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from drivers.camera.config import CameraConfig
from drivers.camera.onvif_client import CameraAuthError, CameraUnreachable, query
from drivers.camera.source import CameraSource
from tests.peers.agent import toml_dumps
from tests.peers.net import free_port
from tests.peers.onvif_camera import NETNS_ADDR, ROOT, OnvifCamera, agent_cli, netns_script


@pytest.fixture
def onvif_cam(tmp_path: Path) -> Iterator[OnvifCamera]:
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=free_port(), clock_offset_s=0).start()
    try:
        yield cam
    finally:
        cam.stop()


def cam_cfg(tmp_path: Path, cam: OnvifCamera, password: str, **onvif: Any) -> CameraConfig:
    pw = tmp_path / "cam.pw"
    pw.write_text(password + "\n")
    return CameraConfig.model_validate(
        {
            "name": "dock",
            "username": cam.user,
            "password_file": str(pw),
            "onvif": {"host": "127.0.0.1", "port": cam.port, **onvif},
        }
    )


def test_queries_identity_profiles_uris_and_clock(onvif_cam: OnvifCamera) -> None:
    info = query("127.0.0.1", onvif_cam.port, onvif_cam.user, onvif_cam.password)
    assert (info.manufacturer, info.model, info.serial) == ("PythonCam", "VirtualCam-1", "PY-000001")
    assert [p.token for p in info.profiles] == ["Profile_Main", "Profile_Sub"]
    assert info.main_uri == f"rtsp://127.0.0.1:{onvif_cam.rtsp_port}/main"
    assert info.sub_uri == f"rtsp://127.0.0.1:{onvif_cam.rtsp_port}/sub"
    assert info.snapshot_uri and info.snapshot_uri.endswith("/snapshot.jpg")
    assert info.clock_drift_s is not None and abs(info.clock_drift_s) < 2.5


def test_wrong_password_is_a_clear_permanent_error(tmp_path: Path, onvif_cam: OnvifCamera) -> None:
    events: list[tuple[str, dict[str, Any]]] = []
    src = CameraSource(cam_cfg(tmp_path, onvif_cam, "wrong-Passw0rd"), lambda e, d: events.append((e, d)))
    with pytest.raises(CameraAuthError) as err:
        src.main_url()
    msg = str(err.value)
    assert "authentication failed" in msg and "wrong username or password" in msg
    assert "wrong-Passw0rd" not in msg and not err.value.retryable
    with pytest.raises(CameraAuthError):  # not asked again: one event, not one per reconnect
        src.sub_url()
    assert [e for e, _ in events] == ["error"] and events[0][1]["reason"] == "onvif_auth"


def test_unreachable_is_retryable(tmp_path: Path) -> None:
    with pytest.raises(CameraUnreachable) as err:
        query("127.0.0.1", free_port(), "admin", "x", timeout_s=2)
    assert err.value.retryable


def test_source_gives_credentialed_stream_urls_and_reports_clock_drift(tmp_path: Path) -> None:
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=free_port(), clock_offset_s=120).start()
    try:
        events: list[tuple[str, dict[str, Any]]] = []
        src = CameraSource(cam_cfg(tmp_path, cam, cam.password, serial=cam.serial), lambda e, d: events.append((e, d)))
        url = src.main_url()
        assert url == f"rtsp://admin:s3cret-Pa55@127.0.0.1:{cam.rtsp_port}/main"
        assert [e for e, _ in events] == ["clock_drift"]
        assert 117 <= events[0][1]["drift_s"] <= 123
        src.refresh()  # still drifting: no second event
        assert len(events) == 1
    finally:
        cam.stop()


@pytest.mark.slow
def test_discover_cli_in_private_netns(tmp_path: Path) -> None:
    """`coopagent camera discover` finds ipycam by WS-Discovery multicast, on a loopback of its own."""
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=free_port(), serial="SN-DOCK-7")
    pw = tmp_path / "pw"
    pw.write_text(cam.password)
    cmd = netns_script(
        cam,
        agent_cli("camera", "discover", "--timeout", "3", "--json", "--user", cam.user, "--password-file", str(pw)),
    )
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert out.returncode == 0, out.stderr[-2000:]
    rows = json.loads(out.stdout)["cameras"]
    assert [(r["maker"], r["model"], r["serial"], r["address"]) for r in rows] == [
        ("PythonCam", "VirtualCam-1", "SN-DOCK-7", f"{NETNS_ADDR}:{cam.port}")
    ]
    assert cam.password not in out.stdout + out.stderr


@pytest.mark.slow
def test_camera_followed_by_serial_after_address_change(tmp_path: Path) -> None:
    """The config still names the camera's old address; WS-Discovery finds it by serial."""
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=free_port(), serial="SN-DOCK-7")
    pw = tmp_path / "pw"
    pw.write_text(cam.password)
    old_port = free_port()
    snippet = (
        "import json\n"
        "import agent.config  # noqa: F401 - the core config first (it imports the camera config)\n"
        "from drivers.camera.config import CameraConfig\n"
        "from drivers.camera.source import CameraSource\n"
        f"cfg = CameraConfig.model_validate({{'name': 'dock', 'username': 'admin',"
        f" 'password_file': {str(pw)!r}, 'onvif': {{'host': '127.0.0.1', 'port': {old_port},"
        " 'serial': 'SN-DOCK-7', 'timeout_s': 2}})\n"
        "events = []\n"
        "src = CameraSource(cfg, lambda e, d: events.append([e, d]))\n"
        "print(json.dumps({'url': src.main_url(), 'events': events, 'port': src.port}))\n"
    )
    t0 = time.monotonic()
    out = subprocess.run(
        netns_script(cam, ["python", "-c", snippet]),
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
        env={"PATH": f"{Path(agent_cli()[0]).parent}:/usr/bin:/bin"},
    )
    assert out.returncode == 0, out.stderr[-2000:]
    got = json.loads(out.stdout.strip().splitlines()[-1])
    assert got["port"] == cam.port and time.monotonic() - t0 < 60
    assert got["url"].endswith(f"{NETNS_ADDR}:{cam.rtsp_port}/main")
    ((event, detail),) = got["events"]
    assert event == "address_changed" and detail["to"] == f"{NETNS_ADDR}:{cam.port}"
    assert detail["from"] == f"127.0.0.1:{old_port}"


def test_error_classification() -> None:
    """Regression: a free port like 40123 made 'connect ... 127.0.0.1:40123' look like an HTTP 401."""
    from drivers.camera.onvif_client import classify

    refused = OSError("Cannot connect to host 127.0.0.1:40123 ssl:default [Connect call failed]")
    assert type(classify(refused, "x")) is CameraUnreachable
    assert type(classify(Exception("Server returned 401 Unauthorized"), "x")) is CameraAuthError
    assert type(classify(Exception("HTTP status 401"), "x")) is CameraAuthError
    wrapped = RuntimeError("ONVIF request failed")
    wrapped.__cause__ = TimeoutError()
    assert type(classify(wrapped, "x")) is CameraUnreachable
    msg = str(classify(Exception("Sender not authorized for rtsp://admin:pw123@h/x"), "ONVIF h:80", "pw123"))
    assert "pw123" not in msg and "authentication failed" in msg


@pytest.mark.slow
def test_camera_test_cli_with_onvif(tmp_path: Path, rtsp_camera: Any) -> None:
    """`coopagent camera test` asks ipycam for the streams, probes both on the GStreamer camera;
    with a wrong password it stops with one clear line and exit code 2."""
    cam = OnvifCamera(tmp_path / "onvif", rtsp_port=rtsp_camera.port, serial="SN-TILL-3").start()
    try:
        for label, password, code in (("good", cam.password, 0), ("bad", "nope-" + cam.password, 2)):
            pw = tmp_path / f"{label}.pw"
            pw.write_text(password)
            conf = tmp_path / f"{label}.toml"
            conf.write_text(
                toml_dumps(
                    {
                        "agent": {"device": "coop-a/branch-1/agent-1", "data_dir": str(tmp_path / "data")},
                        "cameras": [
                            {
                                "name": "till-3",
                                "username": cam.user,
                                "password_file": str(pw),
                                "onvif": {"host": "127.0.0.1", "port": cam.port, "serial": "SN-TILL-3"},
                            }
                        ],
                    }
                )
            )
            out = subprocess.run(
                agent_cli("camera", "test", "till-3", "--config", str(conf)),
                capture_output=True,
                text=True,
                timeout=90,
                cwd=ROOT,
            )
            assert out.returncode == code, out.stdout + out.stderr
            assert password not in out.stdout + out.stderr
            if code == 0:
                assert "PythonCam VirtualCam-1 serial SN-TILL-3" in out.stdout
                assert "h264 640x360" in out.stdout and "h264 320x180" in out.stdout and "frame    ok" in out.stdout
            else:
                assert "authentication failed" in out.stderr and "not retried" in out.stderr
                assert len(out.stderr.strip().splitlines()) == 1
    finally:
        cam.stop()

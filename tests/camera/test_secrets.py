"""Camera credentials never reach logs, relayed ffmpeg output, exceptions or CLI output.

Frigate's lesson: ffmpeg repeats the input URL (user:password@ included) in its errors.
Here a real RTSP camera demands basic auth; the agent's parts run at DEBUG with the right
and with a wrong password, and every captured line is searched for the secret.
"""

from __future__ import annotations

import logging
import subprocess
import sys
from pathlib import Path
from urllib.parse import quote

import pytest

from drivers.camera.config import CameraConfig, RecordingConfig
from drivers.camera.grabber import FrameGrabber
from drivers.camera.recorder import Recorder
from drivers.camera.ring import Ring
from drivers.camera.secrets import scrub, with_credentials
from drivers.camera.source import CameraSource
from tests.camera.conftest import Running
from tests.peers.agent import toml_dumps
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera

SECRET = "Pa55:w0rd@x/y"  # ':' '@' '/' must survive URL encoding and still be scrubbed


def test_scrub_removes_userinfo_and_known_secrets() -> None:
    url = with_credentials("rtsp://10.0.0.5:554/live?ch=1", "admin", SECRET)
    assert url == f"rtsp://admin:{quote(SECRET, safe='')}@10.0.0.5:554/live?ch=1"
    line = f"[rtsp @ 0x1] method DESCRIBE failed: 401 Unauthorized {url} http://u:p@h/x"
    clean = scrub(line, SECRET)
    assert SECRET not in clean and quote(SECRET, safe="") not in clean and "u:p@" not in clean
    assert "rtsp://***:***@10.0.0.5:554/live?ch=1" in clean
    assert scrub(f"password was {SECRET}", SECRET) == "password was ***"
    assert scrub("rtsp://10.0.0.5/live") == "rtsp://10.0.0.5/live"


def secret_free(text: str) -> bool:
    return SECRET not in text and quote(SECRET, safe="") not in text


@pytest.mark.slow
def test_credentials_never_in_logs_or_cli(tmp_path: Path, running: Running, caplog: pytest.LogCaptureFixture) -> None:
    cam = RtspCamera(tmp_path / "rtsp", user="cam", password=SECRET).start()
    try:
        good, bad = tmp_path / "good.pw", tmp_path / "bad.pw"
        good.write_text(SECRET + "\n")
        bad.write_text("not-" + SECRET + "\n")
        caplog.set_level(logging.DEBUG)
        events: list[tuple[str, dict[str, object]]] = []
        parts = {}
        for label, pw in (("ok", good), ("bad", bad)):
            cfg = CameraConfig.model_validate(
                {
                    "name": f"dock-{label}",
                    "url": cam.url("main"),
                    "sub_url": cam.url("sub"),
                    "username": "cam",
                    "password_file": str(pw),
                    "stale_after_s": 3,
                }
            )
            src = CameraSource(cfg, lambda e, d: events.append((e, d)))
            ring = Ring(tmp_path / "rec" / label, 10, 2**30)
            rec = Recorder(
                cfg.name,
                src.main_url,
                ring,
                RecordingConfig(segment_s=1, io_timeout_s=3),
                secrets=src.secrets,
                backoff_max_s=1,
            )
            parts[label] = (
                rec,
                running.start(FrameGrabber(cfg, src.sub_url, lambda e, d: events.append((e, d)), src.secrets)),
            )
            running.start(rec)
        ok_rec, ok_grab = parts["ok"]
        bad_rec, bad_grab = parts["bad"]
        wait_for(lambda: ok_rec.segments_written >= 2, timeout=30, what="recording with the right password")
        wait_for(lambda: bad_rec.runs >= 2, timeout=30, what="ffmpeg failing on the wrong password twice")
        wait_for(lambda: bad_grab.online is False, timeout=30, what="the wrong-password camera offline")
        assert any(
            "401" in r.getMessage() or "Unauthorized" in r.getMessage() or "ffmpeg ended" in r.getMessage()
            for r in caplog.records
        )  # ffmpeg's error was relayed...
        assert "rtsp://***:***@127.0.0.1" in caplog.text  # ...and the URLs in it scrubbed
        logged = caplog.text + "\n".join(str(r.args) for r in caplog.records) + repr(events)
        assert secret_free(logged)

        # the CLI: `camera test` against the wrong password prints scrubbed ffprobe errors
        conf = tmp_path / "agent.toml"
        conf.write_text(
            toml_dumps(
                {
                    "agent": {"device": "coop-a/branch-1/agent-1", "data_dir": str(tmp_path / "data")},
                    "cameras": [
                        {
                            "name": "dock",
                            "url": cam.url("main"),
                            "sub_url": cam.url("sub"),
                            "username": "cam",
                            "password_file": str(bad),
                            "stale_after_s": 3,
                        }
                    ],
                }
            )
        )
        out = subprocess.run(
            [sys.executable, "-m", "agent.cli.main", "camera", "test", "dock", "--config", str(conf)],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode != 0 and "FAILED" in out.stdout
        assert "rtsp://***:***@127.0.0.1" in out.stdout
        assert secret_free(out.stdout + out.stderr)
        conf.write_text(conf.read_text().replace(str(bad), str(good)))
        snap = tmp_path / "snap.jpg"
        out = subprocess.run(
            [
                sys.executable,
                "-m",
                "agent.cli.main",
                "camera",
                "snapshot",
                "dock",
                "--config",
                str(conf),
                "--out",
                str(snap),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert out.returncode == 0, out.stderr
        assert snap.read_bytes()[:2] == b"\xff\xd8" and secret_free(out.stdout + out.stderr)
    finally:
        cam.stop()

"""Camera config errors name the key, the bad value (never a password) and what is allowed."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from agent.config import ConfigError
from agent.config.loader import parse_config
from drivers.camera.system import check_rules


def errors(**data: Any) -> str:
    with pytest.raises(ConfigError) as err:
        parse_config(data)
    return str(err.value)


def test_camera_errors_say_what_to_fix() -> None:
    msg = errors(cameras=[{"name": "Dock", "url": "rtsp://admin:hunter22@10.0.0.5/live"}])
    assert "cameras[0].name = 'Dock'" in msg and "[a-z0-9]" in msg
    assert "cameras[0].url" in msg and "use username and password_file" in msg
    assert "hunter22" not in msg and "admin:" not in msg  # the echoed value is scrubbed
    msg = errors(cameras=[{"name": "dock"}])
    assert "give exactly one of url (plain RTSP) or [onvif]" in msg
    msg = errors(cameras=[{"name": "dock", "url": "rtsp://h/x", "onvif": {"host": "h"}}])
    assert "give exactly one of url" in msg
    assert "password_file needs username" in errors(cameras=[{"name": "d", "url": "rtsp://h/x", "password_file": "p"}])
    assert "must be rtsp://" in errors(cameras=[{"name": "d", "url": "http://h/x"}])
    msg = errors(cameras=[{"name": "d", "url": "rtsp://h/x", "motion": {"hours": "8-17"}}])
    assert "cameras[0].motion.hours = '8-17'" in msg and "HH:MM-HH:MM" in msg
    msg = errors(cameras=[{"name": "d", "url": "rtsp://h/x", "stale_after_s": 0}])
    assert "cameras[0].stale_after_s = 0" in msg
    msg = errors(cameras=[{"name": "d", "url": "rtsp://h/x", "fps": 5}])
    assert "cameras[0].fps: unknown key" in msg and "grab_fps" in msg
    msg = errors(recording={"segment_s": 0.5})
    assert "recording.segment_s = 0.5" in msg
    msg = errors(clip_rules=[{"kind": "sale", "camera": "d", "match": {"till": {"eq": 3}}}])
    assert "match.till" in msg and "not a table" in msg
    msg = errors(clip_rules=[{"kind": "refund", "camera": "d"}])
    assert "clip_rules[0].kind = 'refund'" in msg


def test_rules_must_name_a_recorded_camera() -> None:
    """Refused when the config is read (`coopagent config check`), not when a waste is booked."""
    data = {
        "cameras": [
            {"name": "dock", "url": "rtsp://h/x"},
            {"name": "till-3", "url": "rtsp://h/y", "record": False},
        ],
        "clip_rules": [{"kind": "sale", "camera": "dock"}, {"kind": "sale", "camera": "till-3"}],
    }
    with pytest.raises(
        ConfigError, match=r"clip_rules\[1\].camera = 'till-3': no recorded camera.*recorded cameras: dock"
    ):
        parse_config(data)
    cfg = parse_config({**data, "clip_rules": data["clip_rules"][:1]})
    check_rules(SimpleNamespace(cameras=cfg.cameras, clip_rules=cfg.clip_rules))

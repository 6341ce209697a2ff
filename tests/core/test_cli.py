"""The technician's CLI: keys, config check, run refusing bad keys, status with and without the agent."""

from __future__ import annotations

import hashlib
import json
import stat
from pathlib import Path

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives import serialization

from agent.cli.main import cli
from tests.peers.agent import Branch, toml_dumps


def write_cfg(tmp_path: Path, **sections: object) -> Path:
    data = {"agent": {"device": "coop-a/branch-1/agent-1", "data_dir": str(tmp_path / "data")}}
    data.update(sections)  # type: ignore[arg-type]
    p = tmp_path / "agent.toml"
    p.write_text(toml_dumps(data))
    return p


def run(*args: str) -> tuple[int, str, str]:
    r = CliRunner().invoke(cli, list(args))
    return r.exit_code, r.stdout, r.stderr


def test_keys_init_is_0600_refuses_overwrite_and_show_prints_kid(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path)
    code, out, _ = run("keys", "init", "--config", str(cfg))
    assert code == 0, out
    key_path = tmp_path / "data" / "device_key.pem"
    assert stat.S_IMODE(key_path.stat().st_mode) == 0o600
    code, _, err = run("keys", "init", "--config", str(cfg))
    assert code == 2 and "refusing to overwrite" in err
    code, out, _ = run("keys", "show", "--config", str(cfg))
    key = serialization.load_pem_private_key(key_path.read_bytes(), None)
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    assert hashlib.sha256(raw).digest()[:16].hex() in out and "coop-a/branch-1/agent-1" in out
    assert "PRIVATE" not in out
    code, out, _ = run("keys", "show", "--pem", "--config", str(cfg))
    assert out.startswith("-----BEGIN PUBLIC KEY-----") and out.count("\n") == 3
    old = key_path.read_bytes()
    assert run("keys", "init", "--force", "--config", str(cfg))[0] == 0
    assert key_path.read_bytes() != old


def test_run_refuses_a_group_readable_key(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, uplink={"central_key": str(tmp_path / "c.pem")})
    assert run("keys", "init", "--config", str(cfg))[0] == 0
    (tmp_path / "data" / "device_key.pem").chmod(0o640)
    code, _, err = run("run", "--config", str(cfg))
    assert code == 2 and "mode 0640" in err and "chmod 600" in err


@pytest.mark.parametrize(("sections", "expected"), [
    ({"uplink": {"broker": "http://x"}}, "uplink.broker = 'http://x': must be mqtt://HOST[:PORT]"),
    ({"uplink": {"inflight_window": 0}}, "uplink.inflight_window = 0: Input should be greater than or equal to 1"),
    ({"api": {"listen": "0.0.0.0:8470"}}, "is not loopback"),
    ({"agent": {"log_level": "loud"}}, "agent.log_level = 'loud': Input should be 'debug', 'info', 'warning' or"),
    ({"buffer": {"max_db_mb": 2}}, "buffer.max_db_mb = 2: must be 0 (no cap) or at least 8 MiB"),
    ({"uplink": {"bogus": 1}}, "uplink.bogus: unknown key; allowed keys here: backoff_max_s"),
    ({"agent": {"device": "Coop/B/1"}}, "agent.device = 'Coop/B/1': must be SOCIETY/BRANCH/DEVICE"),
])
def test_config_check_names_key_value_and_what_is_allowed(tmp_path: Path, sections: dict[str, object],
                                                           expected: str) -> None:
    data = {"agent": {"device": "coop-a/branch-1/agent-1", "data_dir": str(tmp_path / "d")}}
    for k, v in sections.items():
        data.setdefault(k, {}).update(v)  # type: ignore[attr-defined]
    p = tmp_path / "bad.toml"
    p.write_text(toml_dumps(data))
    code, _, err = run("config", "check", "--config", str(p))
    assert code == 2
    assert expected in err, err


def test_config_check_bad_toml_and_missing_file(tmp_path: Path) -> None:
    p = tmp_path / "x.toml"
    p.write_text("[agent\n")
    code, _, err = run("config", "check", "--config", str(p))
    assert code == 2 and "not valid TOML" in err
    code, _, err = run("config", "check", "--config", str(tmp_path / "nope.toml"))
    assert code == 2 and "file not found" in err


def test_config_check_prints_effective_config_without_secret_content(tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text("hunter2-very-secret\n")
    cfg = write_cfg(tmp_path, uplink={"username": "branch1", "password_file": str(secret)})
    code, out, err = run("config", "check", "--config", str(cfg))
    assert code == 0 and "config OK" in err
    doc = json.loads(out)
    assert doc["uplink"]["password_file"] == str(secret) and doc["buffer"]["batch_max_records"] == 500
    assert "hunter2" not in out + err


def test_status_without_a_running_agent_reads_the_buffer(tmp_path: Path) -> None:
    cfg = write_cfg(tmp_path, api={"listen": "127.0.0.1:1", "token_file": str(tmp_path / "t")})
    code, out, _ = run("status", "--config", str(cfg))
    assert code == 0 and "running     no" in out


@pytest.mark.slow
def test_status_asks_the_running_agent(branch: Branch) -> None:
    branch.start_receiver()
    branch.start_agent()
    cfg = branch.write_agent_config()
    code, out, _ = run("status", "--json", "--config", str(cfg))
    assert code == 0
    doc = json.loads(out)
    assert doc["running"] is True and doc["dev"] == branch.device
    assert set(doc["backlog"]) == {"records", "batches", "media_bytes"} and "acked_seq" in doc
    assert "uplink" in doc["components"] and "connected" in doc["broker"]
    code, out, _ = run("status", "--config", str(cfg))
    assert "broker      mqtt://127.0.0.1:" in out

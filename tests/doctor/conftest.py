"""A branch PC's files for the doctor: device key, centre's key, token, config written as TOML."""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli.main import cli
from tests.peers.agent import deep_merge, toml_dumps
from tests.peers.net import free_port
from wire.keys import generate_key_file, public_pem

DEVICE = "coop-a/branch-1/agent-1"


@dataclass
class Pc:
    root: Path

    def __post_init__(self) -> None:
        self.data_dir = self.root / "data"
        self.data_dir.mkdir(parents=True, exist_ok=True)
        self.key = self.data_dir / "device_key.pem"
        generate_key_file(self.key)
        central = generate_key_file(self.root / "central_key.pem")
        (self.root / "central.pub.pem").write_text(public_pem(central.public_key()))
        self.token = secrets.token_urlsafe(24)
        (self.root / "api.token").write_text(self.token + "\n")
        # nothing listens here: the agent is "not running" unless a test starts one
        self.api_port = free_port()
        self.dead_broker_port = free_port()

    def config(self, **over: Any) -> Path:
        base = {
            "agent": {"device": DEVICE, "data_dir": str(self.data_dir)},
            "uplink": {"broker": f"mqtt://127.0.0.1:{self.dead_broker_port}",
                       "central_key": str(self.root / "central.pub.pem")},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token_file": str(self.root / "api.token"), "workers": 0},
        }
        path = self.root / "agent.toml"
        path.write_text(toml_dumps(deep_merge(base, over)))
        return path

    def doctor(self, config: Path | None = None, **over: Any) -> tuple[int, dict[str, dict[str, str]]]:
        """Run `coopagent doctor --json`; (exit code, checks by id)."""
        path = config or self.config(**over)
        r = CliRunner().invoke(cli, ["doctor", "--json", "--config", str(path)], catch_exceptions=False)
        doc = json.loads(r.output)
        assert doc["exit_code"] == r.exit_code
        return r.exit_code, {c["id"]: c for c in doc["checks"]}


@pytest.fixture
def pc(tmp_path: Path) -> Pc:
    return Pc(tmp_path / "pc")

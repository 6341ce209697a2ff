"""A whole branch for end-to-end tests: keys, configs, the reference receiver, and the agent.

The agent runs in-process (Agent(cfg).start()) for most tests, or as a real
`coopagent run` process where a test must SIGKILL it. Everything lives under one tmp dir;
ports are free loopback ports; the broker is the real Mosquitto fixture.
"""

from __future__ import annotations

import copy
import os
import secrets
import signal
import subprocess
import sys
import tomllib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
import tomli_w

from agent.config.loader import parse_config
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import free_port, port_open, wait_for
from wire.keys import generate_key_file, public_pem

DEVICE = "coop-a/branch-1/agent-1"


def deep_merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def _plain(v: Any) -> Any:
    if isinstance(v, Path):
        return str(v)
    if isinstance(v, Mapping):
        return {k: _plain(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_plain(x) for x in v]
    return v


def toml_dumps(data: Mapping[str, Any]) -> str:
    return tomli_w.dumps(_plain(data))


@dataclass
class Branch:
    root: Path
    broker: Mosquitto
    device: str = DEVICE
    api_port: int = field(default_factory=free_port)
    overrides: dict[str, Any] = field(default_factory=dict)
    receiver: Any = None
    agent: Any = None
    proc: subprocess.Popen[bytes] | None = None

    def __post_init__(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.root / "agent-data"
        self.data_dir.mkdir(exist_ok=True)
        self.device_key = generate_key_file(self.data_dir / "device_key.pem")
        self.central_key_path = self.root / "central_key.pem"
        self.central_key = generate_key_file(self.central_key_path)
        (self.root / "central.pub.pem").write_text(public_pem(self.central_key.public_key()))
        (self.root / "device.pub.pem").write_text(public_pem(self.device_key.public_key()))
        self.token = secrets.token_urlsafe(24)
        tok = self.root / "api.token"
        tok.write_text(self.token + "\n")
        tok.chmod(0o600)

    # -- configs ---------------------------------------------------------------------
    def agent_dict(self, **over: Any) -> dict[str, Any]:
        base = {
            "agent": {"device": self.device, "data_dir": str(self.data_dir), "log_level": "info"},
            "uplink": {"broker": self.broker.url, "central_key": str(self.root / "central.pub.pem"),
                       "backoff_min_s": 0.2, "backoff_max_s": 2.0, "resend_after_s": 5.0},
            # In process unless a test asks for workers: "auto" would depend on the machine.
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token_file": str(self.root / "api.token"),
                    "workers": 0},
            "buffer": {"batch_max_age_s": 0.2},
        }
        return deep_merge(deep_merge(base, self.overrides), over)

    def agent_config(self, **over: Any) -> Any:
        return parse_config(self.agent_dict(**over))

    def write_agent_config(self, **over: Any) -> Path:
        path = self.root / "agent.toml"
        path.write_text(toml_dumps(self.agent_dict(**over)))
        tomllib.loads(path.read_text())  # fail here, not in the agent, if the writer is wrong
        return path

    def receiver_dict(self, **over: Any) -> dict[str, Any]:
        base = {
            "receiver": {"db": str(self.root / "receiver.sqlite3"), "broker": self.broker.url,
                         "key_file": str(self.central_key_path), "media_dir": str(self.root / "rx-media"),
                         "resend_interval_s": 1.0, "media_idle_s": 1.0},
            "devices": [{"id": self.device, "public_key": str(self.root / "device.pub.pem")}],
        }
        return deep_merge(base, over)

    # -- receiver ----------------------------------------------------------------------
    def start_receiver(self, **over: Any) -> Any:
        from receiver.config import ReceiverConfig
        from receiver.server import Receiver
        self.receiver = Receiver(ReceiverConfig.model_validate(self.receiver_dict(**over))).start()
        return self.receiver

    def stop_receiver(self) -> None:
        if self.receiver is not None:
            self.receiver.stop()
            self.receiver = None

    def rx_store(self) -> Any:
        from receiver.store import ReceiverStore
        return ReceiverStore(self.root / "receiver.sqlite3")

    def rx_records(self) -> list[dict[str, Any]]:
        with self.rx_store() as s:
            return list(s.records(self.device))

    def rx_count(self) -> int:
        with self.rx_store() as s:
            return int(s.record_count(self.device))

    def rx_state(self) -> dict[str, Any]:
        with self.rx_store() as s:
            return dict(s.device_state(self.device))

    # -- agent -------------------------------------------------------------------------
    def start_agent(self, with_api: bool = True, **over: Any) -> Any:
        from agent.daemon import Agent
        self.agent = Agent(self.agent_config(**over), with_api=with_api).start()
        if with_api:
            wait_for(lambda: port_open(self.api_port), timeout=15, what="the agent's API")
        return self.agent

    def stop_agent(self) -> None:
        if self.agent is not None:
            self.agent.stop()
            self.agent = None

    def start_agent_process(self, prefix: Sequence[str] = (), start_timeout: float = 20,
                            **over: Any) -> subprocess.Popen[bytes]:
        """`prefix` runs the agent under another command, e.g. ("prlimit", "--nofile=1024:1024", "--");
        `start_timeout`: how long its API may take to listen (a loaded machine starts it slowly)."""
        cfg = self.write_agent_config(**over)
        log = open(self.root / "agent.log", "ab")  # noqa: SIM115 - handed to the child
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        self.proc = subprocess.Popen([*prefix, sys.executable, "-m", "agent.cli.main", "run", "--config", str(cfg)],
                                     stdout=log, stderr=log, env=env)
        log.close()
        wait_for(lambda: port_open(self.api_port) or self.proc is None or self.proc.poll() is not None,
                 timeout=start_timeout, what="the agent process's API")
        if self.proc.poll() is not None:
            raise RuntimeError(f"agent exited {self.proc.returncode}: {self.agent_log()[-3000:]}")
        return self.proc

    def kill_agent_process(self, sig: int = signal.SIGKILL) -> int:
        assert self.proc is not None
        self.proc.send_signal(sig)
        rc = self.proc.wait(timeout=30)
        self.proc = None
        return rc

    def agent_log(self) -> str:
        p = self.root / "agent.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- API -----------------------------------------------------------------------------
    def client(self) -> httpx.Client:
        return httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}",
                            headers={"Authorization": f"Bearer {self.token}"}, timeout=30)

    def post(self, records: list[dict[str, Any]], client: httpx.Client | None = None) -> httpx.Response:
        if client is not None:
            return client.post("/v1/records", json={"records": records})
        with self.client() as c:
            return c.post("/v1/records", json={"records": records})

    def close(self) -> None:
        self.stop_agent()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.stop_receiver()


@pytest.fixture
def branch(tmp_path: Path, mosquitto: Mosquitto) -> Iterator[Branch]:
    b = Branch(tmp_path / "branch", mosquitto)
    try:
        yield b
    finally:
        b.close()


def sale(i: int, **extra: Any) -> dict[str, Any]:
    """A valid sale record for tests (amounts in fils)."""
    return {"kind": "sale", "data": {"receipt": f"R-{i}", "till": "3", "currency": "KWD", "total": 1250,
                                     "lines": [{"gtin": "09506000134352", "qty": 1, "unit_price": 1250,
                                                "amount": 1250}], **extra}}

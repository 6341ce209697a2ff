"""Fixtures of the serial tests: socat pty pairs under tmp_path, components run in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from agent.api.server import ApiComponent
from agent.config.loader import parse_config
from core.interfaces import Component
from drivers.serial import runtime
from drivers.serial.sim.pty import PtyLink
from drivers.serial.workflows.api import router
from tests.peers.agent import toml_dumps
from tests.peers.net import free_port
from tests.serial.doubles import FakeContext, MemorySink

TOKEN = "t" * 32


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[Callable[[str], PtyLink]]:
    links: list[PtyLink] = []

    def make(name: str) -> PtyLink:
        link = PtyLink(tmp_path / f"tty-{name}", tmp_path / f"dev-{name}").start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop()


class Running:
    """A Component in its own thread, stopped and joined at the end (no thread left behind)."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=component.name, daemon=True)

    def _run(self) -> None:
        try:
            self.component.run(self.stop)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"{self.component.name} did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_component() -> Iterator[Callable[[Component], Running]]:
    running: list[Running] = []

    def start(c: Component) -> Running:
        r = Running(c)
        r.thread.start()
        running.append(r)
        return r

    yield start
    for r in reversed(running):
        r.close()


@dataclass
class CountApi:
    client: httpx.Client
    sink: MemorySink
    config_path: Path


@pytest.fixture
def count_api(tmp_path: Path, run_component: Callable[[Component], Running]) -> Iterator[CountApi]:
    """The agent's real ApiComponent on a loopback port with the count router, and the engine
    built by build_components as in the agent; records go to a MemorySink."""
    tok = tmp_path / "api.token"
    tok.write_text(TOKEN + "\n")
    data = {
        "agent": {"data_dir": str(tmp_path / "data")},
        "api": {"token_file": str(tok), "listen": f"127.0.0.1:{free_port()}", "workers": 0},  # a MemorySink
        "scanners": [{"name": "room", "port": "/dev/ttyUSB0", "mode": "count"}],
    }
    cfg_path = tmp_path / "agent.toml"
    cfg_path.write_text(toml_dumps(data))
    cfg = parse_config(data)
    ctx = FakeContext(cfg, MemorySink())
    components = runtime.build_components(ctx)
    assert [c.name for c in components] == ["workflow", "scanner:room"]
    server = ApiComponent(cfg, ctx.records, lambda: {}, lambda: b"", routers=[router])
    run_component(server)
    assert server.started.wait(15)
    with httpx.Client(base_url=f"http://{cfg.api.listen}", headers={"Authorization": f"Bearer {TOKEN}"}) as client:
        yield CountApi(client, ctx.records, cfg_path)
    engine = runtime.workflow_engine()
    assert engine is not None
    engine.close()

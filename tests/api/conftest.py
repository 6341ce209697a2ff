"""Fixtures: a real ApiComponent on a free loopback port, over a real SQLite sink, under tmp_path."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.api.server import ApiComponent
from agent.config.model import AgentConfig
from tests.api.sink import SqliteSink
from tests.peers.net import free_port, wait_for

TOKEN = "t0ken-for-tests-0123456789abcdef"


@dataclass
class Api:
    url: str
    component: ApiComponent
    sink: SqliteSink
    client: httpx.Client

    def post(self, body: Any, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        h = {"content-type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else None
        return self.client.post(
            f"{self.url}/v1/records", content=content, json=None if content is not None else body, headers=h
        )


def make_config(tmp_path: Path, **api: Any) -> AgentConfig:
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN + "\n")
    return AgentConfig.model_validate(
        {
            "agent": {"data_dir": str(tmp_path / "data")},
            "api": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token_file), **api},
        }
    )


def status_doc() -> dict[str, Any]:
    return {"state": "online", "backlog": {"records": 0, "batches": 0, "media_bytes": 0}, "acked_seq": 0}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """serve(**api_config) starts the component; everything started is stopped at the end."""
    started: list[tuple[threading.Event, threading.Thread, SqliteSink, httpx.Client]] = []

    def start(sink: SqliteSink | None = None, fast_path: bool = True, **api: Any) -> Api:
        cfg = make_config(tmp_path, **api)
        sink = sink or SqliteSink(tmp_path / f"sink{len(started)}.sqlite3")
        comp = ApiComponent(
            cfg, sink, status_doc, lambda: b"# HELP coop_test 1\ncoop_test 1\n", fast_path=fast_path
        )
        stop = threading.Event()
        t = threading.Thread(target=comp.run, args=(stop,), name="api-under-test")
        t.start()
        client = httpx.Client(timeout=10)
        started.append((stop, t, sink, client))
        wait_for(comp.started.is_set, what="api listening")
        return Api(f"http://{cfg.api.listen}", comp, sink, client)

    yield start
    for stop, t, sink, client in started:
        client.close()
        stop.set()
        t.join(15)
        assert not t.is_alive(), "api thread did not stop"
        sink.stop()

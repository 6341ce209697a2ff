"""Fixtures: a real ApiComponent on a free loopback port over the real buffer (buffer.store.Store)."""

from __future__ import annotations

import sqlite3
import tempfile
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cbor2
import httpx
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis.configuration import set_hypothesis_home_dir

from agent.api.server import ApiComponent
from agent.config.model import AgentConfig
from buffer.store import Store
from buffer.writer import SealOptions
from tests.peers.net import free_port, wait_for
from wire.cose import Signer

TOKEN = "t0ken-for-tests-0123456789abcdef"

# Hypothesis caches constants under ./.hypothesis while collecting, even with database=None:
# point it at a temporary folder before the test modules are imported.
set_hypothesis_home_dir(tempfile.mkdtemp(prefix="coop-hypothesis-"))
DEV = "coop-a/branch-1/agent-1"


def make_store(path: Path, **opts: Any) -> Store:
    o: dict[str, Any] = {
        "device": DEV,
        "batch_max_records": 500,
        "batch_max_age_s": 2.0,
        "max_payload_bytes": 262144,
        "max_db_bytes": 0,
        **opts,
    }
    return Store(path, Signer(Ed25519PrivateKey.generate()), SealOptions(**o)).start()


def stored(store: Store) -> dict[str, str | None]:
    """id -> src of every record in the file, through a connection of our own (so: committed).

    src is None for a record already sealed (the buffer then keeps its body only in the batch)."""
    with sqlite3.connect(store.path) as c:
        rows = c.execute("SELECT id, body FROM records").fetchall()
    return {i: None if body is None else cbor2.loads(body)["src"] for i, body in rows}


@dataclass
class Api:
    url: str
    component: ApiComponent
    sink: Store
    client: httpx.Client

    def post(self, body: Any, token: str | None = TOKEN, **headers: str) -> httpx.Response:
        h = {"content-type": "application/json", **{k.replace("_", "-"): v for k, v in headers.items()}}
        if token is not None:
            h["authorization"] = f"Bearer {token}"
        content = body if isinstance(body, bytes) else None
        return self.client.post(
            f"{self.url}/v1/records", content=content, json=None if content is not None else body, headers=h
        )

    def count(self) -> int:
        return len(stored(self.sink))


def make_config(tmp_path: Path, **api: Any) -> AgentConfig:
    token_file = tmp_path / "api.token"
    token_file.write_text(TOKEN + "\n")
    return AgentConfig.model_validate(
        {
            "agent": {"data_dir": str(tmp_path / "data")},
            # In process unless a test asks for workers: "auto" would depend on the machine.
            "api": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(token_file), "workers": 0, **api},
        }
    )


def status_doc() -> dict[str, Any]:
    return {"state": "online", "backlog": {"records": 0, "batches": 0, "media_bytes": 0}, "acked_seq": 0}


@pytest.fixture
def serve(tmp_path: Path) -> Iterator[Callable[..., Api]]:
    """serve(store_opts, wrap, fast_path, **api_config) starts the component; all is stopped at the end."""
    started: list[tuple[threading.Event, threading.Thread, Store, httpx.Client]] = []

    def start(
        store_opts: dict[str, Any] | None = None,
        wrap: Callable[[Store], Any] | None = None,
        fast_path: bool = True,
        **api: Any,
    ) -> Api:
        cfg = make_config(tmp_path, **api)
        store = make_store(tmp_path / f"buffer{len(started)}.sqlite3", **(store_opts or {}))
        sink = wrap(store) if wrap else store
        comp = ApiComponent(cfg, sink, status_doc, lambda: b"# HELP coop_test 1\ncoop_test 1\n", fast_path=fast_path)
        stop = threading.Event()
        t = threading.Thread(target=comp.run, args=(stop,), name="api-under-test")
        t.start()
        client = httpx.Client(timeout=10)
        started.append((stop, t, store, client))
        wait_for(comp.started.is_set, what="api listening")
        return Api(f"http://{cfg.api.listen}", comp, store, client)

    yield start
    for stop, t, store, client in started:
        client.close()
        stop.set()
        t.join(15)
        assert not t.is_alive(), "api thread did not stop"
        store.close()

"""ApiComponent: listen rules, lifecycle, status/metrics/openapi routes, requests in flight together."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.api import ingest_core
from agent.api.server import ApiComponent
from agent.config.core import ApiSection
from buffer.store import Store
from tests.api.conftest import TOKEN, Api, make_config, make_store, status_doc, stored
from tests.api.test_ingest import rec
from tests.peers.net import free_port, port_open, wait_for

Serve = Callable[..., Api]


def component(tmp_path: Path, api: ApiSection) -> ApiComponent:
    cfg = make_config(tmp_path)
    cfg.__dict__["api"] = api  # bypass validate_assignment: a config built in code, unchecked
    # Construction only checks the listen address; nothing is written to this path.
    return ApiComponent(cfg, None, status_doc, lambda: b"")  # type: ignore[arg-type]


@pytest.mark.parametrize("listen", ["0.0.0.0:8470", "[::]:8470", "192.0.2.7:8470"])
def test_refuses_non_loopback_listen_without_allow(tmp_path: Path, listen: str) -> None:
    # model_construct skips the config validator, as code that builds a config by hand could.
    api = ApiSection.model_construct(
        listen=listen,
        allow_non_loopback=False,
        token_file=tmp_path / "t",
        max_body_bytes=4096,
        max_records_per_request=10,
    )
    with pytest.raises(ValueError, match=r"is not loopback; the ingest API is for the branch PC only"):
        component(tmp_path, api)
    allowed = ApiSection.model_construct(
        listen="0.0.0.0:8470",
        allow_non_loopback=True,
        token_file=tmp_path / "t",
        max_body_bytes=4096,
        max_records_per_request=10,
    )
    component(tmp_path, allowed)


def test_localhost_name_is_loopback(tmp_path: Path) -> None:
    api = ApiSection.model_construct(
        listen="localhost:8470",
        allow_non_loopback=False,
        token_file=tmp_path / "t",
        max_body_bytes=4096,
        max_records_per_request=10,
    )
    component(tmp_path, api)


def test_busy_port_and_missing_token_fail_run_with_clear_errors(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    sink = make_store(tmp_path / "s.sqlite3")
    comp = ApiComponent(cfg, sink, status_doc, lambda: b"")
    try:
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", cfg.api.port))
            taken.listen(1)
            with pytest.raises(OSError, match=rf"cannot bind 127.0.0.1 port {cfg.api.port}"):
                comp.run(threading.Event())
        cfg.api.token_file.unlink()
        with pytest.raises(ValueError, match="cannot read secret file"):
            comp.run(threading.Event())
        cfg.api.token_file.write_text("short")
        with pytest.raises(ValueError, match="use at least 16"):
            comp.run(threading.Event())
    finally:
        sink.close()


def test_restart_after_stop_serves_again(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    sink = make_store(tmp_path / "s.sqlite3")
    comp = ApiComponent(cfg, sink, status_doc, lambda: b"")
    try:
        for _ in range(2):
            stop = threading.Event()
            t = threading.Thread(target=comp.run, args=(stop,))
            t.start()
            wait_for(comp.started.is_set, what="listening")
            r = httpx.post(
                f"http://{cfg.api.listen}/v1/records",
                json={"records": [rec()]},
                headers={"authorization": f"Bearer {TOKEN}"},
            )
            assert r.status_code == 201
            stop.set()
            t.join(10)
            assert not t.is_alive() and comp.health() == "down"
            assert not port_open(cfg.api.port)
    finally:
        sink.close()
    assert len(stored(sink)) == 2


def test_status_needs_the_token_metrics_does_not(serve: Serve) -> None:
    api = serve()
    r = api.client.get(f"{api.url}/v1/status")
    assert r.status_code == 401 and "bearer token" in r.json()["reason"]
    r = api.client.get(f"{api.url}/v1/status", headers={"authorization": f"Bearer {TOKEN}"})
    assert r.status_code == 200 and r.json() == status_doc()
    m = api.client.get(f"{api.url}/metrics")
    assert m.status_code == 200 and m.text == "# HELP coop_test 1\ncoop_test 1\n"
    assert m.headers["content-type"].startswith("text/plain")


def test_openapi_lists_the_routes_and_the_kinds(serve: Serve) -> None:
    api = serve()
    doc = api.client.get(f"{api.url}/openapi.json").json()
    post = doc["paths"]["/v1/records"]["post"]
    assert set(post["responses"]) >= {"201", "400", "401", "409", "413", "415", "422", "503", "507"}
    assert post["requestBody"]["content"]["application/json"]["schema"]["$ref"] == "#/components/schemas/RecordsIn"
    assert {"/v1/status", "/metrics"} <= set(doc["paths"])
    schemas = doc["components"]["schemas"]
    assert {"RecordsIn", "RecordIn", "SaleData", "StockMoveData", "GapData", "ApiError", "IdsOut"} <= set(schemas)
    assert set(schemas["SaleData"]["required"]) == {"receipt", "till", "lines", "total", "currency"}
    assert "HTTPBearer" in doc["components"]["securitySchemes"]
    # as strict as the implementation: no other keys, no media, one schema per kind
    assert schemas["RecordsIn"]["additionalProperties"] is False
    assert schemas["RecordIn"]["additionalProperties"] is False
    assert "media" not in schemas["RecordIn"]["properties"]["kind"]["enum"]
    assert schemas["SaleRecord"]["properties"]["data"] == {"$ref": "#/components/schemas/SaleData"}
    assert "MediaRecord" not in schemas


class Watched:
    """The real Store, with a count of submissions waiting for their commit at the same moment."""

    def __init__(self, store: Store):
        self.store = store
        self.pending = 0
        self.max_pending = 0
        self.lock = threading.Lock()

    def submit_nowait(self, records: Any) -> Future[list[str]]:
        fut = self.store.submit_nowait(records)
        with self.lock:
            self.pending += 1
            self.max_pending = max(self.max_pending, self.pending)
        fut.add_done_callback(self._done)
        return fut

    def _done(self, _: Future[list[str]]) -> None:
        with self.lock:
            self.pending -= 1


@pytest.mark.slow
def test_concurrent_requests_are_in_flight_together(serve: Serve) -> None:
    """200 one-record POSTs from 20 connections at once: all stored, several waiting on one commit."""
    watched: list[Watched] = []
    api = serve(wrap=lambda s: watched.append(Watched(s)) or watched[0])

    async def main() -> list[int]:
        limits = httpx.Limits(max_connections=20)
        headers = {"authorization": f"Bearer {TOKEN}"}
        async with httpx.AsyncClient(limits=limits, timeout=20, headers=headers) as client:
            url = f"{api.url}/v1/records"
            posts = (client.post(url, json={"records": [rec(id=f"c{i}")]}) for i in range(200))
            replies = await asyncio.gather(*posts)
        return [r.status_code for r in replies]

    assert asyncio.run(main()) == [201] * 200
    assert api.count() == 200
    assert watched[0].max_pending > 1


def test_localhost_serves_on_every_loopback_address_it_resolves_to(tmp_path: Path) -> None:
    port = free_port()
    cfg = make_config(tmp_path, listen=f"localhost:{port}")
    sink = make_store(tmp_path / "s.sqlite3")
    comp = ApiComponent(cfg, sink, status_doc, lambda: b"ok\n")
    stop = threading.Event()
    t = threading.Thread(target=comp.run, args=(stop,))
    t.start()
    try:
        wait_for(comp.started.is_set, what="listening")
        families = {info[0] for info in socket.getaddrinfo("localhost", port, type=socket.SOCK_STREAM)}
        hosts = ["127.0.0.1"] + (["[::1]"] if socket.AF_INET6 in families and socket.has_ipv6 else [])
        for host in hosts:
            try:
                r = httpx.get(f"http://{host}:{port}/metrics")
            except httpx.ConnectError:
                assert host == "[::1]", "IPv4 loopback must serve"
                continue  # ::1 was skipped because this host has no IPv6 loopback
            assert r.status_code == 200 and r.text == "ok\n"
    finally:
        stop.set()
        t.join(10)
        sink.close()


class Gated:
    """The real Store, whose answers are held back until `gate` is set (to catch a request in flight)."""

    def __init__(self, store: Store):
        self.store = store
        self.gate = threading.Event()
        self.submitted = threading.Event()

    def submit_nowait(self, records: Any) -> Future[list[str]]:
        inner = self.store.submit_nowait(records)
        outer: Future[list[str]] = Future()

        def release() -> None:
            self.gate.wait(10)
            exc = inner.exception(10)
            if exc is not None:
                outer.set_exception(exc)
            else:
                outer.set_result(inner.result())

        threading.Thread(target=release, daemon=True).start()
        self.submitted.set()
        return outer


def test_stop_lets_the_request_in_flight_finish_with_its_201(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    store = make_store(tmp_path / "s.sqlite3")
    sink = Gated(store)
    comp = ApiComponent(cfg, sink, status_doc, lambda: b"")
    stop = threading.Event()
    t = threading.Thread(target=comp.run, args=(stop,))
    t.start()
    replies: list[httpx.Response] = []
    try:
        wait_for(comp.started.is_set, what="listening")
        poster = threading.Thread(
            target=lambda: replies.append(
                httpx.post(
                    f"http://{cfg.api.listen}/v1/records",
                    json={"records": [rec(id="late")]},
                    headers={"authorization": f"Bearer {TOKEN}"},
                    timeout=20,
                )
            )
        )
        poster.start()
        assert sink.submitted.wait(10)
        stop.set()  # the server stops taking new connections but owes this request its answer
        wait_for(lambda: not port_open(cfg.api.port), what="listener closed")
        assert t.is_alive()
        sink.gate.set()
        poster.join(20)
        t.join(20)
        assert not t.is_alive()
        assert replies[0].status_code == 201 and replies[0].json() == {"ids": ["late"]}
        assert "late" in stored(store)
    finally:
        sink.gate.set()
        stop.set()
        t.join(10)
        store.close()


def test_a_commit_that_never_comes_is_a_503_and_a_repost_is_safe(serve: Serve, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(ingest_core, "COMMIT_TIMEOUT_S", 0.3)
    gated: list[Gated] = []
    api = serve(wrap=lambda s: gated.append(Gated(s)) or gated[0])
    r = api.post({"records": [rec(id="slow-1")]})
    assert r.status_code == 503
    assert "did not confirm the commit within 0.3 s" in r.json()["reason"]
    assert "re-post them with the same ids" in r.json()["reason"]
    gated[0].gate.set()  # the buffer wakes up: the first attempt lands after all
    wait_for(lambda: "slow-1" in stored(api.sink), what="late commit")
    again = api.post({"records": [rec(id="slow-1")]})
    assert again.status_code == 201 and api.count() == 1

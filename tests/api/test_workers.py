"""[api] workers > 0: real worker processes on the shared port, the agent's real buffer behind them.

The same contract as in-process (status codes, reasons, ids, idempotency), plus what only
processes can get wrong: a worker killed -9 is replaced and nothing it acknowledged is lost;
a worker never outlives the agent (closed link, no orphan holding the port); stop lets
requests in flight finish with their 201.
"""

from __future__ import annotations

import fcntl
import os
import select
import signal
import socket
import struct
import subprocess
import sys
import termios
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest
from prometheus_client import REGISTRY

from agent.api.ipc import FrameReader, pack
from agent.api.server import ApiComponent, uvicorn_options
from agent.config.core import ApiSection
from tests.api.conftest import TOKEN, Api, make_config, make_store, status_doc, stored
from tests.api.test_ingest import check, rec
from tests.peers.net import free_port, port_open, wait_for


def unread_bytes(sock: socket.socket) -> int:
    """Bytes waiting, not yet read, in a socket's receive queue (FIONREAD)."""
    n: int = struct.unpack("i", fcntl.ioctl(sock.fileno(), termios.FIONREAD, b"\0\0\0\0"))[0]
    return n


def wait_for_message(link: socket.socket, kind: str, timeout: float = 15) -> tuple[Any, ...]:
    """Read a worker's messages on the agent's end of its link until one of `kind` arrives."""
    reader = FrameReader()
    link.settimeout(timeout)
    while True:
        data = link.recv(65536)
        assert data, f"the link closed before a {kind!r} message"
        for msg in reader.feed(data):
            for m in msg[2] if msg[0] == "batch" else [msg]:
                if m[0] == kind:
                    return tuple(m)

Serve = Callable[..., Api]
H = {"authorization": f"Bearer {TOKEN}"}


@pytest.fixture
def two(serve: Serve) -> Api:
    api = serve(workers=2)
    assert api.component._pool is not None and len(api.component._pool.workers) == 2
    return api


def worker_pids(api: Api) -> list[int]:
    assert api.component._pool is not None
    return [w.proc.pid for w in api.component._pool.workers.values()]


def test_the_contract_is_the_same_through_workers(two: Api) -> None:
    api = two
    r = api.post({"records": [rec("sale", id="pos-3:R-1"), rec("weight"), rec("stock_move", src="erp")]},
                 x_coop_source="pos-3")
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert ids[0] == "pos-3:R-1" and len(set(ids)) == 3
    assert stored(api.sink) == {ids[0]: "api:pos-3", ids[1]: "api:pos-3", ids[2]: "erp"}
    # validation runs in the worker: same words as in the agent's process
    bad = rec("weight")
    bad["data"]["grams"] = "5"
    check(api.post({"records": [rec(), bad]}), 422, "records[1].data.grams: must be an integer", 1)
    # refusals decided by the agent's writer come back with their status and reason
    assert api.post({"records": [rec("weight", id="dup")]}).status_code == 201
    again = rec("weight", id="dup")
    again["data"]["grams"] += 1
    check(api.post({"records": [again]}), 409, "already exists with different content", 0)
    assert api.post({"records": [rec("weight", id="dup")]}).status_code == 201  # same content: accepted
    check(api.post({"records": [rec()]}, token="wrong-token-0123456789"), 401, "bearer token")
    check(api.post(b"{not json"), 400, "not valid JSON")
    check(api.post({"records": [rec()]}, content_type="text/plain"), 415, "application/json")
    assert api.count() == 4


def test_other_routes_are_answered_by_the_agents_app(two: Api) -> None:
    api = two
    assert api.client.get(f"{api.url}/v1/status").status_code == 401
    r = api.client.get(f"{api.url}/v1/status", headers=H)
    assert r.status_code == 200 and r.json() == status_doc()
    m = api.client.get(f"{api.url}/metrics")
    assert m.status_code == 200 and m.text == "# HELP coop_test 1\ncoop_test 1\n"
    doc = api.client.get(f"{api.url}/openapi.json").json()
    assert {"/v1/records", "/v1/status", "/metrics"} <= set(doc["paths"])
    assert api.client.get(f"{api.url}/nowhere").status_code == 404


def test_worker_counts_reach_the_agents_metrics(two: Api) -> None:
    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = value("coop_api_ingest_requests_total", code="201"), value("coop_api_ingest_records_total")
    refused = value("coop_api_ingest_requests_total", code="401")
    for _ in range(3):
        assert two.post({"records": [rec(), rec()]}).status_code == 201
    assert two.post({"records": [rec()]}, token=None).status_code == 401
    wait_for(lambda: value("coop_api_ingest_requests_total", code="201") == before[0] + 3, timeout=5,
             what="worker counts in the agent's registry")
    assert value("coop_api_ingest_records_total") == before[1] + 6
    wait_for(lambda: value("coop_api_ingest_requests_total", code="401") == refused + 1, timeout=5, what="401 count")


def test_a_worker_killed_9_is_replaced_and_nothing_acknowledged_is_lost(two: Api) -> None:
    api = two
    acked: list[str] = []
    errors: list[str] = []
    stop = threading.Event()

    def post_forever() -> None:
        n = 0
        with httpx.Client(timeout=10) as c:
            while not stop.is_set():
                n += 1
                try:
                    r = c.post(f"{api.url}/v1/records", json={"records": [rec(id=f"k-{n}")]}, headers=H)
                except httpx.TransportError as exc:  # the killed worker's connection: not acknowledged
                    errors.append(type(exc).__name__)
                    continue
                if r.status_code == 201:
                    acked.extend(r.json()["ids"])

    t = threading.Thread(target=post_forever)
    t.start()
    try:
        wait_for(lambda: len(acked) > 20, what="traffic")
        victim = worker_pids(api)[0]
        os.kill(victim, signal.SIGKILL)
        wait_for(lambda: victim not in worker_pids(api) and api.component.health() == "ok", timeout=30,
                 what="the worker replaced")
        n = len(acked)
        wait_for(lambda: len(acked) > n + 20, what="traffic after the restart")
    finally:
        stop.set()
        t.join(20)
    assert set(acked) <= set(stored(api.sink)), "a record answered 201 is missing"


def test_stop_finishes_requests_in_flight_and_leaves_no_worker(tmp_path) -> None:  # type: ignore[no-untyped-def]
    cfg = make_config(tmp_path, workers=2)
    store = make_store(tmp_path / "s.sqlite3")
    gate = threading.Event()
    comp = ApiComponent(cfg, store, status_doc, lambda: b"")
    stop = threading.Event()
    t = threading.Thread(target=comp.run, args=(stop,))
    t.start()
    try:
        wait_for(comp.started.is_set, what="workers listening", timeout=60)
        pids = [w.proc.pid for w in comp._pool.workers.values()]  # type: ignore[union-attr]
        # the buffer's writer is held busy, so the request's commit waits until the stop has begun
        held = store.call(lambda txn: gate.wait(10))
        replies: list[httpx.Response] = []
        poster = threading.Thread(target=lambda: replies.append(httpx.post(
            f"http://{cfg.api.listen}/v1/records", json={"records": [rec(id="late")]}, headers=H, timeout=30)))
        poster.start()
        # in flight: its records wait, unread, on a worker's link (the writer, held by `gate`,
        # reads the links only between its groups)
        workers = list(comp._pool.workers.values())  # type: ignore[union-attr]
        wait_for(lambda: any(unread_bytes(w.sock) for w in workers), what="the request waiting on a link")
        stop.set()
        wait_for(lambda: not port_open(cfg.api.port), what="listeners closed", timeout=10)
        assert poster.is_alive(), replies[0].text  # its request is still waiting for the commit
        gate.set()
        held.result(10)
        poster.join(30)
        t.join(30)
        assert not t.is_alive()
        assert replies and replies[0].status_code == 201, replies
        assert "late" in stored(store)
        assert not port_open(cfg.api.port)
        for pid in pids:
            with pytest.raises(ProcessLookupError):
                os.kill(pid, 0)
    finally:
        gate.set()
        stop.set()
        t.join(10)
        store.close()


@pytest.fixture
def lone_worker() -> Iterator[tuple[subprocess.Popen[bytes], socket.socket, int]]:
    """A worker started by hand, as the pool does, with the agent's end of the link in our hands."""
    listen = socket.socket()
    listen.bind(("127.0.0.1", free_port()))
    listen.listen(16)
    mine, theirs = socket.socketpair()
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent.api.worker", "--ipc-fd", str(theirs.fileno()), "--parent", str(os.getpid()),
         "--listen-fd", str(listen.fileno())],
        pass_fds=(theirs.fileno(), listen.fileno()), start_new_session=True)
    theirs.close()
    mine.sendall(pack(("config", 0, {"token": TOKEN.encode(), "max_body_bytes": 65536, "max_records": 100,
                                     "log_level": "INFO", "uvicorn": uvicorn_options(ApiSection())})))
    port = listen.getsockname()[1]
    listen.close()  # the worker holds its own copy
    try:
        yield proc, mine, port
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait()
        mine.close()


def test_a_worker_never_outlives_the_agent(lone_worker: tuple[subprocess.Popen[bytes], socket.socket, int]) -> None:
    proc, link, port = lone_worker
    wait_for(lambda: port_open(port), what="worker listening", timeout=30)
    replies: list[httpx.Response] = []
    poster = threading.Thread(target=lambda: replies.append(httpx.post(
        f"http://127.0.0.1:{port}/v1/records", json={"records": [rec(id="orphan")]}, headers=H, timeout=30)))
    poster.start()
    wait_for_message(link, "ingest")  # the request now waits for a commit that will never come
    link.close()  # what the kernel does when the agent dies, even by SIGKILL
    assert proc.wait(15) == 0
    poster.join(15)
    # never a 201 for what was not committed; the answer says how to recover
    assert replies[0].status_code == 503
    assert "re-post the records with the same ids" in replies[0].json()["reason"]
    assert not port_open(port)


def test_record_listeners_get_the_data_of_records_posted_through_workers(two: Api) -> None:
    # Workers send no data maps to the agent (cheaper); the buffer decodes the stored body for
    # listeners such as the camera rules, so they see exactly what was posted.
    got: list[dict[str, object]] = []
    two.sink.add_listener(got.extend)
    sale = rec("sale", id="listened")
    assert two.post({"records": [sale]}).status_code == 201
    wait_for(lambda: any(r["id"] == "listened" for r in got), what="the listener called")
    (seen,) = [r for r in got if r["id"] == "listened"]
    assert seen["data"] == sale["data"] and seen["kind"] == "sale" and seen["src"] == "api"


# -- the workers' HTTP serving (uvicorn in each worker), spoken to byte by byte ---------------

def _exchange(api: Api, data: bytes, answers: int = 1, timeout: float = 10) -> bytes:
    """Send raw bytes; read until `answers` complete responses (or the server closes)."""
    port = int(api.url.rsplit(":", 1)[1])
    out = b""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as s:
        s.sendall(data)
        while out.count(b"HTTP/1.") < answers or not _complete(out, answers):
            chunk = s.recv(65536)
            if not chunk:
                break
            out += chunk
    return out


def _complete(out: bytes, answers: int) -> bool:
    parts = out.split(b"HTTP/1.1 ")[1:]
    done = 0
    for part in parts:
        head, sep, body = part.partition(b"\r\n\r\n")
        if not sep:
            return False
        length = [int(v) for k, _, v in (h.partition(b": ") for h in head.split(b"\r\n")) if k == b"content-length"]
        if length and len(body) < length[0]:
            return False
        done += 1 if not head.startswith(b"100 ") else 0
    return done >= answers


def _post(body: bytes, *extra: bytes, token: str = TOKEN, chunked: bool = False) -> bytes:
    head = [b"POST /v1/records HTTP/1.1", b"host: x", b"content-type: application/json",
            b"authorization: Bearer " + token.encode(), *extra]
    if chunked:
        head.append(b"transfer-encoding: chunked")
        mid = len(body) // 2
        payload = b"".join(b"%x\r\n%s\r\n" % (len(c), c) for c in (body[:mid], body[mid:])) + b"0\r\n\r\n"
    else:
        head.append(b"content-length: %d" % len(body))
        payload = body
    return b"\r\n".join(head) + b"\r\n\r\n" + payload


def test_worker_http_chunked_expect_pipelined_and_http10(two: Api) -> None:
    import json

    one = json.dumps({"records": [rec(id="c-1")]}).encode()
    assert b" 201 Created" in _exchange(two, _post(one, chunked=True))
    out = _exchange(two, _post(json.dumps({"records": [rec(id="e-1")]}).encode(), b"expect: 100-continue"))
    assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 201 Created")
    # two requests in one write: two answers, in order, on the same connection
    a, b = (_post(json.dumps({"records": [rec(id=i)]}).encode()) for i in ("p-1", "p-2"))
    out = _exchange(two, a + b, answers=2)
    assert out.count(b" 201 Created") == 2 and out.index(b'"p-1"') < out.index(b'"p-2"')
    # HTTP/1.0: answered, then closed
    out = _exchange(two, b"GET /v1/status?verbose=1 HTTP/1.0\r\nauthorization: Bearer " + TOKEN.encode() + b"\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 200 OK") and b"connection: close" in out
    assert {"c-1", "e-1", "p-1", "p-2"} <= set(stored(two.sink))


def test_worker_http_refuses_early_and_garbage(two: Api) -> None:
    # a wrong token is answered from the headers: no 100 Continue, the body is never held
    out = _exchange(two, _post(b"x" * 100_000, b"expect: 100-continue", token="wrong-token-0123456789"))
    assert out.startswith(b"HTTP/1.1 401 Unauthorized") and b"www-authenticate: Bearer" in out
    assert b"100 Continue" not in out
    # a chunked body past [api] max_body_bytes (the fixture's default, 4 MiB): 413, not stored
    big = b'{"records": [' + b" " * (4 * 1024 * 1024 + 10) + b"]}"
    out = _exchange(two, _post(big, chunked=True))
    assert out.startswith(b"HTTP/1.1 413") and b"too_large" in out
    out = _exchange(two, b"\x16\x03\x01garbage that is no HTTP\r\n\r\n")
    assert out.startswith(b"HTTP/1.1 400 Bad Request")
    assert two.client.get(f"{two.url}/v1/status", headers=H).status_code == 200  # still serving


# -- the link itself, on a real socketpair (no worker process needed) -------------------------


def test_an_answer_larger_than_the_socket_buffer_arrives_whole() -> None:
    """Worker.send tries one non-blocking send first; a frame the buffer cannot take at once
    must still arrive complete and in order behind it, not cut at what fitted."""
    from agent.api.workers import Worker

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    worker = Worker(0, None, ours)  # type: ignore[arg-type]  # no process: only the link is tested
    big = ("ids", 7, [f"id-{i:07d}" for i in range(200_000)])  # ~2.6 MB, far past the buffer
    small = ("ids", 8, ["after"])
    got: list[tuple[object, ...]] = []

    def read_slowly() -> None:
        reader = FrameReader()
        # the sender meets a full buffer first: its end stops being writable
        wait_for(lambda: not select.select([], [ours], [], 0)[1], what="the sender blocked on a full buffer")
        while len(got) < 2:
            data = theirs.recv(65536)
            assert data, "link closed early"
            got.extend(reader.feed(data))

    t = threading.Thread(target=read_slowly)
    t.start()
    worker.send(big)
    worker.send(small)
    t.join(10)
    worker.close()
    ours.close()
    theirs.close()
    assert got == [big, small]


def test_link_source_reads_a_frame_that_arrives_in_pieces() -> None:
    """LinkSource stops reading at a short read (the socket was drained) instead of asking again;
    a frame that arrives later in pieces must still become one operation with every record."""
    from agent.api.workers import LinkAnswer, LinkSource, Worker

    ours, theirs = socket.socketpair()
    ours.setblocking(False)
    worker = Worker(0, None, ours)  # type: ignore[arg-type]
    source = LinkSource(worker, None, None)  # type: ignore[arg-type]  # only ingest frames are sent
    items = [(f"r-{i}", "sale", 1, "api", False, b"fp", b"\xa1" + bytes(300)) for i in range(1500)]
    frame = pack(("ingest", 41, items))
    assert len(frame) > 400_000  # more than one recv's worth (RECV_BYTES)
    pieces = [frame[:1000], frame[1000:300_000], frame[300_000:]]

    def send_in_pieces() -> None:
        for piece in pieces:
            theirs.sendall(piece)
            wait_for(lambda: unread_bytes(ours) == 0, what="the reader drained the piece")  # between pieces

    sender = threading.Thread(target=send_in_pieces)
    sender.start()
    ops = []
    reads = 0
    deadline = time.monotonic() + 10
    while not ops and time.monotonic() < deadline:
        ready, _, _ = select.select([ours], [], [], 0.05)
        if ready:
            got = source.read_ops()
            assert got is not None
            ops.extend(got)
            reads += 1
    sender.join(10)
    assert reads > 1  # it did arrive in pieces
    assert len(ops) == 1
    op = ops[0]
    assert [e.rec.id for e in op.records] == [f"r-{i}" for i in range(1500)]
    assert isinstance(op.future, LinkAnswer) and not op.future.done()
    op.future.set_result(["r-0"])
    assert op.future.done() and worker.answers == [("ids", 41, ["r-0"])]
    worker.close()
    ours.close()
    theirs.close()

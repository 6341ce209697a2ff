"""agent.api.guard over real sockets: deadlines, the connection cap, the header cap, and the
JSON limits, against the real component and buffer, in process and (where it matters) in a
worker process."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager

import orjson
import pytest

from tests.api.conftest import TOKEN, Api, stored
from tests.api.test_ingest import rec
from tests.api.test_server import Serve

HEAD = (b"POST /v1/records HTTP/1.1\r\nhost: x\r\ncontent-type: application/json\r\n"
        b"authorization: Bearer " + TOKEN.encode())


def port(api: Api) -> int:
    return int(api.url.rsplit(":", 1)[1])


@contextmanager
def connect(api: Api, timeout: float = 10) -> Iterator[socket.socket]:
    with socket.create_connection(("127.0.0.1", port(api)), timeout=timeout) as s:
        yield s


def read_to_close(s: socket.socket) -> bytes:
    out = b""
    while chunk := s.recv(65536):
        out += chunk
    return out


def body_of(answer: bytes) -> dict[str, str]:
    return dict(orjson.loads(answer.partition(b"\r\n\r\n")[2]))


@pytest.mark.parametrize("workers", [0, 1])
def test_a_head_that_never_finishes_gets_408_and_is_closed(serve: Serve, workers: int) -> None:
    """Before issue 13 nothing timed out a head: uvicorn's keep-alive timer runs only after an
    answer and any byte cancels it, so half a request held its descriptor for ever."""
    api = serve(workers=workers, head_timeout_s=0.5)
    with connect(api) as s:
        t = time.monotonic()
        s.sendall(HEAD[:40])
        for b in HEAD[40:60]:  # a byte at a time does not push the deadline back
            s.sendall(bytes([b]))
            time.sleep(0.01)  # the slow client's pace is what is tested, not a wait for an event
        out = read_to_close(s)
        took = time.monotonic() - t
    assert out.startswith(b"HTTP/1.1 408 Request Timeout\r\n") and b"connection: close" in out
    assert body_of(out) == {"error": "request_timeout",
                            "reason": "the request's head did not arrive within 0.5 s ([api] head_timeout_s)"}
    assert 0.45 < took < 5


def test_an_idle_connection_is_closed_without_an_answer(serve: Serve) -> None:
    api = serve(head_timeout_s=0.5, keepalive_timeout_s=1)
    with connect(api) as s:  # never sends a byte
        assert read_to_close(s) == b""
    body = json.dumps({"records": [rec()]}).encode()
    with connect(api) as s:  # an answer, then idle: uvicorn's keep-alive timer closes it
        s.sendall(HEAD + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        out = read_to_close(s)
    assert out.startswith(b"HTTP/1.1 201 Created") and out.count(b"HTTP/1.1") == 1


def test_a_body_that_stops_coming_gets_408(serve: Serve) -> None:
    api = serve(body_timeout_s=0.5)
    with connect(api) as s:
        s.sendall(HEAD + b"\r\ncontent-length: 100\r\n\r\n" + b'{"records": [')
        out = read_to_close(s)
    assert out.startswith(b"HTTP/1.1 408 ")
    assert body_of(out)["reason"] == "the request's body did not arrive within 0.5 s ([api] body_timeout_s)"
    assert api.count() == 0


@pytest.mark.parametrize("workers", [0, 1])
def test_a_head_over_max_header_bytes_is_431(serve: Serve, workers: int) -> None:
    api = serve(workers=workers, max_header_bytes=4096)
    body = json.dumps({"records": [rec(id="fits")]}).encode()
    with connect(api) as s:  # just under: served
        s.sendall(HEAD + b"\r\nx-pad: " + b"a" * 3500 + b"\r\ncontent-length: %d\r\n\r\n" % len(body) + body)
        assert s.recv(65536).startswith(b"HTTP/1.1 201 ")
    with connect(api) as s:  # a header value past the cap that has not ended yet
        # (A client that goes on sending after the 431 may see a reset instead: the server
        # closes with its bytes unread, and the kernel then answers them with RST.)
        s.sendall(HEAD + b"\r\nx-pad: " + b"a" * 5000)
        out = read_to_close(s)
    assert out.startswith(b"HTTP/1.1 431 Request Header Fields Too Large\r\n")
    assert body_of(out)["error"] == "headers_too_large"
    assert set(stored(api.sink)) == {"fits"}


@pytest.mark.parametrize("workers", [0, 1])
def test_past_max_connections_the_oldest_incomplete_one_makes_room(serve: Serve, workers: int) -> None:
    """The descriptor reserve: a POS that sends its request at once is served while slow
    clients hold every connection the cap allows; the oldest slow one is closed for it."""
    api = serve(workers=workers, max_connections=16)
    slow = [socket.create_connection(("127.0.0.1", port(api)), timeout=10) for _ in range(16)]
    try:
        for s in slow:
            s.sendall(HEAD[:30])
        r = api.post({"records": [rec(id="pos")]})
        assert r.status_code == 201, r.text
        out = read_to_close(slow[0])
        assert out.startswith(b"HTTP/1.1 503 Service Unavailable\r\n") and body_of(out)["error"] == "unavailable"
        for s in slow[2:]:  # the others (the client's keep-alive connection took the second's place)
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in slow:
            s.close()


def test_when_every_connection_has_a_request_in_progress_a_new_one_gets_503(serve: Serve) -> None:
    api = serve(max_connections=16, body_timeout_s=30)
    busy = [socket.create_connection(("127.0.0.1", port(api)), timeout=10) for _ in range(16)]
    try:
        for s in busy:  # heads complete, bodies pending: these are requests, not slow heads
            s.sendall(HEAD + b"\r\nexpect: 100-continue\r\ncontent-length: 100\r\n\r\n")
        for s in busy:  # the 100 comes once the app reads the body: every head is parsed
            assert s.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        with connect(api) as s:
            out = read_to_close(s)
        assert out.startswith(b"HTTP/1.1 503 ") and "retry" in body_of(out)["reason"]
    finally:
        for s in busy:
            s.close()


@pytest.mark.parametrize("workers", [0, 1])
def test_chunked_encoding_errors_are_400_json(serve: Serve, workers: int) -> None:
    api = serve(workers=workers)
    for bad in (b"zz\r\n{}\r\n0\r\n\r\n",              # a chunk size that is no hex number
                b"2\r\n{}XX0\r\n\r\n",                  # no CRLF after the chunk's data
                b"ffffffffffffffffff\r\n"):             # a size past 64 bits
        with connect(api) as s:
            s.sendall(HEAD + b"\r\ntransfer-encoding: chunked\r\n\r\n" + bad)
            out = read_to_close(s)
        assert out.startswith(b"HTTP/1.1 400 Bad Request\r\n"), (bad, out)
        assert body_of(out)["error"] == "bad_request"
    assert api.count() == 0

"""The API worker processes' HTTP/1.1 server: httptools (the parser uvicorn uses) under an
asyncio Protocol, without ASGI.

Why not uvicorn here, as in the agent's own process: at one record a POST a worker spent
~200 us of CPU a request, most of it in uvicorn's ASGI machinery (a task, a scope, two
transport writes and so two TCP segments a response), against ~50 us for our ingest code;
on a 2-core branch PC that CPU also delays the buffer's fsync completions. This server does
only what the local API needs: HTTP/1.0 and 1.1, keep-alive, pipelining (answered in
order, reading paused meanwhile), chunked request bodies, `Expect: 100-continue`, a body
limit (413), a connection limit (503), parse errors (400, then close), and a graceful stop
(no new connections, requests in flight answered, idle connections closed). Parsing stays
with httptools; every request but POST /v1/records is handed whole to the agent's app.
"""

from __future__ import annotations

import asyncio
import http
import logging
import socket
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httptools

log = logging.getLogger(__name__)

_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"
_BAD_REQUEST = (b"HTTP/1.1 400 Bad Request\r\ncontent-type: text/plain\r\ncontent-length: 12\r\n"
                b"connection: close\r\n\r\nbad request\n")
_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain\r\ncontent-length: 21\r\n"
         b"connection: close\r\n\r\ntoo many connections\n")


@dataclass
class Request:
    method: str
    target: bytes  # path and query as sent
    http_version: str
    headers: list[tuple[bytes, bytes]]  # names lower-cased, in order
    body: bytes = b""
    too_large: bool = False  # the body passed the limit: it was not kept
    keep_alive: bool = True
    refused: Response | None = None  # answered from the headers alone; the body was not kept

    @property
    def path(self) -> str:
        return self.target.partition(b"?")[0].decode("latin-1")

    def header(self, name: bytes) -> bytes | None:
        for key, value in self.headers:
            if key == name:
                return value
        return None


@dataclass
class Response:
    status: int
    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytes = b""


Handler = Callable[[Request], Awaitable[Response]]
# Judges a request from its method, target and headers, before any body is kept: a refusal
# (401, 415, 413 by Content-Length) is answered without holding the body in memory.
Precheck = Callable[[str, bytes, list[tuple[bytes, bytes]]], "Response | None"]


def render(resp: Response, keep_alive: bool) -> bytes:
    """One write, so one TCP segment for a small answer."""
    try:
        phrase = http.HTTPStatus(resp.status).phrase.encode()
    except ValueError:
        phrase = b"Unknown"
    head = [b"HTTP/1.1 %d %s\r\n" % (resp.status, phrase)]
    for name, value in resp.headers:
        if name.lower() not in (b"content-length", b"connection", b"transfer-encoding"):
            head.append(b"%s: %s\r\n" % (name, value))
    head.append(b"content-length: %d\r\n" % len(resp.body))
    if not keep_alive:
        head.append(b"connection: close\r\n")
    head.append(b"\r\n")
    head.append(resp.body)
    return b"".join(head)


class HttpConnection(asyncio.Protocol):
    def __init__(self, server: HttpServer):
        self.server = server
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.pending: deque[Request] = deque()
        self.task: asyncio.Task[None] | None = None
        self.closing = False
        self._url = b""
        self._headers: list[tuple[bytes, bytes]] = []
        self._body: list[bytes] = []
        self._size = 0
        self._too_large = False
        self._refused: Response | None = None

    # -- transport callbacks ----------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]  # uvloop's is not a subclass
        if not self.server.admit(self):
            transport.write(_BUSY)  # type: ignore[attr-defined]
            transport.close()

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:  # no upgrades (websockets, h2c) in this API
            self._fail()
        except httptools.HttpParserError:
            self._fail()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.release(self)

    # -- parser callbacks -------------------------------------------------------------
    def on_message_begin(self) -> None:
        self._url, self._headers, self._body, self._size, self._too_large = b"", [], [], 0, False
        self._refused = None

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers.append((name.lower(), value))

    def on_headers_complete(self) -> None:
        method = self.parser.get_method().decode("latin-1")
        self._refused = self.server.precheck(method, self._url, self._headers)
        if self._refused is not None:
            return  # no 100 Continue: the client need not send the body at all
        for name, value in self._headers:
            if name == b"expect" and value.lower() == b"100-continue" and self.transport is not None:
                self.transport.write(_CONTINUE)

    def on_body(self, body: bytes) -> None:
        if self._refused is not None:
            return
        self._size += len(body)
        if self._size > self.server.max_body_bytes:
            self._too_large = True
            self._body = []
        elif not self._too_large:
            self._body.append(body)

    def on_message_complete(self) -> None:
        req = Request(
            method=self.parser.get_method().decode("latin-1"),
            target=self._url,
            http_version=self.parser.get_http_version(),
            headers=self._headers,
            body=b"".join(self._body),
            too_large=self._too_large,
            keep_alive=self.parser.should_keep_alive(),
            refused=self._refused,
        )
        self.pending.append(req)
        if self.transport is not None:
            self.transport.pause_reading()  # pipelined requests wait in the socket, answered in order
        if self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._serve())

    # -- answering --------------------------------------------------------------------
    async def _serve(self) -> None:
        try:
            while self.pending:
                req = self.pending.popleft()
                try:
                    resp = req.refused or await self.server.handler(req)
                except Exception:
                    log.exception("%s %s failed", req.method, req.path)
                    resp = Response(500, [(b"content-type", b"text/plain")], b"internal error\n")
                keep = (req.keep_alive and not req.too_large and req.refused is None
                        and not self.server.stopping)
                if self.transport is None or self.transport.is_closing():
                    return
                self.transport.write(render(resp, keep))
                if not keep:
                    self.transport.close()
                    return
        finally:
            self.task = None
        if self.transport is not None and not self.transport.is_closing():
            self.transport.resume_reading()

    def _fail(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_BAD_REQUEST)
            self.transport.close()

    @property
    def idle(self) -> bool:
        return self.task is None and not self.pending


class HttpServer:
    def __init__(self, handler: Handler, precheck: Precheck, max_body_bytes: int, max_connections: int):
        self.handler = handler
        self.precheck = precheck
        self.max_body_bytes = max_body_bytes
        self.max_connections = max_connections
        self.connections: set[HttpConnection] = set()
        self.servers: list[asyncio.AbstractServer] = []
        self.stopping = False

    def admit(self, conn: HttpConnection) -> bool:
        if self.stopping or len(self.connections) >= self.max_connections:
            return False
        self.connections.add(conn)
        return True

    def release(self, conn: HttpConnection) -> None:
        self.connections.discard(conn)

    async def start(self, sockets: list[socket.socket]) -> None:
        loop = asyncio.get_running_loop()
        for sock in sockets:
            self.servers.append(await loop.create_server(lambda: HttpConnection(self), sock=sock))

    async def stop(self, grace_s: float) -> None:
        """Stop accepting, close idle keep-alive connections, answer what is in flight (up to grace_s)."""
        self.stopping = True
        for server in self.servers:
            server.close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_s
        while True:
            for conn in list(self.connections):
                if conn.idle and conn.transport is not None:
                    conn.transport.close()
            busy = [c for c in self.connections if not c.idle]
            if not busy or loop.time() > deadline:
                break
            await asyncio.sleep(0.02)
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

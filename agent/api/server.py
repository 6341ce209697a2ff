"""ApiComponent: uvicorn serving the local API in a supervised thread with its own event loop.

We bind the socket ourselves and hand it to uvicorn: a busy port then raises OSError here,
with the address in the message, instead of uvicorn's sys.exit() inside our thread. uvicorn
installs no signal handlers outside the main thread, so the agent's own SIGTERM handling
stays in charge; `stop` makes the server finish the requests in flight (their records are
committed or refused, never left half way) and close.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import ipaddress
import logging
import socket
import threading
from collections.abc import Callable, Sequence
from typing import Any

import uvicorn
import uvloop
from fastapi import APIRouter
from starlette.types import ASGIApp

from agent.api import guard
from agent.api.app import build_app
from agent.api.guard import GuardedHttpToolsProtocol, Limits
from agent.api.ingest import FastIngest
from agent.api.ingest_core import IngestCore, local_commit
from agent.api.workers import EncodedSink, WorkerPool
from agent.config.core import ApiSection
from agent.config.model import AgentConfig
from core.auth import load_token
from core.interfaces import Component, Health, RecordSink, StatusProvider

log = logging.getLogger(__name__)

STOP_POLL_S = 0.1
GRACEFUL_S = 10
MAX_CONCURRENCY = 1024


def check_listen(api: ApiSection) -> list[tuple[int, str]]:
    """Resolve [api] listen to (family, address) pairs; refuse non-loopback unless allowed.

    The config validator already refuses such a value, but a config built in code can skip
    validation, and a host *name* such as "127.example.net" passes a textual check while
    resolving anywhere: the component checks the addresses it will really bind.
    """
    try:
        infos = socket.getaddrinfo(api.host, api.port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise ValueError(f"[api] listen = {api.listen!r}: cannot resolve {api.host!r}: {exc.strerror}") from None
    out: list[tuple[int, str]] = []
    for family, _, _, _, addr in infos:
        ip = ipaddress.ip_address(str(addr[0]).split("%")[0])
        if not ip.is_loopback and not api.allow_non_loopback:
            raise ValueError(
                f"[api] listen = {api.listen!r} resolves to {ip}, which is not loopback; the ingest "
                "API is for the branch PC only (set [api] allow_non_loopback = true to override)"
            )
        if (family, str(addr[0])) not in out:
            out.append((family, str(addr[0])))
    return out


def bind(api: ApiSection) -> list[socket.socket]:
    """Listening sockets for every address of [api] listen ("localhost" is often 127.0.0.1 and ::1).

    An address family the host lacks (IPv6 switched off) is skipped when another address
    binds; any other failure, a busy port above all, is an error naming the address.
    """
    socks: list[socket.socket] = []
    skipped: list[str] = []
    try:
        for family, host in check_listen(api):
            sock = socket.socket(family, socket.SOCK_STREAM)
            try:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                if family == socket.AF_INET6:
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                sock.bind((host, api.port))
            except OSError as exc:
                sock.close()
                if exc.errno in (errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT):
                    skipped.append(f"{host} ({exc.strerror})")
                    continue
                raise OSError(exc.errno, f"[api] listen: cannot bind {host} port {api.port}: {exc.strerror}") from None
            socks.append(sock)
            sock.listen(1024)
            sock.setblocking(False)
        if not socks:
            raise OSError(
                errno.EADDRNOTAVAIL,
                f"[api] listen: no address of {api.listen!r} can be bound: " + ", ".join(skipped),
            )
    except BaseException:
        for s in socks:
            s.close()
        raise
    if skipped:
        log.warning("api: skipped %s", ", ".join(skipped))
    return socks


def limits(api: ApiSection) -> Limits:
    return Limits(api.head_timeout_s, api.body_timeout_s, api.max_header_bytes, api.max_connections)


def uvicorn_options(api: ApiSection) -> dict[str, Any]:
    """uvicorn.Config keywords, the same in the agent and in its worker processes (picklable)."""
    return {
        "lifespan": "off",
        "log_config": None,
        "access_log": False,
        # httptools, one socket write per answer, deadlines and a connection cap (agent.api.guard)
        "http": functools.partial(GuardedHttpToolsProtocol, limits=limits(api)),
        # Idle after an answer; uvicorn's own timer (agent.api.guard bounds the rest).
        "timeout_keep_alive": api.keepalive_timeout_s,
        "proxy_headers": False,  # loopback clients, no proxy: skip the per-request middleware
        "server_header": False,
        "date_header": False,
        "timeout_graceful_shutdown": GRACEFUL_S,
        # uvicorn answers 503 past this many connections + tasks; the token is checked before a
        # body is read, so only authorised clients can make us hold bodies in memory at all.
        "limit_concurrency": MAX_CONCURRENCY,
        "backlog": 1024,
    }


class ApiComponent(Component):
    name = "api"

    def __init__(
        self,
        config: AgentConfig,
        sink: RecordSink,
        status: StatusProvider,
        metrics_text: Callable[[], bytes],
        routers: Sequence[APIRouter] = (),
        *,
        fast_path: bool = True,
    ):
        """`fast_path=False` serves POST /v1/records through FastAPI (for the overhead benchmark)."""
        self.api = config.api
        check_listen(self.api)  # fail at construction, before the supervisor starts threads
        self.sink = sink
        self.status = status
        self.metrics_text = metrics_text
        self.routers = list(routers)
        self.fast_path = fast_path
        self._server: uvicorn.Server | None = None
        self._pool: WorkerPool | None = None
        self.started = threading.Event()

    def health(self) -> Health:
        pool = self._pool
        if pool is not None:
            return "ok" if self.started.is_set() and pool.healthy else "degraded"
        server = self._server
        return "ok" if server is not None and server.started and not server.should_exit else "down"

    def build(self, token: bytes) -> ASGIApp:
        core = IngestCore(local_commit(self.sink), token, self.api.max_body_bytes, self.api.max_records_per_request)
        app: ASGIApp = build_app(core, self.status, self.metrics_text, self.routers)
        return FastIngest(app, core) if self.fast_path else app

    def run(self, stop: threading.Event) -> None:
        token = load_token(self.api.token_file)
        socks = bind(self.api)
        try:
            with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
                if self.api.effective_workers:
                    runner.run(self._serve_workers(token, socks, stop))
                else:
                    server = uvicorn.Server(uvicorn.Config(self.build(token), **uvicorn_options(self.api)))
                    self._server = server
                    guard.install(server.server_state, limits(self.api))
                    runner.run(self._serve(server, socks, stop))
        finally:
            self._server = None
            self._pool = None
            self.started.clear()
            for s in socks:
                s.close()
            log.info("api stopped")

    async def _serve_workers(self, token: bytes, socks: list[socket.socket], stop: threading.Event) -> None:
        """[api] workers > 0: the worker processes serve HTTP; this loop feeds the buffer and
        answers the requests they forward (agent.api.workers)."""
        core = IngestCore(local_commit(self.sink), token, self.api.max_body_bytes, self.api.max_records_per_request)
        config = {
            "token": token,
            "max_body_bytes": self.api.max_body_bytes,
            "max_records": self.api.max_records_per_request,
            "log_level": logging.getLevelName(logging.getLogger().getEffectiveLevel()),
            "uvicorn": uvicorn_options(self.api),
            "limits": limits(self.api),
        }
        sink = self.sink
        if not isinstance(sink, EncodedSink):
            raise TypeError(f"[api] workers needs a buffer that takes encoded records; {type(sink).__name__} does not")
        app = build_app(core, self.status, self.metrics_text, self.routers)
        pool = WorkerPool(self.api.effective_workers, socks, sink, app, config)
        self._pool = pool
        try:
            await pool.start()
            self.started.set()
            log.info("api listening on %s (%d worker processes%s)", self.api.listen, self.api.effective_workers,
                     ", chosen from this machine's cores and memory" if self.api.workers == "auto" else "")
            await pool.watch(stop)
        finally:
            await pool.stop(GRACEFUL_S)

    async def _serve(self, server: uvicorn.Server, socks: list[socket.socket], stop: threading.Event) -> None:
        async def watch() -> None:
            # The stop Event belongs to another thread; uvicorn itself polls should_exit every
            # 0.1 s, so polling here at the same pace costs nothing extra.
            while not stop.is_set() and not server.should_exit:
                if server.started and not self.started.is_set():
                    self.started.set()
                    log.info("api listening on %s", self.api.listen)
                await asyncio.sleep(STOP_POLL_S)
            server.should_exit = True

        watcher = asyncio.create_task(watch())
        try:
            await server.serve(sockets=socks)
        finally:
            server.should_exit = True
            await watcher
        if not stop.is_set():
            raise RuntimeError("the API server stopped on its own (see the log above)")

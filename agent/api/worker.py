"""An API worker process: HTTP, JSON, validation and CBOR encoding on a core of its own.

Why processes: one CPython process runs its Python on one core, and at one record a POST
the HTTP handling, validation and encoding cost several times what the commit does (see
docs/api.md). So with `[api] workers = N` the agent starts N of these. They share the
agent's listening socket and answer POST /v1/records themselves up to the commit: they
send the validated, encoded records to the agent over a private socketpair, the agent's
one writer thread commits them (group commit, as before), and the 201 goes out only after
the agent says they are on disk. Every other route (status, metrics, OpenAPI, workflows)
is forwarded whole to the agent's own FastAPI app, which holds the state they show.

A worker never outlives the agent: it exits when the socketpair closes (the agent died,
even by SIGKILL) and asks the kernel for SIGTERM when its parent dies. A request in flight
then gets a 503 that says to re-post with the same ids.

    python -m agent.api.worker --ipc-fd N --listen-fd N [--listen-fd N ...] --parent PID
"""

from __future__ import annotations

import argparse
import asyncio
import ctypes
import itertools
import logging
import os
import signal
import socket
import sys
from typing import Any

import uvicorn
import uvloop
from starlette.types import Receive, Scope, Send

from agent.api import guard, ingest_core, metrics
from agent.api.ingest import ClientGone, FastIngest, read_body
from agent.api.ingest_core import IngestCore
from agent.api.ipc import HEADER, FrameProtocol, FrameReader
from agent.logs import setup_logging
from buffer.store import encode_record
from core.interfaces import (
    BufferFull,
    BufferUnavailable,
    RecordConflict,
    RecordInvalid,
    RecordRejected,
)
from wire.records import normalize_records

log = logging.getLogger("agent.api.worker")

FORWARD_TIMEOUT_S = 30.0
COUNTS_EVERY_S = 0.5
PR_SET_PDEATHSIG = 1
REFUSALS: dict[int, type[RecordRejected]] = {
    409: RecordConflict,
    422: RecordInvalid,
    503: BufferUnavailable,
    507: BufferFull,
}
GONE = "the agent process stopped while this request waited for its commit"


class AgentLink:
    """The worker's end of the socketpair: requests out, answers matched to them by number."""

    def __init__(self, on_lost: Any) -> None:
        # Kept, not asked for per request: CPython 3.11's get_running_loop() makes a getpid()
        # system call every time (its fork check), measurable at one record a POST.
        self.loop = asyncio.get_running_loop()
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.ids = itertools.count(1)
        self.protocol = FrameProtocol(self._message, self._lost)
        self.gone = False
        self._on_lost = on_lost
        self.tally: dict[int, list[int]] = {}
        self.outbox: list[tuple[Any, ...]] = []

    def _message(self, msg: tuple[Any, ...]) -> None:
        if msg[0] == "batch":
            for one in msg[2]:
                self._message(one)
            return
        fut = self.pending.pop(msg[1], None)
        if fut is None or fut.done():  # timed out meanwhile: the answer has nobody to go to
            return
        kind = msg[0]
        if kind == "ids":
            fut.set_result(msg[2])
        elif kind == "refused":
            _, _, status, reason, index = msg
            fut.set_exception(REFUSALS.get(status, RecordRejected)(reason, index))
        elif kind == "http":
            fut.set_result(msg[2:])
        else:
            fut.set_exception(RuntimeError(f"unexpected message {kind!r} from the agent"))

    def _lost(self, exc: Exception | None) -> None:
        if self.gone:
            return
        self.gone = True
        log.warning("api worker %d: the agent closed the link (%s); stopping", os.getpid(), exc or "EOF")
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(BufferUnavailable(GONE + "; re-post the records with the same ids"))
        self.pending.clear()
        self._on_lost()

    def call(self, kind: str, *payload: Any) -> tuple[int, asyncio.Future[Any]]:
        if self.gone:
            raise BufferUnavailable("the agent process is not running; re-post the records with the same ids")
        rid = next(self.ids)
        loop = self.loop
        fut: asyncio.Future[Any] = loop.create_future()
        self.pending[rid] = fut
        if not self.outbox:
            loop.call_soon(self._flush)
        self.outbox.append((kind, rid, *payload))
        return rid, fut

    def _flush(self) -> None:
        """Requests that became ready in one turn of the loop leave in one message: one wake-up
        of the agent for all of them."""
        out, self.outbox = self.outbox, []
        if out:
            self.protocol.send(out[0] if len(out) == 1 else ("batch", 0, out))

    async def wait(self, rid: int, fut: asyncio.Future[Any], timeout: float) -> Any:
        loop = self.loop
        timer = loop.call_later(timeout, _expire, fut)
        try:
            return await fut
        finally:
            timer.cancel()
            self.pending.pop(rid, None)

    async def commit(self, records: list[Any]) -> list[str]:
        """IngestCore's commit: validate and encode here, commit in the agent (RecordInvalid raises here)."""
        # No data maps: the agent needs the fields it stores, and the body holds the data
        # (half the pickling cost, on both sides, at 100 records a request).
        items = [(r.id, r.kind, r.at, r.src, r.id_given, r.fingerprint, encode_record(r))
                 for r in normalize_records(records, "agent")]
        rid, fut = self.call("ingest", items)
        return list(await self.wait(rid, fut, ingest_core.COMMIT_TIMEOUT_S))

    def count(self, status: int, records: int) -> None:
        entry = self.tally.get(status)
        if entry is None:
            entry = self.tally[status] = [0, 0]
        entry[0] += 1
        entry[1] += records

    async def send_counts(self) -> None:
        while not self.gone:
            await asyncio.sleep(COUNTS_EVERY_S)
            self.flush_counts()

    def flush_counts(self) -> None:
        if self.tally and not self.gone:
            tally, self.tally = self.tally, {}
            self.protocol.send(("counts", 0, tally))


def _expire(fut: asyncio.Future[Any]) -> None:
    if not fut.done():
        fut.set_exception(TimeoutError())


class Forwarder:
    """ASGI app for every route but POST /v1/records: the agent's own app answers it."""

    def __init__(self, link: AgentLink, max_body_bytes: int):
        self.link = link
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":  # no lifespan (off) and no websockets in this API
            return
        try:
            body = await read_body(receive, self.max_body_bytes)
        except ClientGone:
            return
        if body is None:
            await _answer(send, 413, [(b"content-type", b"text/plain")], b"body too large\n")
            return
        request = {k: scope[k] for k in ("method", "path", "raw_path", "query_string", "http_version", "headers")}
        request["client"] = scope.get("client")  # the status page serves LAN clients only when allowed
        try:
            rid, fut = self.link.call("http", request, body)
            status, headers, out = await self.link.wait(rid, fut, FORWARD_TIMEOUT_S)
        except (BufferUnavailable, TimeoutError) as exc:
            reason = "the agent did not answer in time" if isinstance(exc, TimeoutError) else exc.reason
            await _answer(send, 503, [(b"content-type", b"text/plain")], reason.encode() + b"\n")
            return
        await _answer(send, status, headers, out)


async def _answer(send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes) -> None:
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _read_config(ipc: socket.socket) -> dict[str, Any]:
    """The first message, read before the event loop starts: nothing can be served without it."""
    head = ipc.recv(HEADER.size, socket.MSG_WAITALL)
    if len(head) < HEADER.size:
        raise SystemExit("api worker: the agent closed the link before sending the configuration")
    (n,) = HEADER.unpack(head)
    data = ipc.recv(n, socket.MSG_WAITALL)
    messages = FrameReader().feed(head + data)
    if not messages or messages[0][0] != "config":
        raise SystemExit("api worker: expected the configuration first")
    return dict(messages[0][2])


def _die_with_parent(parent: int) -> None:
    """Linux: SIGTERM when the agent dies, however it dies (prctl PR_SET_PDEATHSIG)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except (OSError, AttributeError):  # not Linux: the closed socketpair still stops us
        pass
    if os.getppid() != parent:  # the agent died before prctl took effect
        raise SystemExit("api worker: the agent is gone")


async def _serve(config: dict[str, Any], ipc: socket.socket, listen: list[socket.socket]) -> None:
    loop = asyncio.get_running_loop()
    server: uvicorn.Server | None = None

    def stop() -> None:
        if server is not None:
            server.should_exit = True

    link = AgentLink(stop)
    await loop.create_unix_connection(lambda: link.protocol, sock=ipc)
    metrics.forward_to(link.count)
    core = IngestCore(link.commit, config["token"], config["max_body_bytes"], config["max_records"])
    app = FastIngest(Forwarder(link, config["max_body_bytes"]), core)
    server = uvicorn.Server(uvicorn.Config(app, **config["uvicorn"]))
    guard.install(server.server_state, config.get("limits") or guard.Limits())
    counts = asyncio.create_task(link.send_counts())

    async def announce() -> None:
        while not server.started and not server.should_exit:
            await asyncio.sleep(0.01)
        if server.started:
            link.protocol.send(("ready", 0, os.getpid()))

    ready = asyncio.create_task(announce())
    try:
        await server.serve(sockets=listen)
    finally:
        ready.cancel()
        counts.cancel()
        link.flush_counts()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m agent.api.worker", description=__doc__.split("\n\n")[0])
    ap.add_argument("--ipc-fd", type=int, required=True)
    ap.add_argument("--listen-fd", type=int, action="append", required=True)
    ap.add_argument("--parent", type=int, required=True)
    args = ap.parse_args(argv)
    _die_with_parent(args.parent)
    ipc = socket.socket(fileno=args.ipc_fd)
    listen = [socket.socket(fileno=fd) for fd in args.listen_fd]
    config = _read_config(ipc)
    setup_logging(config["log_level"])
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_serve(config, ipc, listen))
    return 0


if __name__ == "__main__":
    sys.exit(main())

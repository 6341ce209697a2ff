"""The agent's side of the API worker processes (agent.api.worker): start, feed, restart, stop.

Runs on the API component's event loop. Each worker gets the listening sockets and one end
of a private socketpair. What comes back over it:
- "ingest": records the worker validated and encoded. The buffer's writer thread reads
  the link itself (LinkSource), commits them in its next group and sends the answers right
  after COMMIT, one message per worker per group: no hop through this loop or any other
  thread, which at one record a request cost more than the commit's share;
- "http": any other request, run through the agent's own FastAPI app here;
- "counts": the worker's request counters, added to this process's /metrics.
A worker that dies is started again after a second; five deaths in a minute stop the
component, and the supervisor restarts it with its own backoff.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol, runtime_checkable

from starlette.types import ASGIApp, Message

from agent.api import metrics
from agent.api.ipc import FrameError, FrameReader, pack
from buffer.writer import Encoded, IngestOp, OpSource
from core.interfaces import RecordRejected
from wire.records import NormRecord

log = logging.getLogger(__name__)

START_TIMEOUT_S = 60.0
RESTART_DELAY_S = 1.0
MAX_DEATHS, DEATH_WINDOW_S = 5, 60.0
SEND_TIMEOUT_S = 10.0
POLL_S = 0.1
RECV_BYTES = 1 << 18


@runtime_checkable
class EncodedSink(Protocol):
    """What the pool needs of the buffer (buffer.store.Store)."""

    def attach_source(self, source: OpSource) -> None: ...

    def detach_source(self, source: OpSource) -> None: ...

    def add_group_hook(self, fn: Callable[[], None]) -> None: ...

    def remove_group_hook(self, fn: Callable[[], None]) -> None: ...


class Worker:
    """One worker process and the agent's end of its socketpair."""

    def __init__(self, index: int, proc: subprocess.Popen[bytes], sock: socket.socket):
        self.index = index
        self.proc = proc
        self.sock = sock
        # Sends come from two threads (this loop and the buffer's writer), so they go through a
        # second socket object on the same socketpair end, under a lock, never through asyncio.
        self.out = socket.socket(fileno=os.dup(sock.fileno()))
        self.out.settimeout(SEND_TIMEOUT_S)
        # The same end once more, without a timeout: a socket with one poll()s before every
        # send, a syscall per group for nothing while the buffer has room.
        self.out_now = socket.socket(fileno=os.dup(sock.fileno()))
        self.out_now.setblocking(False)
        self.lock = threading.Lock()
        self.answers: list[tuple[Any, ...]] = []  # from the writer thread, sent once per group
        self.source: LinkSource | None = None
        self.ready = False
        self.lost = False

    def send(self, message: tuple[Any, ...]) -> None:
        frame = pack(message)
        try:
            with self.lock:
                # Most answers fit the socket buffer at once: one send, no poll() before it
                # (a socket with a timeout polls first). Only a full buffer takes the slow way.
                try:
                    sent = self.out_now.send(frame)
                except BlockingIOError:
                    sent = 0
                if sent < len(frame):
                    self.out.sendall(memoryview(frame)[sent:])
        except OSError as exc:  # the worker died: its client's connection died with it
            log.debug("api worker %d: answer not sent: %s", self.index, exc)

    def answer(self, rid: int, result: list[str] | None, exc: BaseException | None) -> None:
        """Runs in the buffer's writer thread, right after COMMIT (or the refusal); the answers
        of one group leave together in flush()."""
        if exc is None:
            answer: tuple[Any, ...] = ("ids", rid, result)
        elif isinstance(exc, RecordRejected):
            answer = ("refused", rid, exc.status, exc.reason, exc.index)
        else:
            log.error("ingest from api worker %d failed", self.index, exc_info=exc)
            answer = ("refused", rid, 500, "internal error; see the agent's log", None)
        self.answers.append(answer)

    def flush(self) -> None:
        """Writer thread, end of a group: one message for all of this worker's answers."""
        if self.answers:
            answers, self.answers = self.answers, []
            self.send(answers[0] if len(answers) == 1 else ("batch", 0, answers))

    def close(self) -> None:
        """Our sending side only: the link itself is closed by the buffer's writer thread once
        it stops reading it (LinkSource.close), so its number is never reused while watched."""
        self.out.close()
        self.out_now.close()


class LinkAnswer:
    """The outcome of one worker request (buffer.writer.Outcome): queues its answer on the
    Worker when the writer resolves it. Not a concurrent Future: nobody waits on it in this
    process, and a Future's lock, condition and callbacks cost more per request here than
    the request's share of the commit (measured, docs/benchmarks.md)."""

    __slots__ = ("worker", "rid", "finished")

    def __init__(self, worker: Worker, rid: int):
        self.worker = worker
        self.rid = rid
        self.finished = False

    def done(self) -> bool:
        return self.finished

    def set_result(self, result: list[str]) -> None:
        self.finished = True
        self.worker.answer(self.rid, result, None)

    def set_exception(self, exception: BaseException) -> None:
        self.finished = True
        self.worker.answer(self.rid, None, exception)


class LinkSource:
    """A worker link as the buffer's writer thread reads it (buffer.writer.OpSource).

    Ingest requests become the writer's operations right there, with no hop through the
    event loop; their answers are queued on the Worker and leave once per group. The rare
    other messages (forwarded HTTP, counters, ready) go to the pool on its event loop.
    """

    def __init__(self, worker: Worker, pool: WorkerPool, loop: asyncio.AbstractEventLoop):
        self.worker = worker
        self.pool = pool
        self.loop = loop
        self.fd = worker.sock.fileno()
        self.reader = FrameReader()
        self.closed = False

    def fileno(self) -> int:
        return self.fd

    def read_ops(self) -> list[IngestOp] | None:
        ops: list[IngestOp] = []
        while True:
            try:
                data = self.worker.sock.recv(RECV_BYTES)
            except BlockingIOError:
                return ops
            except OSError as exc:
                return self._gone(ops, exc)
            if not data:
                return self._gone(ops, None)
            try:
                messages = self.reader.feed(data)
            except FrameError as exc:
                return self._gone([], exc)
            for message in messages:
                self._take(message, ops)
            if len(data) < RECV_BYTES:  # the socket is drained: skip the recv that says so
                return ops

    def _take(self, msg: tuple[Any, ...], ops: list[IngestOp]) -> None:
        kind = msg[0]
        if kind == "batch":
            for one in msg[2]:
                self._take(one, ops)
        elif kind == "ingest":
            rid, worker = msg[1], self.worker
            new, rec = tuple.__new__, NormRecord  # tuple.__new__: a third of NormRecord(...)'s cost
            ops.append(IngestOp([Encoded(new(rec, (i, k, at, src, None, given, fp)), body)
                                 for i, k, at, src, given, fp, body in msg[2]], LinkAnswer(worker, rid)))
        else:
            self._to_loop(self.pool._message, self.worker, msg)

    def _gone(self, ops: list[IngestOp], exc: Exception | None) -> list[IngestOp] | None:
        if not self.closed:
            self.closed = True
            self._to_loop(self.pool._lost, self.worker, exc)
        return ops or None  # what arrived before the end is still committed and answered

    def _to_loop(self, fn: Callable[..., None], *args: Any) -> None:
        try:
            self.loop.call_soon_threadsafe(fn, *args)
        except RuntimeError:  # the loop is closed: the API is stopping anyway
            pass

    def close(self) -> None:
        self.worker.sock.close()


async def call_app(app: ASGIApp, request: dict[str, Any], body: bytes) -> tuple[int, list[Any], bytes]:
    """One forwarded request through the agent's ASGI app, the answer collected whole."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "http",
        "root_path": "",
        "client": None,
        "server": None,
        "state": {},
        # Collected whole: a server-sent-events route ends after its first events (agent.page.routes).
        "extensions": {"coopagent.forwarded": {}},
        **request,
    }
    delivered = False
    finished = asyncio.Event()
    status, headers, chunks = 500, [], []

    async def receive() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        await finished.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        nonlocal status, headers
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
        elif message["type"] == "http.response.body":
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                finished.set()

    await app(scope, receive, send)
    finished.set()
    return status, headers, b"".join(chunks)


class WorkerPool:
    def __init__(self, count: int, listen: list[socket.socket], sink: EncodedSink, app: ASGIApp,
                 config: dict[str, Any]):
        self.count = count
        self.listen = listen
        self.sink = sink
        self.app = app
        self.config = config
        self.workers: dict[int, Worker] = {}
        self.deaths: deque[float] = deque()
        self.tasks: set[asyncio.Task[None]] = set()

    @property
    def healthy(self) -> bool:
        return len(self.workers) == self.count and all(
            w.ready and not w.lost and w.proc.poll() is None for w in self.workers.values()
        )

    # -- lifecycle ----------------------------------------------------------------
    def _flush_all(self) -> None:
        for w in list(self.workers.values()):
            w.flush()

    async def start(self) -> None:
        self.sink.add_group_hook(self._flush_all)
        for index in range(self.count):
            await self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not self.healthy:
            for w in self.workers.values():
                if w.proc.poll() is not None:
                    raise RuntimeError(f"api worker {w.index} exited with code {w.proc.returncode} while "
                                       "starting; see its errors above")
            if time.monotonic() > deadline:
                raise RuntimeError(f"api workers did not start listening within {START_TIMEOUT_S:g} s")
            await asyncio.sleep(0.02)

    async def watch(self, stop: threading.Event) -> None:
        """Until stop: restart a worker that died (after RESTART_DELAY_S), within the death budget."""
        while not stop.is_set():
            await asyncio.sleep(POLL_S)
            for index, w in list(self.workers.items()):
                if w.proc.poll() is None and not w.lost:
                    continue
                if w.proc.poll() is None:  # alive but its link broke: it can serve nothing
                    w.proc.kill()
                code = w.proc.wait()
                now = time.monotonic()
                self.deaths.append(now)
                while self.deaths and now - self.deaths[0] > DEATH_WINDOW_S:
                    self.deaths.popleft()
                if len(self.deaths) >= MAX_DEATHS:
                    raise RuntimeError(f"api workers died {len(self.deaths)} times within {DEATH_WINDOW_S:g} s "
                                       f"(last: worker {index}, exit code {code})")
                log.error("api worker %d (pid %d) exited with code %s; starting it again in %g s",
                          index, w.proc.pid, code, RESTART_DELAY_S)
                self._forget(w)
                del self.workers[index]
                await asyncio.sleep(RESTART_DELAY_S)
                await self._spawn(index)

    async def stop(self, graceful_s: float) -> None:
        """SIGTERM: each worker stops accepting and finishes its requests (their commits still
        come back through here), then exits; SIGKILL after graceful_s."""
        for sock in self.listen:  # our copies: once the workers close theirs, the port is closed
            sock.close()
        for w in self.workers.values():
            if w.proc.poll() is None:
                w.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + graceful_s
        while any(w.proc.poll() is None for w in self.workers.values()) and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        for w in self.workers.values():
            if w.proc.poll() is None:
                log.warning("api worker %d did not stop within %g s; killing it", w.index, graceful_s)
                w.proc.kill()
                w.proc.wait()
            self._forget(w)
        self.workers.clear()
        self.sink.remove_group_hook(self._flush_all)

    def _forget(self, worker: Worker) -> None:
        if worker.source is not None:
            self.sink.detach_source(worker.source)  # the writer thread closes the link
        worker.close()

    async def _spawn(self, index: int) -> None:
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        fds = [s.fileno() for s in self.listen]
        args = [sys.executable, "-m", "agent.api.worker", "--ipc-fd", str(theirs.fileno()),
                "--parent", str(os.getpid())]
        for fd in fds:
            args += ["--listen-fd", str(fd)]
        try:
            # Own session: a Ctrl-C in the technician's terminal reaches the agent, which stops
            # the workers in order, and not the workers directly.
            proc = subprocess.Popen(args, pass_fds=(theirs.fileno(), *fds), start_new_session=True)
        except BaseException:
            mine.close()
            raise
        finally:
            theirs.close()
        mine.sendall(pack(("config", 0, self.config)))
        mine.setblocking(False)
        worker = Worker(index, proc, mine)
        worker.source = LinkSource(worker, self, asyncio.get_running_loop())
        self.sink.attach_source(worker.source)
        self.workers[index] = worker
        log.info("api worker %d started (pid %d)", index, proc.pid)

    # -- messages -----------------------------------------------------------------
    def _message(self, worker: Worker, msg: tuple[Any, ...]) -> None:
        kind, rid = msg[0], msg[1]
        if kind == "http":
            task = asyncio.get_running_loop().create_task(self._forward(worker, rid, msg[2], msg[3]))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif kind == "counts":
            metrics.apply(msg[2])
        elif kind == "ready":
            worker.ready = True
        else:
            log.error("api worker %d sent an unknown message %r", worker.index, kind)

    async def _forward(self, worker: Worker, rid: int, request: dict[str, Any], body: bytes) -> None:
        try:
            status, headers, out = await call_app(self.app, request, body)
        except Exception:
            log.exception("forwarded request %s %s failed", request.get("method"), request.get("path"))
            status, headers, out = 500, [(b"content-type", b"text/plain")], b"internal error\n"
        worker.send(("http", rid, status, headers, out))

    def _lost(self, worker: Worker, exc: Exception | None) -> None:
        if not worker.lost:
            worker.lost = True
            if exc is not None:
                log.error("api worker %d: link broken: %s", worker.index, exc)

"""check_batch in a second process, so it runs beside the worker's storing instead of under its GIL.

Why: the receiver's worker thread was the drain's bottleneck (one core saturated, and
paho's network thread on the same GIL). Two thirds of its time were check_batch: CBOR
decoding, the determinism check, the record checks, the signature. These need nothing
but the message and the device's public keys, so a child process does them while the
worker stores earlier batches, commits and acks. Every check still runs, exactly as
check_batch does it; only the place changes. Chain checks, storage and acks stay in the
worker, in message order.

paho's network thread submits each batch as it arrives (before queueing it for the
worker), so the child works ahead of the worker; the worker collects the verdicts in the
same order. The child may block writing verdicts the worker has not read yet, and paho's
thread may block writing to a busy child: both are backpressure like the bounded inbox,
and never a cycle, because the worker only ever waits for the oldest verdict, whose
request is already written.

If the child cannot be started or dies, the batches it has not answered are checked in
the worker instead (the old single-process path), and a new child is started for later
batches, at most every RESTART_AFTER_S. On a single-core machine the child would only add
copying, so everything is checked in the worker.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import pickle
import signal
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receiver import profiling
from wire.batches import Batch, Rejected, check_batch

log = logging.getLogger(__name__)

PIPE_BYTES = 1 << 20  # several whole batches (256 KiB at most by default) fit: fewer wake-ups
START_TIMEOUT_S = 60.0
RESTART_AFTER_S = 5.0  # a child that keeps dying must not cost a spawn per batch

Verdict = Batch | Rejected | Exception  # Exception: a bug in checking; the caller treats it as one


@dataclass(frozen=True)
class Job:
    dev: str
    cose: bytes
    keys: Mapping[bytes, Ed25519PublicKey]


def check(dev: str, cose: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> Verdict:
    """check_batch, with its refusal or failure returned instead of raised (the same in both processes)."""
    try:
        return check_batch(cose, dev, keys)
    except Rejected as exc:
        return exc
    except Exception as exc:
        return RuntimeError(f"{type(exc).__name__}: {exc}")


def _raw(keys: Mapping[bytes, Ed25519PublicKey]) -> dict[bytes, bytes]:
    return {kid: k.public_bytes(Encoding.Raw, PublicFormat.Raw) for kid, k in keys.items()}


def _serve(requests: Connection, replies: Connection) -> None:
    """The child's loop: (dev, {kid: raw key}) and the COSE bytes in; a pickled verdict out."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C stops the parent, which then closes our pipe
    profiling.install_child("verifier")  # only with COOP_RECEIVER_PROFILE set (bench/bench_centre_cpu.py)
    _grow(requests)
    _grow(replies)
    cache: dict[bytes, Ed25519PublicKey] = {}
    replies.send_bytes(b"ready")
    while True:
        try:
            dev, raw_keys = pickle.loads(requests.recv_bytes())  # noqa: S301 (our own parent, a private pipe)
            cose = requests.recv_bytes()
        except (EOFError, OSError):
            return  # the parent closed the pipe or died
        keys = {}
        for kid, raw in raw_keys.items():
            key = cache.get(raw)
            if key is None:
                key = cache[raw] = Ed25519PublicKey.from_public_bytes(raw)
            keys[kid] = key
        verdict = check(dev, cose, keys)
        if isinstance(verdict, Batch):
            verdict.cose = b""  # the parent has the bytes: do not send ~100 KB back
        try:
            replies.send_bytes(pickle.dumps(verdict, protocol=pickle.HIGHEST_PROTOCOL))
        except OSError:
            return  # the parent stopped reading: it is stopping


def _grow(conn: Connection) -> None:
    try:
        import fcntl

        fcntl.fcntl(conn.fileno(), fcntl.F_SETPIPE_SZ, PIPE_BYTES)
    except (ImportError, AttributeError, OSError):
        pass  # not Linux, or above pipe-max-size: the default size only costs an extra wake-up


@dataclass(eq=False)
class _Child:
    proc: multiprocessing.process.BaseProcess
    requests: Connection  # written by paho's thread only
    replies: Connection  # read by the worker only
    lost: bool = False


@dataclass(eq=False)
class Ticket:
    """A batch sent to a child: the worker redeems it, in submission order, for the verdict."""

    job: Job
    child: _Child | None
    verdict: Verdict | None = field(default=None, repr=False)


class Verifier:
    """submit() from paho's thread, verdict() from the worker in the same order, stop() then close()."""

    def __init__(self, use_process: bool | None = None):
        self.use_process = (os.cpu_count() or 1) > 1 if use_process is None else use_process
        self._lock = threading.Lock()
        self._child: _Child | None = None
        self._start_at = 0.0  # monotonic time before which no new child is started
        self._stopped = False
        self._retired: _Child | None = None  # stopped; its request pipe is closed once paho's thread is

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start the child (spawned: forking a process with paho's thread running is not safe)."""
        if not self.use_process or self._stopped:
            return
        ctx = multiprocessing.get_context("spawn")
        req_r, req_w = ctx.Pipe(duplex=False)
        rep_r, rep_w = ctx.Pipe(duplex=False)
        proc = ctx.Process(target=_serve, args=(req_r, rep_w), name="coop-receiver-verifier", daemon=True)
        try:
            proc.start()
            req_r.close()
            rep_w.close()
            _grow(req_w)
            if not rep_r.poll(START_TIMEOUT_S) or rep_r.recv_bytes() != b"ready":
                raise OSError(f"no answer within {START_TIMEOUT_S} s")
        except (OSError, EOFError) as exc:
            log.error("cannot start the verifier process (%s); checking batches in the worker thread", exc)
            for c in (req_w, rep_r):
                c.close()
            if proc.is_alive():
                proc.kill()
            proc.join(5)
            self._start_at = time.monotonic() + RESTART_AFTER_S
            return
        with self._lock:
            self._child = _Child(proc, req_w, rep_r)
        log.info("verifier process %d started", proc.pid)

    def stop(self) -> None:
        """End the child (after the worker stopped): a paho thread blocked writing to it gets EPIPE."""
        with self._lock:
            self._stopped = True
            child, self._child = self._child, None
        if child is not None:
            child.lost = True
            child.replies.close()
            child.proc.terminate()
            child.proc.join(5)
            if child.proc.is_alive():
                child.proc.kill()
                child.proc.join(5)
            self._retired = child

    def close(self) -> None:
        """After paho's thread stopped: close the request pipe it wrote to."""
        child = self._retired
        if child is not None:
            child.requests.close()
            self._retired = None

    # -- paho's thread ------------------------------------------------------------------

    def submit(self, job: Job) -> Ticket:
        with self._lock:
            child = self._child
            if child is not None and child.lost:
                self._child = None
                child.requests.close()  # only this thread writes it
                if child.proc.is_alive():
                    child.proc.kill()
                child.proc.join(5)
                child = None
            want = child is None and self.use_process and not self._stopped and time.monotonic() >= self._start_at
        if want:
            self.start()
            with self._lock:
                child = self._child
        if child is None:
            return Ticket(job, None)
        try:
            child.requests.send_bytes(pickle.dumps((job.dev, _raw(job.keys))))
            child.requests.send_bytes(job.cose)
        except OSError as exc:
            self._lose(child, exc)
            return Ticket(job, None)
        return Ticket(job, child)

    # -- the worker ---------------------------------------------------------------------

    def verdict(self, ticket: Ticket) -> Verdict:
        """The verdict on a ticket (kept on it, for a group that is retried); in submission order."""
        if ticket.verdict is None:
            ticket.verdict = self._redeem(ticket)
        return ticket.verdict

    def _redeem(self, ticket: Ticket) -> Verdict:
        job, child = ticket.job, ticket.child
        if child is not None and not child.replies.closed:
            try:
                verdict: Any = pickle.loads(child.replies.recv_bytes())  # noqa: S301 (our own child, a private pipe)
            except Exception as exc:  # EOF, a broken pipe, or bytes that do not unpickle: never guess
                self._lose(child, exc)
                child.replies.close()  # only this thread reads it; its later tickets are checked here
            else:
                if isinstance(verdict, Batch):
                    verdict.cose = job.cose
                return verdict  # type: ignore[no-any-return]
        return check(job.dev, job.cose, job.keys)

    def _lose(self, child: _Child, exc: BaseException) -> None:
        with self._lock:
            if child.lost:
                return
            child.lost = True
            self._start_at = time.monotonic() + RESTART_AFTER_S
        log.error(
            "verifier process lost (%s, exit code %s); checking in the worker until it is restarted",
            exc,
            child.proc.exitcode,
        )

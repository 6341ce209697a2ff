"""The buffer's one writer thread: group commit of ingests, sealing, acks and bookkeeping.

Exactly one connection ever writes (SQLite 3.40, as shipped with Debian 12, has a WAL-reset
corruption bug that needs two writers). Every caller hands an operation to this thread and
waits on a Future; the thread drains whatever is queued, applies it in ONE transaction and
resolves the futures after COMMIT, so 8 concurrent single-record requests cost one fsync,
not eight. Sealing happens inside the same transaction that made it due, so a batch and
the records it covers are committed together, and a crash before COMMIT leaves no batch
at all: the same records are sealed again, under the same seq, before anything is sent.
"""

from __future__ import annotations

import logging
import os
import queue
import selectors
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

from buffer.schema import migrate
from buffer.sealing import COSE_OVERHEAD, batch_header_size, seal
from core.interfaces import BufferFull, BufferUnavailable, RecordConflict, RecordInvalid, RecordRejected
from wire.cose import Signer
from wire.records import NormRecord

log = logging.getLogger(__name__)

MAX_OPS_PER_GROUP = 2000


class _Nothing:
    """_next_nowait's "nothing waiting" (None is already the stop sentinel)."""


_NOTHING = _Nothing()
_WAKE = _Nothing()  # put on the queue by attach(): leave a blocking get() to watch the sources too
SOFT_FULL_RATIO = 0.9  # ingest stops at 90% of max_db_mb so sealing and acks still have room


@dataclass(slots=True)
class Encoded:
    """A normalized record with its deterministic CBOR body, encoded by the caller's thread."""

    rec: NormRecord
    body: bytes


class Outcome(Protocol):
    """Where the writer puts an operation's result: a concurrent Future, or for an API worker's
    request a lighter object that queues the answer directly (agent.api.workers.LinkAnswer).
    The writer thread is the only one that resolves it, once."""

    def done(self) -> bool: ...

    def set_result(self, result: Any) -> None: ...

    def set_exception(self, exception: BaseException) -> None: ...


@dataclass(slots=True)
class IngestOp:
    records: list[Encoded]
    future: Outcome = field(default_factory=Future)


@dataclass
class CallOp:
    """Any other write, run in the group's transaction under a savepoint of its own."""

    fn: Callable[[WriterTxn], Any]
    future: Future[Any] = field(default_factory=Future)


@dataclass
class SealOptions:
    device: str
    batch_max_records: int
    batch_max_age_s: float
    max_payload_bytes: int
    max_db_bytes: int  # 0 = no cap
    batch_min_age_s: float = 0.0  # seal this early when the uplink is idle (0: always wait max age)
    agent_version: str = ""  # noted in agent_versions at every open ("" notes nothing)


class OpSource(Protocol):
    """Operations arriving on a socket that the writer thread reads itself (the API worker
    links): no hop through another thread, whose wake-up and GIL hand-off would cost more
    than the commit's share at one record a request."""

    def fileno(self) -> int: ...

    def read_ops(self) -> list[IngestOp] | None:
        """What can be read now without blocking; None when the source has closed."""
        ...

    def close(self) -> None:
        """Called by the writer thread once it no longer watches the source (detached or closed):
        the socket is closed only then, so its number cannot be reused while still watched."""
        ...


def open_connection(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    # FULL, not NORMAL: in WAL mode NORMAL may roll back a committed transaction on power
    # loss, and the API has already answered 201 for it.
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute("PRAGMA foreign_keys=ON")
    return conn


class WriterTxn:
    """What a CallOp may do inside the writer's transaction."""

    def __init__(self, writer: Writer):
        self.writer = writer
        self.conn = writer.conn

    def insert_records(self, records: list[Encoded]) -> list[str]:
        return self.writer._insert_checked(records)

    def meta(self, key: str) -> Any:
        return self.writer._meta(key)

    def set_meta(self, key: str, value: Any) -> None:
        self.conn.execute("UPDATE meta SET value=? WHERE key=?", (value, key))


class Writer(threading.Thread):
    def __init__(self, path: Path, signer: Signer, opts: SealOptions,
                 on_committed: Callable[[list[Encoded]], None] | None = None):
        super().__init__(name="buffer-writer", daemon=True)
        self.path = path
        self.signer = signer
        self.opts = opts
        self.on_committed = on_committed
        self.q: queue.SimpleQueue[IngestOp | CallOp | _Nothing | None] = queue.SimpleQueue()
        self.conn = open_connection(path)
        migrate(self.conn)
        if opts.agent_version:
            now = int(time.time() * 1000)
            self.conn.execute("INSERT INTO agent_versions VALUES (?, ?, ?) "
                              "ON CONFLICT(version) DO UPDATE SET last_ms = excluded.last_ms",
                              (opts.agent_version, now, now))
        self.page_size = int(self.conn.execute("PRAGMA page_size").fetchone()[0])
        if opts.max_db_bytes:
            self.conn.execute(f"PRAGMA max_page_count = {max(1, opts.max_db_bytes // self.page_size)}")
        self.unsealed = int(self.conn.execute(
            "SELECT count(*) FROM records WHERE rowid > (SELECT value FROM meta WHERE key='sealed_upto_rowid')"
        ).fetchone()[0])
        self.oldest_unsealed = time.monotonic() if self.unsealed else None
        self.body_budget = opts.max_payload_bytes - COSE_OVERHEAD - batch_header_size(opts.device)
        # Sealing writes a whole batch before the bodies it copies are freed: keep room for
        # two, or the buffer could fill up with records it can no longer seal, send or prune.
        self.reserve = max(int(opts.max_db_bytes * (1 - SOFT_FULL_RATIO)), 3 * opts.max_payload_bytes)
        self.soft_limit = opts.max_db_bytes - self.reserve
        self.last_error: str | None = None
        self.on_sealed: Callable[[], None] | None = None  # the uplink's wake-up
        # Called in this thread when a group failed because the disk is full: the disk policy
        # deletes media and returns the op that records it, or None when nothing could go (then
        # the group is refused, 507). buffer.diskpolicy.DiskPolicy.on_disk_full.
        self.on_disk_full: Callable[[], CallOp | None] | None = None
        # Called in this thread once a group's futures are all resolved: the API worker links
        # send the group's answers in one message each, not one per request.
        self.after_group: list[Callable[[], None]] = []
        # True when the uplink is connected with nothing outstanding: then a small batch now
        # beats a full one in 2 s (latency); under load or offline batches still fill up.
        self.idle_hint: Callable[[], bool] = lambda: False
        self._sealed_in_group = 0
        self.full = False
        self.accepting = False  # a plain flag: Thread.is_alive() takes a lock on every request
        self._pending_committed: list[Encoded] = []
        # Op sources: read by this thread beside its queue (see OpSource). With any attached,
        # put() also writes a byte to a pipe so one select() waits for both.
        self._sources: dict[int, OpSource] = {}
        self._source_changes: queue.SimpleQueue[tuple[bool, OpSource]] = queue.SimpleQueue()
        self._source_ops: list[IngestOp] = []
        self._selector: selectors.BaseSelector | None = None
        self._wake_r, self._wake_w = os.pipe()
        os.set_blocking(self._wake_r, False)
        os.set_blocking(self._wake_w, False)
        self._use_wake = False
        # The pipe is closed by this thread when it ends, while other threads may still put():
        # without the flag a late wake-up would fail with EBADF, or write into whatever file
        # has since been given the same number.
        self._wake_lock = threading.Lock()
        self._wake_closed = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> None:
        self.accepting = True
        super().start()

    def stop(self) -> None:
        """Seal what is left (a clean stop leaves no unsealed records), then close."""
        self.accepting = False
        self.put(None)
        self.join(timeout=30)

    def put(self, op: IngestOp | CallOp | None) -> None:
        self.q.put(op)
        if self._use_wake:
            self._wake()

    def _wake(self) -> None:
        with self._wake_lock:
            if self._wake_closed:  # the thread has ended: nobody is waiting to be woken
                return
            try:
                os.write(self._wake_w, b"\0")
            except BlockingIOError:  # the pipe is full of wake-ups already
                pass

    def attach(self, source: OpSource) -> None:
        """Read `source` in this thread from now on (any thread may call this)."""
        self._use_wake = True
        self._source_changes.put((True, source))
        self._wake()
        self.q.put(_WAKE)  # the thread may be in a plain q.get()

    def detach(self, source: OpSource) -> None:
        self._source_changes.put((False, source))
        self._wake()

    # -- waiting: the queue, and the op sources when there are any ---------------------
    def _next(self, timeout: float | None) -> IngestOp | CallOp | None:
        """The next operation, like q.get(timeout); raises queue.Empty at the timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._use_wake:
                got = self.q.get(timeout=left)
                if not isinstance(got, _Nothing):
                    return got
                continue  # attach() woke us: from now on, wait on the sources too
            op = self._next_nowait()
            if not isinstance(op, _Nothing):
                return op
            if left is not None and left <= 0:
                raise queue.Empty
            self._poll(left)

    def _next_nowait(self) -> IngestOp | CallOp | None | _Nothing:
        if self._source_ops:
            return self._source_ops.pop(0)
        while True:
            try:
                got = self.q.get_nowait()
            except queue.Empty:
                return _NOTHING
            if got is not _WAKE:
                return got

    def _poll(self, timeout: float | None) -> None:
        if self._selector is None:
            self._selector = selectors.DefaultSelector()
            self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        while not self._source_changes.empty():
            add, source = self._source_changes.get_nowait()
            fd = source.fileno()
            if add and fd not in self._sources:
                self._sources[fd] = source
                self._selector.register(fd, selectors.EVENT_READ, source)
            elif not add and self._sources.get(fd) is source:
                del self._sources[fd]
                self._selector.unregister(fd)
                source.close()
        for key, _ in self._selector.select(timeout):
            source = key.data
            if source is None:
                try:
                    os.read(self._wake_r, 4096)
                except BlockingIOError:
                    pass
                continue
            try:
                ops = source.read_ops()
            except Exception:  # a source's bug must not stop the writer: drop the source
                log.exception("op source %r failed; detached", source)
                ops = None
            if ops is None:
                self._selector.unregister(key.fd)
                self._sources.pop(key.fd, None)
                source.close()
            else:
                self._source_ops.extend(ops)

    def run(self) -> None:
        try:
            self._loop()
        finally:
            self.accepting = False
            self.conn.close()
            if self._selector is not None:
                self._selector.close()
            for source in self._sources.values():
                source.close()
            with self._wake_lock:
                self._wake_closed = True
                os.close(self._wake_r)
                os.close(self._wake_w)

    def _loop(self) -> None:
        while True:
            timeout = None
            if self.oldest_unsealed is not None:
                timeout = max(0.0, self.oldest_unsealed + self._max_age() - time.monotonic())
                if self.opts.batch_min_age_s:
                    timeout = min(timeout, self.opts.batch_min_age_s / 2)  # re-check the idle hint
            try:
                first = self._next(timeout)
            except queue.Empty:
                # Even when stop() has begun, its None is on the way: leaving here instead
                # would skip the final seal (and close the pipe under stop()'s put).
                if self._age_due():
                    self._group([], seal_due=True)
                continue
            if first is None:
                self._drain_and_stop()
                break
            ops = [first]
            stop_after = False
            if self._use_wake and not self._source_ops:
                self._poll(0)  # whatever else has arrived joins this group
            while len(ops) < MAX_OPS_PER_GROUP:
                nxt = self._next_nowait()
                if isinstance(nxt, _Nothing):
                    break
                if nxt is None:
                    stop_after = True
                    break
                ops.append(nxt)
            self._group(ops, seal_due=False)
            if stop_after:
                self._drain_and_stop()
                break

    def _drain_and_stop(self) -> None:
        ops: list[IngestOp | CallOp] = []
        while True:
            op = self._next_nowait()
            if isinstance(op, _Nothing):
                break
            if op is not None:
                ops.append(op)
        self._group(ops, seal_due=True)

    # -- one group ---------------------------------------------------------------
    def _group(self, ops: list[IngestOp | CallOp], seal_due: bool) -> None:
        while True:
            retry = self._group_once(ops, seal_due)
            if retry is None:
                return
            # The disk policy freed space (media gave way to records): the same group again,
            # after the op that records what was deleted (its `gap` records).
            ops = [retry, *ops]

    def _group_once(self, ops: list[IngestOp | CallOp], seal_due: bool) -> CallOp | None:
        """One attempt at a group; a CallOp to run first in a retry when the disk was full and
        on_disk_full freed space, else None (every future is resolved)."""
        results: list[tuple[Outcome, Any]] = []
        failures: list[tuple[Outcome, BaseException]] = []
        self._pending_committed = []
        self._sealed_in_group = 0
        try:
            self.conn.execute("BEGIN IMMEDIATE")
            for op in ops:
                if isinstance(op, IngestOp):
                    # All checks run before the one executemany, so a refused request
                    # has written nothing and needs no savepoint.
                    try:
                        if self.opts.max_db_bytes:
                            self._check_soft_full(sum(len(e.body) for e in op.records))
                        results.append((op.future, self._insert_checked(op.records)))
                    except RecordRejected as exc:
                        failures.append((op.future, exc))
                else:
                    self.conn.execute("SAVEPOINT op")
                    try:
                        results.append((op.future, op.fn(WriterTxn(self))))
                        self.conn.execute("RELEASE op")
                    except sqlite3.OperationalError:
                        raise
                    except Exception as exc:  # the op's own failure: undo only its writes
                        self.conn.execute("ROLLBACK TO op")
                        self.conn.execute("RELEASE op")
                        failures.append((op.future, exc))
            if seal_due or self.unsealed >= self.opts.batch_max_records or self._age_due():
                self._seal_all(force=seal_due or self._age_due())
            self.conn.execute("COMMIT")
        except sqlite3.OperationalError as exc:
            self._rollback()
            err: RecordRejected
            if _is_full(exc) and self.on_disk_full is not None:
                retry = self.on_disk_full()
                if retry is not None:
                    log.warning("buffer disk full: media deleted to make room; group of %d operations retried",
                                len(ops))
                    self._reload_counters()
                    return retry
            if _is_full(exc):
                self.full = True
                err = BufferFull(f"the buffer's disk is full ({exc}); nothing of this request was stored; "
                                 "retry when space returns")
            else:
                err = BufferUnavailable(f"buffer write failed: {exc}")
            self.last_error = err.reason
            log.error("buffer group of %d operations rolled back: %s", len(ops), exc)
            self._reload_counters()
            for op in ops:
                if not op.future.done():
                    op.future.set_exception(err)
            self._after_group()
            return None
        self.full = False
        for fut, res in results:
            fut.set_result(res)
        for fut, failure in failures:
            fut.set_exception(failure)
        self._after_group()
        if self.on_committed is not None and self._pending_committed:
            self.on_committed(self._pending_committed)
        if self._sealed_in_group and self.on_sealed is not None:
            self.on_sealed()
        return None

    def _after_group(self) -> None:
        for fn in self.after_group:
            try:
                fn()
            except Exception:  # a hook's bug must not stop the writer
                log.exception("after-group hook %r failed", fn)

    def _rollback(self) -> None:
        try:
            if self.conn.in_transaction:
                self.conn.execute("ROLLBACK")
        except sqlite3.Error as exc:  # pragma: no cover - SQLite rolls back by itself on some errors
            log.warning("rollback: %s", exc)

    def _reload_counters(self) -> None:
        self.unsealed = int(self.conn.execute(
            "SELECT count(*) FROM records WHERE rowid > (SELECT value FROM meta WHERE key='sealed_upto_rowid')"
        ).fetchone()[0])
        if self.unsealed and self.oldest_unsealed is None:
            self.oldest_unsealed = time.monotonic()

    def _max_age(self) -> float:
        if self.opts.batch_min_age_s and self.idle_hint():
            return min(self.opts.batch_min_age_s, self.opts.batch_max_age_s)
        return self.opts.batch_max_age_s

    def _age_due(self) -> bool:
        return self.oldest_unsealed is not None and \
            time.monotonic() - self.oldest_unsealed >= self._max_age()

    def _check_soft_full(self, incoming_bytes: int) -> None:
        if not self.opts.max_db_bytes:
            return
        pages = self.conn.execute("PRAGMA page_count").fetchone()[0] - \
            self.conn.execute("PRAGMA freelist_count").fetchone()[0]
        used = pages * self.page_size + incoming_bytes * 2
        if used > self.soft_limit:
            raise BufferFull(f"the buffer holds {used // 1024} KiB of its [buffer] max_db_mb "
                             f"({self.opts.max_db_bytes // 2**20} MiB, less {self.reserve // 1024} KiB kept for "
                             "sealing); records are refused until the centre acks older batches")

    # -- records -----------------------------------------------------------------
    def _meta(self, key: str) -> Any:
        return self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    def _insert_checked(self, records: list[Encoded]) -> list[str]:
        """Insert new records; an id already stored with the same fingerprint is accepted, not
        stored again; with another fingerprint the whole request is refused (409)."""
        ids = [e.rec.id for e in records]
        given = [e.rec.id for e in records if e.rec.id_given]
        existing: dict[str, bytes] = {}
        for i in range(0, len(given), 500):
            chunk = given[i:i + 500]
            marks = ",".join("?" * len(chunk))
            sql = f"SELECT id, fp FROM records WHERE id IN ({marks})"  # noqa: S608 - only '?' placeholders
            existing.update(self.conn.execute(sql, chunk).fetchall())
        rows = []
        fresh: list[Encoded] = []
        seen: dict[str, bytes] = {}
        for idx, e in enumerate(records):
            r = e.rec
            prior = existing.get(r.id, seen.get(r.id))
            if prior is not None:
                if prior != r.fingerprint:
                    raise RecordConflict(f"id {r.id!r} already exists with different content", idx)
                continue
            if len(e.body) > self.body_budget:
                raise RecordInvalid(f"record is {len(e.body)} bytes encoded; at most {self.body_budget} fit "
                                     "in one batch under [uplink] max_payload_bytes", idx)
            seen[r.id] = r.fingerprint
            rows.append((r.id, r.fingerprint, r.kind, r.at, e.body))
            fresh.append(e)
        if rows:
            self._pending_committed.extend(fresh)
            self.conn.executemany("INSERT INTO records(id, fp, kind, at, body) VALUES (?,?,?,?,?)", rows)
            if self.unsealed == 0:
                self.oldest_unsealed = time.monotonic()
            self.unsealed += len(rows)
        return ids

    # -- sealing -----------------------------------------------------------------
    def _seal_all(self, force: bool) -> None:
        while self.unsealed >= self.opts.batch_max_records or (force and self.unsealed > 0):
            if not self._seal_one():
                break
        if self.unsealed == 0:
            self.oldest_unsealed = None
        elif force:
            self.oldest_unsealed = time.monotonic()

    def _seal_one(self) -> bool:
        upto = int(self._meta("sealed_upto_rowid"))
        rows = self.conn.execute(
            "SELECT rowid, body FROM records WHERE rowid > ? ORDER BY rowid LIMIT ?",
            (upto, self.opts.batch_max_records)).fetchall()
        if not rows:
            self.unsealed = 0
            return False
        bodies: list[bytes] = []
        size = 0
        last_rowid = upto
        for rowid, body in rows:
            if bodies and size + len(body) > self.body_budget:
                break  # close the batch early rather than exceed the payload cap (spec: Size)
            bodies.append(body)
            size += len(body)
            last_rowid = rowid
        seq = int(self._meta("last_seq")) + 1
        prev = bytes(self._meta("last_hash"))
        sealed_ms = time.time_ns() // 1_000_000
        cose, digest = seal(self.signer, self.opts.device, seq, prev, sealed_ms, bodies)
        first_rowid = rows[0][0]
        self.conn.execute(
            "INSERT INTO batches(seq, prev, sealed_ms, first_rowid, last_rowid, n_records, cose) "
            "VALUES (?,?,?,?,?,?,?)", (seq, prev, sealed_ms, first_rowid, last_rowid, len(bodies), cose))
        # The batch now holds the bodies; keep id and fingerprint for idempotent re-posts.
        self.conn.execute("UPDATE records SET body=NULL, seq=? WHERE rowid BETWEEN ? AND ?",
                          (seq, first_rowid, last_rowid))
        self.conn.executemany("UPDATE meta SET value=? WHERE key=?", [
            (seq, "last_seq"), (digest, "last_hash"), (last_rowid, "sealed_upto_rowid")])
        self.unsealed -= len(bodies)
        self._sealed_in_group += 1
        return True


def _is_full(exc: sqlite3.OperationalError) -> bool:
    code = getattr(exc, "sqlite_errorcode", None)
    return code == sqlite3.SQLITE_FULL or "full" in str(exc).lower()

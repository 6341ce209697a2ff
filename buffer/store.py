"""The buffer as the rest of the agent sees it: a RecordSink plus the reads the uplink needs.

Validation and CBOR encoding run on the caller's thread (the API's event loop, a serial
reader), so the single writer thread does nothing but SQL. Reads use per-thread read-only
connections: WAL lets them run beside the writer without blocking it.
"""

from __future__ import annotations

import logging
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import cbor2

from buffer.writer import CallOp, Encoded, IngestOp, OpSource, SealOptions, Writer, WriterTxn
from core.interfaces import BufferUnavailable, RecordListener, StoredRecord
from wire.cose import Signer, dumps_deterministic
from wire.records import NormRecord, normalize_records

log = logging.getLogger(__name__)

Normalizer = Callable[[Sequence[Mapping[str, Any]], str], list[NormRecord]]


def encode_record(r: NormRecord) -> bytes:
    """The record map exactly as it goes into a batch (deterministic CBOR)."""
    return dumps_deterministic({"id": r.id, "kind": r.kind, "at": r.at, "src": r.src, "data": r.data})


class Store:
    def __init__(self, path: Path, signer: Signer, opts: SealOptions,
                 normalize: Normalizer = normalize_records):
        self.path = path
        self.opts = opts
        self.normalize = normalize
        path.parent.mkdir(parents=True, exist_ok=True)
        self._listeners: list[RecordListener] = []
        self._notify_q: queue.SimpleQueue[list[Encoded] | None] = queue.SimpleQueue()
        self.writer = Writer(path, signer, opts, on_committed=self._committed)
        self._local = threading.local()
        self._readers: list[sqlite3.Connection] = []
        self._readers_lock = threading.Lock()
        self._notifier = threading.Thread(target=self._notify_loop, name="buffer-notify", daemon=True)
        self.started = False

    # -- lifecycle ---------------------------------------------------------------
    def start(self) -> Store:
        self.writer.start()
        self._notifier.start()
        self.started = True
        return self

    def stop(self) -> None:
        if not self.started:
            return
        self.started = False
        self.writer.stop()
        self._notify_q.put(None)
        self._notifier.join(timeout=10)

    def close(self) -> None:
        """Close the read connections (after stop(); the uplink still reads while it says goodbye)."""
        self.stop()
        with self._readers_lock:
            for c in self._readers:
                c.close()
            self._readers.clear()

    # -- ingest (RecordSink) -----------------------------------------------------
    def encode(self, records: Sequence[Mapping[str, Any]], default_src: str = "agent") -> list[Encoded]:
        return [Encoded(r, encode_record(r)) for r in self.normalize(records, default_src)]

    def submit_nowait(self, records: Sequence[Mapping[str, Any]], default_src: str = "agent") -> Future[list[str]]:
        """Validation errors raise here, at once; the future carries the commit's outcome."""
        return self.submit_encoded(self.encode(records, default_src))

    def submit_encoded(self, encoded: list[Encoded]) -> Future[list[str]]:
        """Records already normalized and encoded by the caller (the API's worker processes do
        that work on other cores); the future carries the commit's outcome."""
        future: Future[list[str]] = Future()
        if not self.writer.accepting:
            raise BufferUnavailable("the buffer is not running")
        self.writer.put(IngestOp(encoded, future))
        return future

    def attach_source(self, source: OpSource) -> None:
        """Let the writer thread read ingest operations from `source` itself (API worker links)."""
        self.writer.attach(source)

    def detach_source(self, source: OpSource) -> None:
        self.writer.detach(source)

    def add_group_hook(self, fn: Callable[[], None]) -> None:
        """fn runs in the writer thread after each group's futures are resolved."""
        self.writer.after_group.append(fn)

    def remove_group_hook(self, fn: Callable[[], None]) -> None:
        if fn in self.writer.after_group:
            self.writer.after_group.remove(fn)

    def submit(self, records: Sequence[Mapping[str, Any]], timeout: float | None = None,
               default_src: str = "agent") -> list[str]:
        return self.submit_nowait(records, default_src).result(timeout)

    def call(self, fn: Callable[[WriterTxn], Any]) -> Future[Any]:
        op = CallOp(fn)
        if not self.writer.accepting:
            raise BufferUnavailable("the buffer is not running")
        self.writer.put(op)
        return op.future

    # -- listeners ---------------------------------------------------------------
    def add_listener(self, listener: RecordListener) -> None:
        self._listeners.append(listener)

    def _committed(self, records: list[Encoded]) -> None:
        if self._listeners:
            self._notify_q.put(records)

    def _notify_loop(self) -> None:
        while True:
            item = self._notify_q.get()
            if item is None:
                return
            stored: list[StoredRecord] = [
                {"id": e.rec.id, "kind": e.rec.kind, "at": e.rec.at, "src": e.rec.src,
                 # an API worker sends no data (cheaper): decoded here, and only for listeners
                 "data": e.rec.data if e.rec.data is not None else cbor2.loads(e.body)["data"]}
                for e in item]
            for listener in list(self._listeners):
                try:
                    listener(stored)
                except Exception:  # a listener's bug must not stop the others
                    log.exception("record listener %r failed", listener)

    # -- reads ---------------------------------------------------------------------
    def reader(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, isolation_level=None,
                                   check_same_thread=False, timeout=30)
            self._local.conn = conn
            with self._readers_lock:
                self._readers.append(conn)
        return conn

    def meta(self, key: str) -> Any:
        return self.reader().execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()[0]

    def acked_seq(self) -> int:
        return int(self.meta("acked_seq"))

    def last_seq(self) -> int:
        return int(self.meta("last_seq"))

    def agent_versions(self) -> list[dict[str, Any]]:
        """Every agent version that has written this buffer, oldest first."""
        rows = self.reader().execute("SELECT version, first_ms, last_ms FROM agent_versions ORDER BY first_ms")
        return [{"version": v, "first_ms": f, "last_ms": last} for v, f, last in rows]

    def unacked_batches(self, after_seq: int, limit: int) -> list[tuple[int, bytes]]:
        return [(int(s), bytes(c)) for s, c in self.reader().execute(
            "SELECT seq, cose FROM batches WHERE seq > ? AND acked_ms IS NULL ORDER BY seq LIMIT ?",
            (after_seq, limit))]

    def batches_from(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Retained batches from seq on, acked or not (the centre's `resend` may ask for acked ones)."""
        return [(int(s), bytes(c)) for s, c in self.reader().execute(
            "SELECT seq, cose FROM batches WHERE seq >= ? ORDER BY seq LIMIT ?", (seq, limit))]

    def backlog(self) -> dict[str, int]:
        c = self.reader()
        unsealed = c.execute("SELECT count(*) FROM records WHERE rowid > "
                             "(SELECT value FROM meta WHERE key='sealed_upto_rowid')").fetchone()[0]
        n_batches, in_batches = c.execute(
            "SELECT count(*), coalesce(sum(n_records), 0) FROM batches WHERE acked_ms IS NULL").fetchone()
        media_bytes = c.execute("SELECT coalesce(sum(size), 0) FROM media WHERE state='pending'").fetchone()[0]
        return {"records": int(unsealed + in_batches), "batches": int(n_batches), "media_bytes": int(media_bytes)}

    def command_seen(self, command_id: str) -> bool:
        return self.reader().execute("SELECT 1 FROM commands WHERE id=?", (command_id,)).fetchone() is not None

    # -- writes other than ingest ------------------------------------------------
    def ack(self, seq: int) -> Future[int]:
        """Mark every batch up to seq acked; returns how many were newly acked."""
        def op(tx: WriterTxn) -> int:
            last = int(tx.meta("last_seq"))
            if seq > last:
                raise ValueError(f"ack for seq {seq}, but the newest sealed batch is {last}")
            now = time.time_ns() // 1_000_000
            cur = tx.conn.execute("UPDATE batches SET acked_ms=? WHERE seq <= ? AND acked_ms IS NULL", (now, seq))
            if seq > int(tx.meta("acked_seq")):
                tx.set_meta("acked_seq", seq)
            return int(cur.rowcount)
        return self.call(op)

    def prune(self, retention_s: float) -> Future[int]:
        """Forget batches acked longer ago than retention_s, and their records' ids."""
        def op(tx: WriterTxn) -> int:
            cutoff = time.time_ns() // 1_000_000 - int(retention_s * 1000)
            row = tx.conn.execute("SELECT max(seq), max(last_rowid) FROM batches WHERE acked_ms IS NOT NULL "
                                  "AND acked_ms <= ?", (cutoff,)).fetchone()
            if row[0] is None:
                return 0
            max_seq, max_rowid = row
            # Only a prefix of acked batches goes, so the chain head in meta stays intact.
            n = tx.conn.execute("DELETE FROM batches WHERE seq <= ? AND acked_ms IS NOT NULL", (max_seq,)).rowcount
            tx.conn.execute("DELETE FROM records WHERE rowid <= ? AND seq IS NOT NULL AND seq <= ?",
                            (max_rowid, max_seq))
            return int(n)
        return self.call(op)

    def command_done(self, command_id: str, cmd: str, at: int, result: str) -> Future[bool]:
        """Remember a command id; False if it was already there (carried out at most once)."""
        def op(tx: WriterTxn) -> bool:
            cur = tx.conn.execute("INSERT OR IGNORE INTO commands(id, cmd, at, done_ms, result) VALUES (?,?,?,?,?)",
                                  (command_id, cmd, at, time.time_ns() // 1_000_000, result))
            return bool(cur.rowcount)
        return self.call(op)

    @property
    def full(self) -> bool:
        return self.writer.full

    @property
    def last_error(self) -> str | None:
        return self.writer.last_error

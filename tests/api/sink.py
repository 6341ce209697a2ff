"""A small RecordSink that commits into a real SQLite file: a TEST DOUBLE of our own interface.

It stands in for buffer.store.Store so the API's tests do not depend on sealing and keys;
it does what the contract says a sink does (normalize_records, all-or-nothing group commit
with synchronous=FULL, idempotent ids by fingerprint, 409 on a conflicting id, 507 when
SQLite says the file is full, 503 when stopped), on a real file, in one writer thread.
"""

from __future__ import annotations

import queue
import sqlite3
import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson

from agent.interfaces import BufferFull, BufferUnavailable, RecordConflict, RecordRejected
from agent.records import NormRecord, normalize_records

Op = tuple[list[NormRecord], "Future[list[str]]"]


class SqliteSink:
    def __init__(self, path: Path, max_pages: int = 0):
        self.path = path
        self.conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
        self.conn.execute("PRAGMA journal_mode=WAL")
        self.conn.execute("PRAGMA synchronous=FULL")
        self.conn.execute(
            "CREATE TABLE IF NOT EXISTS records (rowid INTEGER PRIMARY KEY, id TEXT UNIQUE NOT NULL, "
            "fp BLOB NOT NULL, kind TEXT, at INTEGER, src TEXT, data BLOB)"
        )
        if max_pages:
            self.conn.execute(f"PRAGMA max_page_count = {max_pages}")
        self.q: queue.SimpleQueue[Op | None] = queue.SimpleQueue()
        self.groups = 0
        self.thread = threading.Thread(target=self._run, name="test-sink", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join(10)
        self.conn.close()

    def submit_nowait(self, records: Sequence[Mapping[str, Any]]) -> Future[list[str]]:
        norm = normalize_records(records, "agent")
        if not self.thread.is_alive():
            raise BufferUnavailable("the buffer is not running")
        fut: Future[list[str]] = Future()
        self.q.put((norm, fut))
        return fut

    def submit(self, records: Sequence[Mapping[str, Any]], timeout: float | None = None) -> list[str]:
        return self.submit_nowait(records).result(timeout)

    def count(self) -> int:
        with sqlite3.connect(self.path) as c:
            return int(c.execute("SELECT count(*) FROM records").fetchone()[0])

    def _run(self) -> None:
        while True:
            first = self.q.get()
            if first is None:
                return
            ops = [first]
            while True:
                try:
                    nxt = self.q.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    self.q.put(None)
                    break
                ops.append(nxt)
            self._group(ops)

    def _group(self, ops: list[Op]) -> None:
        done: list[tuple[Future[list[str]], list[str] | BaseException]] = []
        self.conn.execute("BEGIN IMMEDIATE")
        try:
            for norm, fut in ops:
                self.conn.execute("SAVEPOINT op")
                try:
                    done.append((fut, self._insert(norm)))
                    self.conn.execute("RELEASE op")
                except RecordRejected as exc:
                    self.conn.execute("ROLLBACK TO op")
                    self.conn.execute("RELEASE op")
                    done.append((fut, exc))
            self.conn.execute("COMMIT")
        except sqlite3.Error as exc:
            if self.conn.in_transaction:  # SQLITE_FULL may already have rolled it back
                self.conn.execute("ROLLBACK")
            err: RecordRejected = (
                BufferFull(f"buffer full: {exc}") if "full" in str(exc) else BufferUnavailable(str(exc))
            )
            done = [(fut, err) for _, fut in ops]
        self.groups += 1
        for fut, outcome in done:
            if isinstance(outcome, BaseException):
                fut.set_exception(outcome)
            else:
                fut.set_result(outcome)

    def _insert(self, norm: list[NormRecord]) -> list[str]:
        given = [r.id for r in norm if r.id_given]
        known: dict[str, bytes] = {}
        if given:
            marks = ",".join("?" * len(given))
            known = dict(self.conn.execute(f"SELECT id, fp FROM records WHERE id IN ({marks})", given))
        rows = []
        for i, r in enumerate(norm):
            fp = known.get(r.id)
            if fp is None:
                rows.append((r.id, r.fingerprint, r.kind, r.at, r.src, orjson.dumps(r.data)))
            elif fp != r.fingerprint:
                raise RecordConflict(f"records[{i}].id: {r.id!r} was stored before with different content", i)
        try:
            self.conn.executemany(
                "INSERT INTO records(id, fp, kind, at, src, data) VALUES (?,?,?,?,?,?)", rows
            )
        except sqlite3.IntegrityError as exc:
            raise RecordConflict(str(exc)) from None
        return [r.id for r in norm]

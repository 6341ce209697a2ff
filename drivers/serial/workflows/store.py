"""Workflow state in its own SQLite file (WAL, synchronous=FULL): stations, sessions, count lines, outbox.

State and the records it implies are written in one transaction: the records go to an
outbox with their ids already chosen, and are handed to the agent's buffer after the commit.
A crash between the two re-sends the same records with the same ids on the next start,
which the buffer treats as an idempotent re-post. So a count line is never lost or doubled.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

SCHEMA = """
CREATE TABLE IF NOT EXISTS stations (
  device TEXT PRIMARY KEY, mode TEXT NOT NULL, doc TEXT, location TEXT, to_loc TEXT,
  multiplier INTEGER NOT NULL DEFAULT 1, pending TEXT, cfg_mode TEXT
);
CREATE TABLE IF NOT EXISTS sessions (
  id TEXT PRIMARY KEY, location TEXT NOT NULL, device TEXT, state TEXT NOT NULL,
  blind INTEGER NOT NULL, recount_of TEXT, opened_at INTEGER NOT NULL, closed_at INTEGER, opened_by TEXT
);
CREATE INDEX IF NOT EXISTS sessions_loc ON sessions(location, state, closed_at);
CREATE TABLE IF NOT EXISTS lines (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, session TEXT NOT NULL, gtin TEXT NOT NULL,
  qty INTEGER, weight_g INTEGER, at INTEGER NOT NULL, record_id TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS lines_session ON lines(session);
CREATE TABLE IF NOT EXISTS outbox (
  seq INTEGER PRIMARY KEY AUTOINCREMENT, record_id TEXT UNIQUE NOT NULL, record TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS rejected (
  record_id TEXT PRIMARY KEY, record TEXT NOT NULL, reason TEXT NOT NULL, at INTEGER NOT NULL
);
"""


class WorkflowStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._lock = threading.RLock()
        self.db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self.db.row_factory = sqlite3.Row
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute("PRAGMA synchronous=FULL")
        self.db.execute("PRAGMA busy_timeout=5000")
        self.db.executescript(SCHEMA)

    def close(self) -> None:
        with self._lock:
            self.db.close()

    @contextmanager
    def tx(self) -> Iterator[sqlite3.Connection]:
        """One immediate transaction; every state change and its outbox rows commit together."""
        with self._lock:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")

    # -- outbox ---------------------------------------------------------------------------------
    @staticmethod
    def enqueue(db: sqlite3.Connection, record: dict[str, Any]) -> None:
        db.execute(
            "INSERT INTO outbox(record_id, record) VALUES (?, ?)",
            (record["id"], json.dumps(record, separators=(",", ":"), sort_keys=True)),
        )

    def pending_records(self, limit: int = 500) -> list[tuple[int, dict[str, Any]]]:
        with self._lock:
            rows = self.db.execute("SELECT seq, record FROM outbox ORDER BY seq LIMIT ?", (limit,)).fetchall()
        return [(int(r["seq"]), json.loads(r["record"])) for r in rows]

    def delivered(self, upto_seq: int) -> None:
        with self.tx() as db:
            db.execute("DELETE FROM outbox WHERE seq <= ?", (upto_seq,))

    def reject(self, seq: int, reason: str, at: int) -> None:
        """Park a record the buffer refuses for good (invalid, conflicting id) so it cannot block
        the ones behind it; kept here as evidence for the technician."""
        with self.tx() as db:
            row = db.execute("SELECT record_id, record FROM outbox WHERE seq=?", (seq,)).fetchone()
            if row is None:
                return
            db.execute(
                "INSERT OR REPLACE INTO rejected(record_id, record, reason, at) VALUES (?, ?, ?, ?)",
                (row["record_id"], row["record"], reason, at),
            )
            db.execute("DELETE FROM outbox WHERE seq=?", (seq,))

    def rejected_count(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT count(*) FROM rejected").fetchone()[0])

    def outbox_size(self) -> int:
        with self._lock:
            return int(self.db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    # -- stations -------------------------------------------------------------------------------
    def station(
        self, db: sqlite3.Connection, device: str, default_mode: str, default_loc: str | None
    ) -> dict[str, Any]:
        """The station's state. Modes switched by command barcodes survive restarts; a new `mode`
        in the config (the technician's intent) replaces the stored one once."""
        row = db.execute("SELECT * FROM stations WHERE device = ?", (device,)).fetchone()
        if row is None:
            db.execute(
                "INSERT INTO stations(device, mode, location, cfg_mode) VALUES (?, ?, ?, ?)",
                (device, default_mode, default_loc, default_mode),
            )
        elif row["cfg_mode"] != default_mode:
            db.execute("UPDATE stations SET mode=?, cfg_mode=? WHERE device=?", (default_mode, default_mode, device))
        row = db.execute("SELECT * FROM stations WHERE device = ?", (device,)).fetchone()
        st = dict(row)
        st["pending"] = json.loads(st["pending"]) if st["pending"] else None
        return st

    @staticmethod
    def save_station(db: sqlite3.Connection, st: dict[str, Any]) -> None:
        db.execute(
            "UPDATE stations SET mode=?, doc=?, location=?, to_loc=?, multiplier=?, pending=? WHERE device=?",
            (
                st["mode"],
                st["doc"],
                st["location"],
                st["to_loc"],
                st["multiplier"],
                json.dumps(st["pending"]) if st["pending"] else None,
                st["device"],
            ),
        )

    def stations_with_pending(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self.db.execute("SELECT device FROM stations WHERE pending IS NOT NULL")]

    # -- sessions -------------------------------------------------------------------------------
    @staticmethod
    def open_session_of(
        db: sqlite3.Connection, *, device: str | None = None, location: str | None = None
    ) -> dict[str, Any] | None:
        if device is not None:
            row = db.execute("SELECT * FROM sessions WHERE device=? AND state='open'", (device,)).fetchone()
        else:
            row = db.execute("SELECT * FROM sessions WHERE location=? AND state='open'", (location,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def last_closed(db: sqlite3.Connection, location: str) -> dict[str, Any] | None:
        row = db.execute(
            "SELECT * FROM sessions WHERE location=? AND state='closed' ORDER BY closed_at DESC, rowid DESC LIMIT 1",
            (location,),
        ).fetchone()
        return dict(row) if row else None

    @staticmethod
    def session(db: sqlite3.Connection, session_id: str) -> dict[str, Any] | None:
        row = db.execute("SELECT * FROM sessions WHERE id=?", (session_id,)).fetchone()
        return dict(row) if row else None

    @staticmethod
    def totals(db: sqlite3.Connection, session_id: str) -> tuple[int, dict[str, dict[str, int]]]:
        """(lines, {gtin: {"lines", "qty" and/or "weight_g"}}): a map, as the count_session kind wants."""
        n = int(db.execute("SELECT count(*) FROM lines WHERE session=?", (session_id,)).fetchone()[0])
        rows = db.execute(
            "SELECT gtin, sum(qty) AS qty, sum(weight_g) AS weight_g, count(*) AS lines "
            "FROM lines WHERE session=? GROUP BY gtin ORDER BY gtin",
            (session_id,),
        ).fetchall()
        totals: dict[str, dict[str, int]] = {}
        for r in rows:
            t = {"lines": int(r["lines"])}
            if r["qty"] is not None:
                t["qty"] = int(r["qty"])
            if r["weight_g"] is not None:
                t["weight_g"] = int(r["weight_g"])
            totals[r["gtin"]] = t
        return n, totals

    def open_sessions(self) -> list[dict[str, Any]]:
        with self._lock:
            rows = self.db.execute("SELECT * FROM sessions WHERE state='open' ORDER BY opened_at").fetchall()
        return [dict(r) for r in rows]

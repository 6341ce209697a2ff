"""The read side of the receiver's database, for the CLI, the tests and the demo.

It never writes, so it can be opened while `coop-receiver run` holds the one writer
connection (WAL lets readers see the last committed state without blocking it).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import cbor2

from receiver.config import ReceiverSection
from receiver.database import Database, open_database
from receiver.db import SqliteDatabase
from receiver.db import StoreMissing as StoreMissing  # re-exported: receiver.cli catches it


class ReceiverStore:
    """Opens the configured database (a ReceiverSection: SQLite or PostgreSQL), or a SQLite file by path."""

    def __init__(self, target: ReceiverSection | Path | str):
        self.conn: Database = (
            open_database(target, writer=False)
            if isinstance(target, ReceiverSection)
            else SqliteDatabase.connect(Path(target), writer=False)
        )

    @classmethod
    def over(cls, conn: Database) -> ReceiverStore:
        """The read side over a connection already open (the web application's); closing it is the caller's."""
        store = cls.__new__(cls)
        store.conn = conn
        return store

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> ReceiverStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _did(self, dev: str) -> int | None:
        row = self.conn.execute("SELECT did FROM devices WHERE dev = ?", (dev,)).fetchone()
        return None if row is None else int(row[0])

    def devices(self) -> list[str]:
        return [r[0] for r in self.conn.execute("SELECT dev FROM devices ORDER BY dev")]

    def records(self, dev: str) -> list[dict[str, Any]]:
        """Every stored record of the device in chain order (seq, then position in its batch).

        The content is read from the signed batch bytes (kept once, as evidence); a record whose id
        was already stored from an earlier batch is not returned again.
        """
        did = self._did(dev)
        if did is None:
            return []
        stored = {(seq, pos) for seq, pos in self.conn.execute("SELECT seq, pos FROM records WHERE did = ?", (did,))}
        out: list[dict[str, Any]] = []
        for seq, cose in self.conn.execute("SELECT seq, cose FROM batches WHERE did = ? ORDER BY seq", (did,)):
            if not cose:
                continue  # dropped by retention (receiver/retention.py): only its seq and hash remain
            payload = cbor2.loads(cbor2.loads(cose).value[2])
            for pos, rec in enumerate(payload["records"]):
                if (seq, pos) in stored:
                    out.append(
                        {
                            "id": rec["id"],
                            "kind": rec["kind"],
                            "at": rec["at"],
                            "src": rec["src"],
                            "data": rec["data"],
                            "seq": seq,
                        }
                    )
        return out

    def record_count(self, dev: str) -> int:
        row = self.conn.execute("SELECT records FROM devices WHERE dev = ?", (dev,)).fetchone()
        return 0 if row is None else int(row[0])

    def batch_bytes(self, dev: str) -> list[tuple[int, bytes]]:
        """(seq, exact COSE bytes) of every stored batch: enough to re-prove the chain independently."""
        return [
            (r[0], r[1])
            for r in self.conn.execute(
                "SELECT b.seq, b.cose FROM batches b JOIN devices d ON d.did = b.did WHERE d.dev = ? ORDER BY b.seq",
                (dev,),
            )
        ]

    def gaps(self, dev: str) -> list[tuple[int, int]]:
        """Missing seq ranges [first, last] between the chain's head and the highest seq seen."""
        did = self._did(dev)
        if did is None:
            return []
        contiguous, highest = self.conn.execute(
            "SELECT contiguous, highest_seen FROM devices WHERE did = ?", (did,)
        ).fetchone()
        held = [r[0] for r in self.conn.execute("SELECT seq FROM pending WHERE did = ? ORDER BY seq", (did,))]
        out: list[tuple[int, int]] = []
        nxt = contiguous + 1
        for seq in held + [highest + 1]:
            if seq > nxt:
                out.append((nxt, seq - 1))
            nxt = max(nxt, seq + 1)
        return out

    def rejections(self, dev: str) -> list[dict[str, Any]]:
        return [
            {"at": r[0], "topic": r[1], "code": r[2], "reason": r[3], "seq": r[4]}
            for r in self.conn.execute(
                "SELECT at, topic, code, reason, seq FROM rejections WHERE dev = ? ORDER BY rid", (dev,)
            )
        ]

    def chain_breaks(self, dev: str) -> list[dict[str, Any]]:
        return [
            {"seq": r[0], "hash": r[1].hex(), "reason": r[2], "first_at": r[3], "times": r[4], "cose": r[5]}
            for r in self.conn.execute(
                "SELECT c.seq, c.hash, c.reason, c.first_at, c.times, c.cose FROM chain_breaks c "
                "JOIN devices d ON d.did = c.did WHERE d.dev = ? ORDER BY c.seq",
                (dev,),
            )
        ]

    def media_path(self, dev: str, media_id: str) -> Path | None:
        """The verified file, or None while it is incomplete or unknown."""
        row = self.conn.execute(
            "SELECT m.path FROM media m JOIN devices d ON d.did = m.did WHERE d.dev = ? AND m.media_id = ? "
            "AND m.state = 'complete'",
            (dev, media_id),
        ).fetchone()
        return None if row is None else Path(row[0])

    def media(self, dev: str) -> list[dict[str, Any]]:
        return [
            {
                "media": r[0],
                "camera": r[1],
                "type": r[2],
                "size": r[3],
                "chunks": r[4],
                "state": r[5],
                "path": r[6],
                "seq": r[7],
                "record_id": r[8],
            }
            for r in self.conn.execute(
                "SELECT m.media_id, m.camera, m.type, m.size, m.chunks, m.state, m.path, m.seq, m.record_id "
                "FROM media m JOIN devices d ON d.did = m.did WHERE d.dev = ? ORDER BY m.seq, m.media_id",
                (dev,),
            )
        ]

    def device_state(self, dev: str) -> dict[str, Any]:
        row = self.conn.execute(
            "SELECT did, contiguous, highest_seen, records, duplicate_ids, last_batch_at, status_json, "
            "status_at FROM devices WHERE dev = ?",
            (dev,),
        ).fetchone()
        if row is None:
            return {
                "dev": dev,
                "known": False,
                "rejections": int(
                    self.conn.execute("SELECT count(*) FROM rejections WHERE dev = ?", (dev,)).fetchone()[0]
                ),
            }
        did = row[0]

        def count(sql: str) -> int:
            return int(self.conn.execute(sql, (did,)).fetchone()[0])

        media = dict(
            self.conn.execute("SELECT state, count(*) FROM media WHERE did = ? GROUP BY state", (did,)).fetchall()
        )
        return {
            "dev": dev,
            "known": True,
            "acked_seq": row[1],  # highest contiguous seq stored durably (and acked)
            "highest_seq_seen": row[2],
            "records": row[3],
            "duplicate_record_ids": row[4],
            "last_batch_at": row[5],
            "held_batches": count("SELECT count(*) FROM pending WHERE did = ?"),
            "gaps": [list(g) for g in self.gaps(dev)],
            "chain_breaks": count("SELECT count(*) FROM chain_breaks WHERE did = ?"),
            "rejections": int(self.conn.execute("SELECT count(*) FROM rejections WHERE dev = ?", (dev,)).fetchone()[0]),
            "last_status": json.loads(row[6]) if row[6] else None,
            "last_status_received_at": row[7],
            "media_complete": int(media.get("complete", 0)),
            "media_pending": int(media.get("pending", 0)),
        }

    def health(self) -> dict[str, dict[str, Any]]:
        """What each receiver last wrote about itself, by client id: broker link and last error, with times.

        Rows written before the key held the client id (a bare NAME) are shown under "receiver".
        """
        out: dict[str, dict[str, Any]] = {}
        for key, value, at in self.conn.execute("SELECT key, value, at FROM health ORDER BY key"):
            who, _, name = str(key).rpartition(":")
            out.setdefault(who or "receiver", {})[name] = {"value": value, "at": at}
        return out

    def rejecting_senders(self) -> list[str]:
        """Every topic device that has a rejection, whether or not anything of it was ever accepted."""
        return [r[0] for r in self.conn.execute("SELECT DISTINCT dev FROM rejections ORDER BY dev")]

"""Clips and snapshots: taking a file in, announcing it in the chain, feeding its chunks out.

The manifest is a `media` record committed with the media row in one transaction, so a
file is never announced without being tracked or tracked without being announced. Chunks
leave only after the batch that announces the file is acked by the centre (spec: media is
sent after the batch that announces it), and only when no batch is waiting (records first).
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from buffer.store import Store
from buffer.writer import WriterTxn
from core.interfaces import BufferFull, EvictClass
from wire.kinds import MEDIA_TYPES
from wire.records import new_id

log = logging.getLogger(__name__)

EXT = MEDIA_TYPES
OWN_ID_RE = re.compile(r"^[0-9a-f]{32}$")  # the MEDIA_IDs add_media gives: a UUIDv7's hex


def media_class(held: int, state: str) -> EvictClass:
    """Where a media file stands in the disk policy's order (core.interfaces.EVICT_ORDER):
    unheld files are periodic snapshots; held ones are evidence, confirmed once acked complete."""
    if not held:
        return "snapshot"
    return "evidence_confirmed" if state == "complete" else "evidence_pending"


def media_gap(media_id: str, camera: str, media_type: str, size: int, reason: str) -> dict[str, Any]:
    """The `gap` record's data for a media file given up (docs/decisions.md, "Disk pressure")."""
    return {"what": "media", "media": media_id, "camera": camera, "type": media_type, "bytes": size,
            "reason": reason}


@dataclass
class _Cursor:
    media_id: str
    path: Path
    chunk: int
    chunks: int
    next_index: int
    resend: list[int] = field(default_factory=list)
    sent_since_save: int = 0


class MediaStore:
    def __init__(self, store: Store, media_dir: Path, chunk_bytes: int, quota_bytes: int,
                 bandwidth_kbps: int = 0, retention_s: float = 7 * 86400):
        self.store = store
        self.dir = media_dir
        self.dir.mkdir(parents=True, exist_ok=True)
        self.chunk_bytes = chunk_bytes
        self.quota_bytes = quota_bytes
        self.rate = bandwidth_kbps * 1000 / 8  # bytes per second; 0 = no cap
        self.retention_s = retention_s
        self._tokens = 0.0
        self._tokens_at = time.monotonic()
        self._cursor: _Cursor | None = None
        self._lock = threading.Lock()  # add_media may run on any thread; the outbox on the uplink's
        # Deleted under disk pressure by the writer thread (buffer.diskpolicy): the outbox drops
        # its cursor on one of these without taking _lock (on_ack holds it while it waits on the writer).
        self._gone: set[str] = set()
        self.swept = sweep_orphans(self.store, self.dir)

    # -- MediaSink -----------------------------------------------------------------
    def add_media(self, path: Path, *, camera: str, media_type: Literal["video/mp4", "image/jpeg"],
                  start_ms: int, end_ms: int, reason: Mapping[str, Any], src: str = "agent",
                  media_id: str | None = None, hold: bool = True) -> str:
        if media_type not in EXT:
            raise ValueError(f"media_type must be one of {sorted(EXT)}")
        media_id = media_id or new_id().replace("-", "")
        size, digest = _hash_file(path)
        if size == 0:
            raise ValueError(f"{path} is empty; nothing to announce")
        dest = self.dir / f"{media_id}{EXT[media_type]}"
        _move_durably(path, dest)
        chunks = -(-size // self.chunk_bytes)
        data = {"media": media_id, "camera": camera, "type": media_type, "start": start_ms, "end": end_ms,
                "size": size, "sha256": digest, "chunk": self.chunk_bytes, "chunks": chunks,
                "reason": dict(reason)}
        encoded = self.store.encode([{"kind": "media", "src": src, "at": end_ms, "data": data}], src)

        def op(tx: WriterTxn) -> list[str]:
            evicted = self._make_room(tx, size)
            rec_id = tx.insert_records(encoded)[0]
            tx.conn.execute(
                "INSERT INTO media(media_id, record_id, path, camera, type, size, sha256, chunk, chunks, "
                "created_ms, held) VALUES (?,?,?,?,?,?,?,?,?,?,?)",
                (media_id, rec_id, str(dest), camera, media_type, size, digest, self.chunk_bytes, chunks,
                 time.time_ns() // 1_000_000, int(hold)))
            return evicted

        try:
            evicted = self.store.call(op).result(timeout=60)
        except BufferFull as exc:
            dest.unlink(missing_ok=True)
            # The clip is lost: say so in the chain (spec: gap), then tell the caller.
            self.store.submit([{"kind": "gap", "src": src, "data": {
                "what": "media", "media": media_id, "camera": camera, "bytes": size, "start": start_ms,
                "end": end_ms, "reason": exc.reason}}])
            raise
        except BaseException:
            dest.unlink(missing_ok=True)
            raise
        for p in evicted:
            Path(p).unlink(missing_ok=True)
        log.info("media %s (%s, %d bytes, %d chunks) announced", media_id, camera, size, chunks)
        return media_id

    def _make_room(self, tx: WriterTxn, incoming: int) -> list[str]:
        """Evict until the new file fits, in the disk policy's order: periodic snapshots, then
        evidence the centre has confirmed, oldest first; never evidence it lacks. Each with a
        `gap` record saying what was given up."""
        used = tx.conn.execute("SELECT coalesce(sum(size), 0) FROM media WHERE state != 'evicted'").fetchone()[0]
        paths: list[str] = []
        if used + incoming <= self.quota_bytes:
            return paths
        victims = tx.conn.execute(
            "SELECT media_id, path, camera, type, size, state, held FROM media WHERE held = 0 AND state != 'evicted' "
            "OR state = 'complete' ORDER BY held, created_ms").fetchall()
        for media_id, path, camera, mtype, size, state, held in victims:
            if used + incoming <= self.quota_bytes:
                break
            tx.conn.execute("UPDATE media SET state='evicted', done_ms=? WHERE media_id=?",
                            (time.time_ns() // 1_000_000, media_id))
            used -= size
            paths.append(path)
            self._gone.add(media_id)
            data = media_gap(media_id, camera, mtype, size, "media quota on disk reached ([media] quota_mb); "
                             "oldest periodic snapshot or confirmed clip dropped")
            data.update({"class": media_class(held, state), "centre_has": state == "complete"})
            tx.insert_records(self.store.encode([{"kind": "gap", "data": data}]))
        if used + incoming > self.quota_bytes:
            raise BufferFull(f"media quota ([media] quota_mb = {self.quota_bytes // 2**20}) is full of files the "
                             "centre has not acked yet; new media refused")
        return paths

    # -- outbox (uplink thread) ----------------------------------------------------
    def _load_cursor(self) -> _Cursor | None:
        acked = self.store.acked_seq()
        row = self.store.reader().execute(
            "SELECT m.media_id, m.path, m.chunk, m.chunks, m.next_index, m.missing FROM media m "
            "LEFT JOIN records r ON r.id = m.record_id WHERE m.state = 'pending' "
            "AND (r.seq IS NULL AND r.id IS NULL OR r.seq <= ?) ORDER BY m.created_ms LIMIT 1",
            (acked,)).fetchone()
        if row is None:
            return None
        media_id, path, chunk, chunks, next_index, missing = row
        return _Cursor(media_id, Path(path), chunk, chunks, next_index, json.loads(missing) if missing else [])

    def next_chunk(self) -> tuple[str, int, bytes] | None:
        with self._lock:
            if self._cursor is None:
                self._cursor = self._load_cursor()
                if self._cursor is None:
                    return None
            c = self._cursor
            if c.media_id in self._gone:  # deleted under disk pressure; its gap is recorded
                self._cursor = None
                return None
            if c.resend:
                index = c.resend[0]
            elif c.next_index < c.chunks:
                index = c.next_index
            else:
                return None  # all sent once: wait for the centre's ack (complete, or what is missing)
            if not self._take_tokens(c.chunk):
                return None
            try:
                with open(c.path, "rb") as f:
                    f.seek(index * c.chunk)
                    data = f.read(c.chunk)
            except OSError as exc:
                if c.media_id in self._gone:  # the disk policy deleted it between the check and the open
                    self._cursor = None
                    return None
                log.error("media %s unreadable (%s); recording a gap", c.media_id, exc)
                self._give_up(c, f"file unreadable: {exc.strerror}")
                return None
            if c.resend:
                c.resend.pop(0)
            else:
                c.next_index += 1
            return c.media_id, index, data

    def _take_tokens(self, n: int) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        self._tokens = min(max(self.rate, n), self._tokens + (now - self._tokens_at) * self.rate)
        self._tokens_at = now
        if self._tokens < n:
            return False
        self._tokens -= n
        return True

    def chunk_sent(self, media_id: str, index: int) -> None:
        """PUBACK ok: persist progress now and then, so a restart does not resend everything."""
        c = self._cursor
        if c is None or c.media_id != media_id:
            return
        c.sent_since_save += 1
        if c.sent_since_save >= 16 or c.next_index >= c.chunks:
            c.sent_since_save = 0
            nxt = c.next_index
            self.store.call(lambda tx: tx.conn.execute(
                "UPDATE media SET next_index=? WHERE media_id=? AND next_index < ?", (nxt, media_id, nxt)))

    def on_ack(self, media_id: str, missing: tuple[int, ...]) -> None:
        with self._lock:
            c = self._cursor
            if not missing:
                now = time.time_ns() // 1_000_000
                self.store.call(lambda tx: tx.conn.execute(
                    "UPDATE media SET state='complete', done_ms=?, missing=NULL WHERE media_id=? "
                    "AND state='pending'", (now, media_id))).result(timeout=30)
                if c is not None and c.media_id == media_id:
                    self._cursor = None
                log.info("media %s acked complete by the centre", media_id)
                return
            wanted = sorted(set(missing))
            self.store.call(lambda tx: tx.conn.execute(
                "UPDATE media SET missing=? WHERE media_id=? AND state='pending'",
                (json.dumps(wanted), media_id)))
            if c is not None and c.media_id == media_id:
                c.resend = [i for i in wanted if i < c.chunks]
            elif c is None:
                self._cursor = self._load_cursor()

    def forget(self, media_id: str) -> None:
        """The disk policy deleted this file (any thread): stop sending it."""
        self._gone.add(media_id)

    def unforget(self, media_id: str) -> None:
        """The disk policy could not delete it after all: send it again."""
        self._gone.discard(media_id)

    def reset(self) -> None:
        """A refused or lost chunk: reload from the database; the centre's ack lists the holes."""
        with self._lock:
            self._cursor = None

    def _give_up(self, c: _Cursor, why: str) -> None:
        gap = self.store.encode([{"kind": "gap", "data": {"what": "media", "media": c.media_id, "reason": why}}])

        def op(tx: WriterTxn) -> None:
            tx.conn.execute("UPDATE media SET state='evicted' WHERE media_id=?", (c.media_id,))
            tx.insert_records(gap)
        self.store.call(op)
        self._cursor = None

    def prune(self) -> int:
        """Delete files the centre acked longer ago than the retention period."""
        cutoff = time.time_ns() // 1_000_000 - int(self.retention_s * 1000)
        rows = self.store.reader().execute(
            "SELECT media_id, path FROM media WHERE state='complete' AND done_ms < ?", (cutoff,)).fetchall()
        for _, path in rows:
            Path(path).unlink(missing_ok=True)
        done = [(m,) for m, _ in rows]

        def op(tx: WriterTxn) -> None:
            tx.conn.executemany("UPDATE media SET state='evicted' WHERE media_id=?", done)
        if done:
            self.store.call(op)
        return len(rows)


def sweep_orphans(store: Store, media_dir: Path) -> list[str]:
    """Delete media files that no live media row names, before anything is added.

    add_media moves the file in, then commits its row; an agent killed in between leaves a
    file nobody announced, tracks or counts in the quota (found by tests/e2e/test_kills.py).
    An eviction commits first and unlinks after, with the same window. Only names add_media
    gives (32 hex digits + a media extension) are touched: [media] dir may be shared."""
    live = {Path(p).name for (p,) in store.reader().execute("SELECT path FROM media WHERE state != 'evicted'")}
    gone = []
    exts = tuple(EXT.values())
    for path in media_dir.iterdir():
        stem, ext = os.path.splitext(path.name)
        if ext in exts and OWN_ID_RE.match(stem) and path.name not in live and path.is_file():
            path.unlink(missing_ok=True)
            gone.append(path.name)
    if gone:
        log.info("media dir: removed %d files no media row names (an interrupted run): %s", len(gone),
                 ", ".join(sorted(gone)))
    return sorted(gone)


def _hash_file(path: Path) -> tuple[int, bytes]:
    h = hashlib.sha256()
    size = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
            size += len(block)
    return size, h.digest()


def _move_durably(src: Path, dest: Path) -> None:
    """rename within a filesystem, copy+fsync across; the directory entry is fsynced too."""
    try:
        os.replace(src, dest)
    except OSError:
        shutil.copyfile(src, dest)
        src.unlink()
    fd = os.open(dest, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    dfd = os.open(dest.parent, os.O_RDONLY)
    try:
        os.fsync(dfd)
    finally:
        os.close(dfd)

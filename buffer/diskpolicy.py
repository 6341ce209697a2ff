"""One policy for the whole disk: video gives way to records, in a fixed order, and says so.

The buffer's file system keeps `reserve` bytes free for records. When free space falls below
it, files are deleted in core.interfaces.EVICT_ORDER until free space is back a little above
the reserve: continuous recording past its retention, other continuous recording (oldest
first), periodic snapshots, then evidence the centre has confirmed. Evidence the centre does
not have yet is deleted only when SQLite reports the disk full (the writer's on_disk_full,
called before a group would be refused with 507), and only until a quarter of the reserve is
free. So a sale is refused only when no media is left to delete.

Every deletion is a signed `gap` record (spec: "what was given up and why"): one per media
file, one per camera and class for ring segments deleted in one pass (docs/decisions.md,
"Disk pressure"). A deleted file's gap is owed until it commits: its id and content are fixed
when the file goes, so writing it again after a rolled-back group stores it once.

The periodic pass lists and deletes in the DiskWatch thread (media rows through a read
connection) and hands only the gap records and `evicted` marks to the writer, as one short
CallOp; the disk-full pass runs in the writer thread itself, on its connection, because the
group it would otherwise refuse is waiting for the room.
"""

from __future__ import annotations

import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buffer.media import MediaStore, media_class, media_gap
from buffer.store import Store
from buffer.writer import CallOp, Encoded, WriterTxn
from core.interfaces import EVICT_ORDER, Component, Evictable, EvictableSource, EvictClass, Health
from wire.records import new_id

log = logging.getLogger(__name__)

# The pressure level, worst last: status `disk.level`, metric coop_disk_level (its index).
# low: below the warning line; below_reserve: below the reserve with nothing left to delete short
# of evidence the centre lacks; then the deepest class deleted since free space was last above
# the warning line; refusing: the disk was full with nothing left to delete (records refused, 507).
LEVELS: tuple[str, ...] = ("ok", "low", "below_reserve", *EVICT_ORDER, "refusing")
MiB = 2**20
RANK: dict[str, int] = {c: i for i, c in enumerate(EVICT_ORDER)}


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged process may still write on the file system holding `path`."""
    st = os.statvfs(path)
    return st.f_bavail * st.f_frsize


@dataclass(frozen=True)
class Thresholds:
    """warn > reserve > floor. Below warn: an alert, nothing deleted. Below reserve: classes up to
    evidence_confirmed go until `target` is free. Disk full: evidence_pending goes until `floor`."""

    warn_bytes: int
    reserve_bytes: int

    @property
    def target_bytes(self) -> int:
        """Where a pass stops: a little above the reserve, so it does not run again at every check."""
        return min(self.warn_bytes, self.reserve_bytes + max(self.reserve_bytes // 10, MiB))

    @property
    def floor_bytes(self) -> int:
        return self.reserve_bytes // 4

    def level(self, free: int) -> str:
        if free >= self.warn_bytes:
            return "ok"
        return "low" if free >= self.reserve_bytes else "below_reserve"


@dataclass
class _Owed:
    """A gap record for a deleted file, not yet committed; the media row to mark evicted."""

    encoded: Encoded
    media_id: str | None = None


@dataclass
class ClassCount:
    files: int = 0
    bytes: int = 0
    last_ms: int = 0


@dataclass
class _Media:
    item: Evictable
    media_id: str
    media_type: str
    state: str


@dataclass
class _Pass:
    """What one reclaim deleted, grouped for the gap records."""

    free_before: int
    ring: dict[tuple[str, EvictClass], list[Evictable]] = field(default_factory=dict)
    media: list[_Media] = field(default_factory=list)


class DiskPolicy:
    def __init__(self, store: Store, media: MediaStore, thresholds: Thresholds,
                 free: Callable[[Path], int] = free_bytes):
        self.store = store
        self.media = media
        self.t = thresholds
        self.root = store.path.parent
        self._free = free
        self._sources: list[EvictableSource] = []
        self._owed: dict[str, _Owed] = {}
        self._lock = threading.Lock()  # owed, counters: written by the writer thread, read by status
        self._dev = os.stat(self.root).st_dev
        self._dev_cache: dict[str, bool] = {}
        # One pass at a time: the watch thread's, or the writer's on a full disk (which waits for it).
        self._reclaiming = threading.Lock()
        self.free = self._free(self.root)
        self.deepest = -1             # index in EVICT_ORDER deleted since free space was last above warn
        self.refusing = False         # the disk was full and nothing was left to delete (507)
        self.refusals = 0
        self.deleted: dict[str, ClassCount] = {c: ClassCount() for c in EVICT_ORDER}

    def register(self, source: EvictableSource) -> None:
        self._sources.append(source)

    # -- state for status, metrics, doctor ---------------------------------------
    @property
    def level(self) -> str:
        if self.refusing:
            return "refusing"
        base = self.t.level(self.free)
        if self.deepest >= 0 and LEVELS.index(EVICT_ORDER[self.deepest]) > LEVELS.index(base):
            return EVICT_ORDER[self.deepest]
        return base

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            deleted = {c: {"files": n.files, "bytes": n.bytes, "last_ms": n.last_ms} for c, n in self.deleted.items()}
            owed = len(self._owed)
        return {"path": str(self.root), "free_bytes": self.free, "warn_bytes": self.t.warn_bytes,
                "reserve_bytes": self.t.reserve_bytes, "level": self.level, "level_index": LEVELS.index(self.level),
                "deleted": deleted, "refused_full": self.refusals, "gaps_owed": owed}

    def _measure(self) -> int:
        self.free = self._free(self.root)
        if self.free >= self.t.warn_bytes and self.deepest >= 0:
            log.info("disk: %d MiB free again, above the warning line; media deletion stopped", self.free // MiB)
            self.deepest = -1
        if self.free >= self.t.reserve_bytes:
            self.refusing = False
        return self.free

    # -- the periodic check (DiskWatch's thread) --------------------------------
    def check(self, timeout: float = 60.0) -> None:
        """Measure; below the reserve, delete in order (in this thread); then write the owed gaps
        through the writer."""
        if not self.store.writer.accepting:  # stopping: the buffer takes no more work
            return
        before = self.level
        free = self._measure()
        if free < self.t.reserve_bytes:
            # Listing and deleting run here, not in the writer: a pass over 8 cameras' hour-long
            # rings takes long enough to hold up sales (bench/bench_diskpolicy.py).
            with self._reclaiming:
                self._reclaim(self.store.reader(), self.t.target_bytes, last="evidence_confirmed",
                              at_least_one=False)
        if self._owed:
            fut = self.store.call(self._write_owed)
            fut.add_done_callback(self._settled)
            fut.result(timeout=timeout)
        after = self.level
        if after != before:
            say = log.warning if LEVELS.index(after) > LEVELS.index(before) else log.info
            say("disk: %s -> %s (%d MiB free, warn below %d MiB, reserve %d MiB for records)", before, after,
                self.free // MiB, self.t.warn_bytes // MiB, self.t.reserve_bytes // MiB)

    # -- the writer's last resort --------------------------------------------------
    def on_disk_full(self) -> CallOp | None:
        """SQLite said the disk is full: delete what may go, evidence the centre lacks included, and
        return the op that records it; None when the file system is not short (a [buffer] max_db_mb
        cap, not the disk) or nothing could be deleted: then the records are refused."""
        free = self._measure()
        if free >= self.t.reserve_bytes:
            return None
        conn = self.store.writer.conn
        with self._reclaiming:  # a pass of the watch thread finishes first (it never waits on the writer)
            gone = self._reclaim(conn, self.t.target_bytes, last="evidence_confirmed", at_least_one=True)
            if self.free < self.t.floor_bytes or not gone:
                gone += self._reclaim(conn, self.t.floor_bytes, last="evidence_pending", at_least_one=not gone)
        if not gone:
            self.refusals += 1
            if not self.refusing:
                log.error("disk full (%d MiB free) and no media left to delete: records are refused (507)",
                          self.free // MiB)
            self.refusing = True
            return None
        op = CallOp(self._write_owed)
        op.future.add_done_callback(self._settled)
        return op

    # -- deleting -----------------------------------------------------------------
    def _reclaim(self, conn: sqlite3.Connection, target: int, last: EvictClass, at_least_one: bool) -> int:
        """Delete candidates of the classes up to `last`, in order, until `target` bytes are free
        (and at least one file when asked); returns how many files went."""
        stop_after = RANK[last]
        if self.free >= target and not at_least_one:
            return 0
        now_ms = time.time_ns() // 1_000_000
        done = _Pass(self.free)
        gone = 0
        for item, media in self._candidates(conn, now_ms):
            rank = RANK[item.cls]
            if rank > stop_after:
                break
            if self.free >= target and (gone or not at_least_one):
                break
            if not self._delete(item, media):
                continue
            gone += 1
            self.deepest = max(self.deepest, rank)
            if media is not None:
                done.media.append(media)
            else:
                done.ring.setdefault((item.camera, item.cls), []).append(item)
            self._count(item, now_ms)
            self._measure_quietly()
        if gone:
            self._owe(done, now_ms)
            log.warning("disk: deleted %d files (deepest class %s); %d MiB free, reserve %d MiB",
                        gone, EVICT_ORDER[self.deepest], self.free // MiB, self.t.reserve_bytes // MiB)
        return gone

    def _measure_quietly(self) -> None:
        self.free = self._free(self.root)

    def _candidates(self, conn: sqlite3.Connection, now_ms: int) -> list[tuple[Evictable, _Media | None]]:
        out: list[tuple[Evictable, _Media | None]] = []
        for source in self._sources:
            try:
                items = source.evictable(now_ms)
            except Exception:  # one family's bug must not stop records from getting room
                log.exception("disk: evictable source %r failed", source)
                continue
            out.extend((i, None) for i in items if self._same_disk(str(i.path).rpartition("/")[0]))
        if self._same_disk(str(self.media.dir)):
            rows = conn.execute("SELECT media_id, path, camera, type, size, created_ms, held, state FROM media "
                                "WHERE state != 'evicted'").fetchall()
            with self._lock:  # deleted already, its row not yet marked: not a candidate twice
                owed = {o.media_id for o in self._owed.values() if o.media_id is not None}
            for media_id, path, camera, mtype, size, created, held, state in rows:
                if media_id in owed:
                    continue
                item = Evictable(media_class(held, state), Path(path), size, camera, created, created, key=media_id)
                out.append((item, _Media(item, media_id, mtype, state)))
        out.sort(key=lambda p: (RANK[p[0].cls], p[0].start_ms))
        return out

    def _same_disk(self, directory: str) -> bool:
        """Whether a folder is on the buffer's file system (deleting elsewhere frees nothing for it)."""
        same = self._dev_cache.get(directory)
        if same is None:
            try:
                same = os.stat(directory).st_dev == self._dev
            except OSError:
                same = False
            self._dev_cache[directory] = same
        return same

    def _delete(self, item: Evictable, media: _Media | None) -> bool:
        if media is None:
            for source in self._sources:
                try:
                    if source.evict(item):
                        return True
                except Exception:
                    log.exception("disk: could not delete %s", item.path)
            return False
        # Told first: the outbox must not find the file missing and record a gap of its own.
        self.media.forget(media.media_id)
        try:
            item.path.unlink()
        except FileNotFoundError:
            pass  # gone already: still marked evicted, with its gap
        except OSError as exc:
            log.error("disk: could not delete media %s: %s", item.path, exc)
            self.media.unforget(media.media_id)
            return False
        return True

    def _count(self, item: Evictable, now_ms: int) -> None:
        with self._lock:
            c = self.deleted[item.cls]
            c.files += 1
            c.bytes += item.size
            c.last_ms = now_ms

    # -- the gap records -------------------------------------------------------------
    def _why(self, cls: EvictClass, free_before: int) -> str:
        what = {
            "recording_expired": "continuous recording already past its retention ([recording] ring_minutes)",
            "recording": "continuous recording, oldest first",
            "snapshot": "a periodic snapshot",
            "evidence_confirmed": "evidence the centre had confirmed complete (its copy remains)",
            "evidence_pending": "evidence the centre did not have yet: records would otherwise have been refused",
        }[cls]
        return (f"disk pressure: {free_before // MiB} MiB free on the buffer's file system, "
                f"{self.t.reserve_bytes // MiB} MiB kept for records ([disk] reserve_mb); deleted {what}")

    def _owe(self, done: _Pass, now_ms: int) -> None:
        records: list[tuple[dict[str, Any], str | None]] = []
        for (camera, cls), items in done.ring.items():
            records.append(({"what": "recording", "class": cls, "camera": camera,
                             "start": min(i.start_ms for i in items), "end": max(i.end_ms for i in items),
                             "segments": len(items), "bytes": sum(i.size for i in items),
                             "free": done.free_before, "reserve": self.t.reserve_bytes,
                             "reason": self._why(cls, done.free_before)}, None))
        for m in done.media:
            data = media_gap(m.media_id, m.item.camera, m.media_type, m.item.size,
                             self._why(m.item.cls, done.free_before))
            data.update({"class": m.item.cls, "centre_has": m.state == "complete", "free": done.free_before,
                         "reserve": self.t.reserve_bytes})
            records.append((data, m.media_id))
        records.sort(key=lambda r: (RANK[r[0]["class"]], r[0].get("start", 0)))  # in deletion order
        encoded = self.store.encode([{"kind": "gap", "at": now_ms, "id": new_id(now_ms), "data": d}
                                     for d, _ in records])
        with self._lock:
            for e, (_, media_id) in zip(encoded, records, strict=True):
                self._owed[e.rec.id] = _Owed(e, media_id)

    def _write_owed(self, tx: WriterTxn) -> list[str]:
        """Insert the owed gaps and mark their media rows evicted, in the caller's transaction. A media
        row someone else marked evicted first (the [media] quota) has its own gap: ours is dropped."""
        with self._lock:
            owed = list(self._owed.values())
        now = time.time_ns() // 1_000_000
        write = []
        for o in owed:
            if o.media_id is not None:
                cur = tx.conn.execute("UPDATE media SET state='evicted', done_ms=? WHERE media_id=? "
                                      "AND state != 'evicted'", (now, o.media_id))
                if cur.rowcount == 0 and not self._ours(tx, o):
                    continue
            write.append(o.encoded)
        if write:
            tx.insert_records(write)
        return [o.encoded.rec.id for o in owed]

    @staticmethod
    def _ours(tx: WriterTxn, o: _Owed) -> bool:
        """The row is evicted already: by this gap's own earlier write (a retried group), or by another?"""
        return tx.conn.execute("SELECT 1 FROM records WHERE id=?", (o.encoded.rec.id,)).fetchone() is not None

    def _settled(self, fut: Future[Any]) -> None:
        """Runs once the group that wrote owed gaps has committed (or failed: they stay owed)."""
        if fut.exception() is not None:
            return
        with self._lock:
            for rid in fut.result():
                self._owed.pop(rid, None)


class DiskWatch(Component):
    """Measures free space every `interval_s` and lets the policy delete what it must."""

    name = "disk"

    def __init__(self, policy: DiskPolicy, interval_s: float):
        self.policy = policy
        self.interval_s = interval_s

    def run(self, stop: threading.Event) -> None:
        self.policy.check()
        while not stop.wait(self.interval_s):
            self.policy.check()

    def health(self) -> Health:
        level = self.policy.level
        if level == "refusing":
            return "down"
        return "degraded" if LEVELS.index(level) >= LEVELS.index("evidence_pending") else "ok"

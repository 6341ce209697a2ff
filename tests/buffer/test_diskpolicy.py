"""The disk policy on a real small file system (a tmpfs this test mounts): what goes first, what
is kept, what each deletion leaves in the chain, and that records get room before a 507.

Free space is set by growing or shrinking a filler file, so "full" is the kernel's ENOSPC and the
policy reads the real statvfs; ring segments, snapshots and clips are real files in the real
Ring and MediaStore; records go through the real writer thread.
"""

from __future__ import annotations

import errno
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import cbor2
import pytest

from buffer.diskpolicy import DiskPolicy, Thresholds
from buffer.media import MediaStore
from buffer.store import Store
from core.interfaces import EVICT_ORDER, BufferFull
from drivers.camera.clipper import ClipRequest
from drivers.camera.reclaim import RingReclaimer
from drivers.camera.ring import Ring, final_name
from tests.peers.tmpfs import mounted_tmpfs
from wire.cose import decode_unverified

MiB = 2**20
SEG = 512 * 1024


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 48 MiB file system; unmounted at the end."""
    with mounted_tmpfs(tmp_path / "disk", 48) as mnt:
        yield mnt


def free_of(mnt: Path) -> int:
    st = os.statvfs(mnt)
    return st.f_bavail * st.f_frsize


def set_free(mnt: Path, target: int) -> None:
    """Grow or shrink the filler file until `target` bytes are free (to a page)."""
    filler = mnt / "filler"
    filler.touch()
    delta = free_of(mnt) - target
    if delta > 0:
        block = b"\x5a" * MiB
        try:
            with open(filler, "ab") as f:
                while delta > 0:
                    delta -= f.write(block[: min(delta, MiB)])
        except OSError as exc:  # others write too (a camera): full is as far as it goes
            if exc.errno != errno.ENOSPC:
                raise
    elif delta < 0:
        os.truncate(filler, max(0, filler.stat().st_size + delta))


def write(path: Path, size: int, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(bytes([seed % 251]) * size)
    return path


def all_records(store: Store) -> list[dict[str, Any]]:
    """Every record in the buffer: the unsealed bodies and those inside sealed batches."""
    c = store.reader()
    c.execute("BEGIN")  # one snapshot: a batch sealed between the two reads would count twice
    try:
        out = [cbor2.loads(b) for (b,) in c.execute("SELECT body FROM records WHERE body IS NOT NULL")]
        for (cose,) in c.execute("SELECT cose FROM batches"):
            out.extend(cbor2.loads(decode_unverified(bytes(cose))[2])["records"])
    finally:
        c.execute("COMMIT")
    return out


class Branch:
    """A buffer, media store, one camera ring and the policy, all on the small file system."""

    def __init__(self, mnt: Path, make_store: Callable[..., Store], warn_mb: int = 12, reserve_mb: int = 8):
        self.mnt = mnt
        self.store = make_store(path=mnt / "buffer.sqlite3")
        self.media = MediaStore(self.store, mnt / "media", 64 * 1024, 1024 * MiB)
        self.ring = Ring(mnt / "recordings" / "dock", max_minutes=1, max_bytes=1 << 40)
        self.pending: list[ClipRequest] = []
        self.policy = DiskPolicy(self.store, self.media, Thresholds(warn_mb * MiB, reserve_mb * MiB))
        self.policy.register(RingReclaimer({"dock": self.ring}, lambda: list(self.pending), 1000))
        self.store.writer.on_disk_full = self.policy.on_disk_full
        self.work = mnt / "work"

    def segments(self, start_ms: int, n: int) -> list[Path]:
        paths = []
        for i in range(n):
            s = start_ms + i * 1000
            paths.append(write(self.ring.dir / final_name(s, s + 1000), SEG, seed=i))
        self.ring._index = None  # files written behind the ring's back: scan again
        return paths

    def media_file(self, name: str, size: int, hold: bool, now: int) -> str:
        p = write(self.work / name, size, seed=len(name))
        return self.media.add_media(p, camera="dock", media_type="video/mp4" if hold else "image/jpeg",
                                    start_ms=now, end_ms=now, reason={"test": name}, hold=hold)

    def gaps(self) -> list[dict[str, Any]]:
        return [r["data"] for r in all_records(self.store) if r["kind"] == "gap"]

    def media_state(self) -> dict[str, str]:
        return dict(self.store.reader().execute("SELECT media_id, state FROM media").fetchall())


def sale(i: int) -> dict[str, Any]:
    return {"kind": "sale", "data": {"receipt": f"R-{i}", "till": "3", "currency": "KWD", "total": 1250,
                                     "lines": [{"gtin": "09506000134352", "qty": 1, "unit_price": 1250,
                                                "amount": 1250, "note": "x" * 400}]}}


def test_thresholds_order_and_validation() -> None:
    t = Thresholds(12 * MiB, 8 * MiB)
    assert t.floor_bytes < t.reserve_bytes < t.target_bytes <= t.warn_bytes
    assert [t.level(f) for f in (13 * MiB, 9 * MiB, 7 * MiB)] == ["ok", "low", "below_reserve"]
    assert EVICT_ORDER == ("recording_expired", "recording", "snapshot", "evidence_confirmed", "evidence_pending")


def test_deletion_order_gaps_and_room_for_records(small_fs: Path, make_store: Callable[..., Store]) -> None:
    b = Branch(small_fs, make_store)
    now = int(time.time() * 1000)
    expired = b.segments(now - 300_000, 4)       # 5 minutes old: past ring_minutes = 1
    recent = b.segments(now - 20_000, 8)
    # A pending clip of [-14 s, -12.5 s] needs recent[6:8], and recent[5] for the keyframe before its start.
    b.pending.append(ClipRequest("dock", now - 14_000, now - 12_500, {"rule": "waste"}))
    protected = recent[5:8]
    snaps = [b.media_file(f"snap{i}.jpg", SEG, hold=False, now=now + i) for i in range(2)]
    confirmed = b.media_file("clip-acked.mp4", MiB, hold=True, now=now + 10)
    pending = b.media_file("clip-pending.mp4", MiB, hold=True, now=now + 11)
    b.media.on_ack(confirmed, ())
    assert b.media_state()[confirmed] == "complete"

    # 1. Above the warning line: nothing happens.
    set_free(small_fs, 20 * MiB)
    b.policy.check()
    assert b.policy.level == "ok" and all(p.exists() for p in expired + recent)

    # 2. 1.5 MiB below the reserve: the expired recording goes, then the oldest recording, no more.
    set_free(small_fs, 8 * MiB - 3 * SEG)
    b.policy.check()
    assert not any(p.exists() for p in expired)
    kept = [p.exists() for p in recent]
    assert kept[-3:] == [True, True, True]
    assert kept == sorted(kept), f"recording deleted out of order: {kept}"  # a prefix went: oldest first
    assert not kept[0]
    assert all(b.media_state()[m] == "pending" for m in snaps)
    assert free_of(small_fs) >= 8 * MiB
    assert b.policy.level == "recording"

    # 3. Far below: all recording, the snapshots and the confirmed clip go; evidence the centre lacks stays.
    set_free(small_fs, 8 * MiB - 6 * MiB)
    b.policy.check()
    assert [p.exists() for p in recent] == [False] * 5 + [True] * 3
    state = b.media_state()
    assert [state[m] for m in snaps] == ["evicted", "evicted"] and state[confirmed] == "evicted"
    assert state[pending] == "pending" and all(p.exists() for p in protected)
    assert b.policy.level == "evidence_confirmed"

    # 4. The disk fills up: records still go in, and only now does unconfirmed evidence give way.
    set_free(small_fs, 16 * 1024)
    ids = b.store.submit([sale(i) for i in range(200)], timeout=30)
    assert len(ids) == 200
    state = b.media_state()
    assert state[pending] == "evicted" or not any(p.exists() for p in protected)
    assert b.policy.level == "evidence_pending"
    assert b.policy.deleted["evidence_pending"].files >= 1

    # 5. Nothing left to delete and the disk full: now, and only now, records are refused.
    for p in protected:
        if p.exists():
            b.ring.drop(next(s for s in b.ring.segments() if s.path == p))
    b.store.submit([sale(1000)], timeout=30)  # the pending clip's gap is written if not yet
    set_free(small_fs, 0)
    with pytest.raises(BufferFull):
        b.store.submit([sale(i) for i in range(1000, 1400)], timeout=30)
    assert b.policy.level == "refusing" and b.policy.refusals >= 1

    # Every deletion is in the chain exactly once, in the policy's terms.
    set_free(small_fs, 20 * MiB)
    b.store.submit([sale(2000)], timeout=30)
    gaps = b.gaps()
    by_media = [g["media"] for g in gaps if g["what"] == "media"]
    assert sorted(by_media) == sorted([*snaps, confirmed, pending])  # once each, no repeats after retries
    media_gaps = {g["media"]: g for g in gaps if g["what"] == "media"}
    assert media_gaps[confirmed]["class"] == "evidence_confirmed" and media_gaps[confirmed]["centre_has"] is True
    assert media_gaps[pending]["class"] == "evidence_pending" and media_gaps[pending]["centre_has"] is False
    assert all(media_gaps[s]["class"] == "snapshot" for s in snaps)
    rec_gaps = [g for g in gaps if g["what"] == "recording"]
    assert sum(g["segments"] for g in rec_gaps if g["class"] in ("recording_expired", "recording")) == 4 + 5
    assert {g["class"] for g in rec_gaps} >= {"recording_expired", "recording"}
    for g in gaps:
        assert g["reason"].startswith("disk pressure") and g["reserve"] == 8 * MiB and g["bytes"] > 0
    with sqlite3.connect(small_fs / "buffer.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]


def test_disk_not_short_means_no_deletion(small_fs: Path, make_store: Callable[..., Store]) -> None:
    """SQLite's "full" from a [buffer] max_db_mb cap (free space is plenty) deletes no media."""
    b = Branch(small_fs, make_store)
    now = int(time.time() * 1000)
    b.segments(now - 5000, 3)
    set_free(small_fs, 20 * MiB)
    assert b.policy.on_disk_full() is None
    assert len(b.ring.segments()) == 3 and b.gaps() == []


def test_media_quota_follows_the_same_order(tmp_path: Path, make_store: Callable[..., Store]) -> None:
    """The [media] quota used to evict confirmed clips before unconfirmed snapshots; now one order
    holds whichever limit is hit: periodic snapshots, then confirmed evidence, never pending evidence."""
    store = make_store()
    media = MediaStore(store, tmp_path / "media", 64 * 1024, MiB)
    now = int(time.time() * 1000)

    def add(name: str, hold: bool) -> str:
        p = write(tmp_path / "in" / name, 400_000, seed=len(name))
        return media.add_media(p, camera="dock", media_type="video/mp4" if hold else "image/jpeg", start_ms=now,
                               end_ms=now, reason={"test": name}, hold=hold)

    confirmed = add("clip-a.mp4", hold=True)
    media.on_ack(confirmed, ())
    snap = add("snap.jpg", hold=False)
    add("clip-b.mp4", hold=True)  # over the quota: one file must go
    state = dict(store.reader().execute("SELECT media_id, state FROM media").fetchall())
    assert state[snap] == "evicted" and state[confirmed] == "complete"
    store.submit([sale(1)], timeout=10)
    (gap,) = [r["data"] for r in all_records(store) if r["kind"] == "gap"]
    assert gap["media"] == snap and gap["class"] == "snapshot" and gap["centre_has"] is False

"""Reassembly of clips and snapshots from the chunks on P/media/MEDIA_ID/INDEX (uplink-v1 "Media").

Chunks are spooled to files as they come (never held in RAM), under
media_dir/.spool/SOCIETY/BRANCH/DEVICE/MEDIA_ID/INDEX, so a receiver restart loses nothing
it had acknowledged to the broker and memory stays flat whatever the clip size. Chunks may
come before their manifest (the `media` record travels in a batch, and a held batch
delays it); those early chunks are capped per device on disk. The file is accepted only
when its size and SHA-256 match the manifest; then it moves to
media_dir/SOCIETY/BRANCH/DEVICE/MEDIA_ID.mp4|.jpg and the agent gets `missing: []`.

Receivers that share one subscription get the chunks of one file in turn, and the manifest
on yet another. So nothing here is known only in memory: the manifest and the file's state
are read from the database (under the device's row lock, which the worker holds for the
whole transaction), and the chunks present are the spool folder's listing, which all
receivers share (media_dir on shared storage: docs/centre-deployment.md). Whichever receiver
writes the last missing chunk assembles the file. The in-memory Track only times the asks.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from receiver.database import Database
from wire.batches import Manifest

log = logging.getLogger(__name__)

RejectFn = Callable[[str, str, str, str], None]  # (dev, topic, code, reason)


@dataclass
class Track:
    """A media item whose manifest is known and whose file is not complete yet."""

    dev: str
    manifest: Manifest
    have: set[int]
    next_ask: float
    backoff: float


@dataclass
class Outbox:
    acks: list[tuple[str, str, list[int]]] = field(default_factory=list)  # (dev, media id, missing)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class MediaAssembler:
    def __init__(
        self,
        db: Database,
        media_dir: Path,
        *,
        idle_s: float,
        retry_max_s: float,
        early_cap_bytes: int,
        eager_asks: bool = True,
    ):
        self.db = db
        self.media_dir = media_dir
        self.spool = media_dir / ".spool"
        self.idle_s = idle_s
        self.retry_max_s = retry_max_s
        self.early_cap = early_cap_bytes
        # Ask for the holes as soon as the last chunk comes. Not when receivers share the chunks: the
        # others may still be writing the earlier ones, so only the idle timer asks.
        self.eager_asks = eager_asks
        self.outbox = Outbox()
        self._tracks: dict[tuple[str, str], Track] = {}
        self._early: dict[str, int] = {}  # device -> bytes of chunks spooled without a manifest
        self._reacked: dict[tuple[str, str], float] = {}

    # -- start-up -----------------------------------------------------------------------

    def load(self) -> None:
        """Rebuild the in-memory view from the database and the spool after a restart."""
        now = time.monotonic()
        rows = self.db.execute(
            'SELECT d.dev, m.media_id, m.camera, m.type, m.start, m."end", m.size, m.sha256, m.chunk, '
            "m.chunks, m.record_id FROM media m JOIN devices d ON d.did = m.did WHERE m.state = 'pending'"
        ).fetchall()
        for r in rows:
            man = Manifest(
                media=r[1],
                camera=r[2],
                type=r[3],
                start=r[4],
                end=r[5],
                size=r[6],
                sha256=r[7],
                chunk=r[8],
                chunks=r[9],
                record_id=r[10],
            )
            self._tracks[(r[0], r[1])] = Track(r[0], man, self._spooled(r[0], r[1]), now + self.idle_s, self.idle_s)
        if self.spool.is_dir():
            for media_dir in self.spool.glob("*/*/*/*"):
                dev = "/".join(media_dir.relative_to(self.spool).parts[:3])
                if (dev, media_dir.name) not in self._tracks:
                    self._early[dev] = self._early.get(dev, 0) + sum(f.stat().st_size for f in media_dir.iterdir())

    # -- paths --------------------------------------------------------------------------

    def _spool_dir(self, dev: str, media_id: str) -> Path:
        return self.spool / dev / media_id

    def _spooled(self, dev: str, media_id: str) -> set[int]:
        d = self._spool_dir(dev, media_id)
        if not d.is_dir():
            return set()
        return {int(p.name) for p in d.iterdir() if p.name.isdigit()}

    def final_path(self, dev: str, man: Manifest) -> Path:
        return self.media_dir / dev / f"{man.media}{man.suffix}"

    # -- chunks -------------------------------------------------------------------------

    def _row(self, dev: str, media_id: str) -> tuple[str, Manifest] | None:
        """(state, manifest) of the file as the database has it now (another receiver may have moved it)."""
        r = self.db.execute(
            'SELECT m.state, m.camera, m.type, m.start, m."end", m.size, m.sha256, m.chunk, m.chunks, m.record_id '
            "FROM media m JOIN devices d ON d.did = m.did WHERE d.dev = ? AND m.media_id = ?",
            (dev, media_id),
        ).fetchone()
        if r is None:
            return None
        man = Manifest(
            media=media_id,
            camera=r[1],
            type=r[2],
            start=r[3],
            end=r[4],
            size=r[5],
            sha256=bytes(r[6]),
            chunk=r[7],
            chunks=r[8],
            record_id=r[9],
        )
        return str(r[0]), man

    def on_chunk(self, dev: str, topic: str, media_id: str, index: int, data: bytes, reject: RejectFn) -> None:
        key = (dev, media_id)
        row = self._row(dev, media_id)
        if row is None:
            self._tracks.pop(key, None)
            self._early_chunk(dev, topic, media_id, index, data, reject)
            return
        state, man = row
        if state == "complete":
            self._tracks.pop(key, None)
            self._reack_complete(dev, media_id)
            return
        track = self._tracks.get(key)
        if track is None:  # the manifest came to another receiver (or before our restart)
            now = time.monotonic()
            track = self._tracks[key] = Track(dev, man, set(), now + self.idle_s, self.idle_s)
        expected = man.chunk if index < man.chunks - 1 else man.size - man.chunk * (man.chunks - 1)
        if not 0 <= index < man.chunks or len(data) != expected:
            reject(
                dev,
                topic,
                "bad_chunk",
                f"media {media_id} chunk {index} has {len(data)} bytes; the manifest "
                f"says {man.chunks} chunks of {man.chunk} bytes, {man.size} in all",
            )
            return
        self._write_chunk(dev, media_id, index, data)
        track.have = self._spooled(dev, media_id)  # with the chunks other receivers spooled
        track.backoff = self.idle_s
        track.next_ask = time.monotonic() + self.idle_s
        if len(track.have) == man.chunks:
            self._assemble(track, topic, reject)
        elif index == man.chunks - 1 and self.eager_asks:
            self._ask(track)  # the last chunk came and there are holes: say which now

    def _early_chunk(self, dev: str, topic: str, media_id: str, index: int, data: bytes, reject: RejectFn) -> None:
        old = self._spool_dir(dev, media_id) / str(index)
        old_size = old.stat().st_size if old.exists() else 0
        used = self._early.get(dev, 0) - old_size
        if used + len(data) > self.early_cap:
            reject(
                dev,
                topic,
                "early_media_full",
                f"chunk {index} of {media_id} dropped: {used} bytes of chunks already wait for their "
                f"manifest (cap {self.early_cap}); it will be asked for again",
            )
            return
        self._write_chunk(dev, media_id, index, data)
        self._early[dev] = used + len(data)

    def _write_chunk(self, dev: str, media_id: str, index: int, data: bytes) -> None:
        d = self._spool_dir(dev, media_id)
        d.mkdir(parents=True, exist_ok=True)
        tmp = d / f"{index}.{os.getpid()}.tmp"  # the spool may be shared: one temporary name per process
        tmp.write_bytes(data)
        os.replace(tmp, d / str(index))  # a chunk file is whole or absent, even after a crash

    def _reack_complete(self, dev: str, media_id: str) -> None:
        """A chunk of a file we already have: the agent missed our ack; say it again, once per idle period."""
        now = time.monotonic()
        if now - self._reacked.get((dev, media_id), -1e9) >= self.idle_s:
            self._reacked[(dev, media_id)] = now
            if len(self._reacked) > 10_000:
                self._reacked.clear()
            self.outbox.acks.append((dev, media_id, []))

    # -- manifests ----------------------------------------------------------------------

    def on_manifest(self, dev: str, did: int, seq: int, man: Manifest, topic: str, reject: RejectFn) -> None:
        cur = self.db.execute(
            'INSERT INTO media (did, media_id, seq, record_id, camera, type, start, "end", size, '
            "sha256, chunk, chunks) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (did, media_id) DO NOTHING",
            (
                did,
                man.media,
                seq,
                man.record_id,
                man.camera,
                man.type,
                man.start,
                man.end,
                man.size,
                man.sha256,
                man.chunk,
                man.chunks,
            ),
        )
        if cur.rowcount == 0:
            reject(
                dev,
                topic,
                "media_id_reused",
                f"media {man.media} (record {man.record_id}, seq {seq}) was "
                "announced before; the first manifest stands",
            )
            return
        have = self._spooled(dev, man.media)
        d = self._spool_dir(dev, man.media)
        early_bytes = sum((d / str(i)).stat().st_size for i in have)
        self._early[dev] = max(0, self._early.get(dev, 0) - early_bytes)
        track = Track(dev, man, set(), time.monotonic() + self.idle_s, self.idle_s)
        self._tracks[(dev, man.media)] = track
        for i in sorted(have):  # early chunks are judged against the manifest now
            data = (d / str(i)).read_bytes()
            expected = man.chunk if i < man.chunks - 1 else man.size - man.chunk * (man.chunks - 1)
            if i >= man.chunks or len(data) != expected:
                (d / str(i)).unlink()
                reject(dev, topic, "bad_chunk", f"early chunk {i} of {man.media} does not fit its manifest")
            else:
                track.have.add(i)
        if len(track.have) == man.chunks:
            self._assemble(track, topic, reject)

    # -- completion ---------------------------------------------------------------------

    def _assemble(self, track: Track, topic: str, reject: RejectFn) -> None:
        man, dev = track.manifest, track.dev
        src = self._spool_dir(dev, man.media)
        final = self.final_path(dev, man)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = final.with_name(f"{final.name}.{os.getpid()}.tmp")
        digest = hashlib.sha256()
        size = 0
        with open(tmp, "wb") as out:
            for i in range(man.chunks):
                data = (src / str(i)).read_bytes()
                digest.update(data)
                size += len(data)
                out.write(data)
            out.flush()
            os.fsync(out.fileno())
        if size != man.size or digest.digest() != man.sha256:
            tmp.unlink()
            shutil.rmtree(src, ignore_errors=True)
            track.have.clear()
            reject(
                dev,
                topic,
                "media_sha_mismatch",
                f"media {man.media}: {size} bytes with SHA-256 {digest.hexdigest()[:16]}... do not match the "
                f"manifest ({man.size} bytes, {man.sha256.hex()[:16]}...); all chunks asked for again",
            )
            self._ask(track)
            return
        os.replace(tmp, final)
        _fsync_dir(final.parent)
        self.db.execute(
            "UPDATE media SET state = 'complete', path = ?, completed_at = ? WHERE media_id = ? AND "
            "did = (SELECT did FROM devices WHERE dev = ?)",
            (str(final), int(time.time() * 1000), man.media, dev),
        )
        shutil.rmtree(src, ignore_errors=True)
        self._tracks.pop((dev, man.media), None)
        log.info("media %s of %s complete: %s (%d bytes)", man.media, dev, final.name, size)
        self.outbox.acks.append((dev, man.media, []))

    def _ask(self, track: Track) -> None:
        # Never an empty list here: it would tell the agent the file is complete. Every chunk spooled
        # but none assembled (its receiver stopped before committing): the last one, sent again, does it.
        missing = sorted(set(range(track.manifest.chunks)) - track.have) or [track.manifest.chunks - 1]
        self.outbox.acks.append((track.dev, track.manifest.media, missing))
        log.info(
            "media %s of %s: asking again for %d of %d chunks",
            track.manifest.media,
            track.dev,
            len(missing),
            track.manifest.chunks,
        )

    def tick(self) -> None:
        """Ask for the holes of every item idle past its deadline; back off while nothing comes."""
        now = time.monotonic()
        for key, track in list(self._tracks.items()):
            if now >= track.next_ask:
                row = self._row(*key)
                if row is None or row[0] == "complete":  # completed (or gone) on another receiver
                    del self._tracks[key]
                    continue
                track.have = self._spooled(*key)
                self._ask(track)
                track.backoff = min(track.backoff * 2, self.retry_max_s)
                track.next_ask = now + track.backoff

    def take_outbox(self) -> Outbox:
        out, self.outbox = self.outbox, Outbox()
        return out

    def counts(self) -> dict[str, int]:
        return {"tracked": len(self._tracks), "early_bytes": sum(self._early.values())}

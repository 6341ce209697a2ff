"""The on-disk ring of one camera: MPEG-TS segments whose names carry their wall-clock span.

A finished segment is `START_MS-END_MS.ts` (epoch ms, UTC), so the ring needs no index
that could disagree with the files, and survives agent restarts as it is. ffmpeg writes
`part-RUN-N.ts` while a segment is open; one left behind by a kill -9 (MPEG-TS stays
readable up to the last whole packet) is probed and renamed by recover_parts().
"""

from __future__ import annotations

import bisect
import json
import logging
import re
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

FINAL_RE = re.compile(r"^(\d{13})-(\d{13})\.ts$")
PART_GLOB = "part-*.ts"


@dataclass(frozen=True, order=True)
class Segment:
    start_ms: int
    end_ms: int
    path: Path

    @property
    def size(self) -> int:
        try:
            return self.path.stat().st_size
        except FileNotFoundError:
            return 0


def final_name(start_ms: int, end_ms: int) -> str:
    return f"{start_ms:013d}-{end_ms:013d}.ts"


class Ring:
    """Lists, adds and prunes segments; one lock so a clip cut never sees a half-pruned ring.

    The directory is scanned once; after that an in-memory index (kept sorted, with the
    byte total) answers, so the per-segment prune costs nothing even with 3600 segments
    an hour (a scan and a stat of every file each second cost more CPU than ffmpeg's copy).
    """

    def __init__(self, directory: Path, max_minutes: float, max_bytes: int, ffprobe: str = "ffprobe"):
        self.dir = directory
        self.max_ms = int(max_minutes * 60_000)
        self.max_bytes = max_bytes
        self.ffprobe = ffprobe
        self.lock = threading.RLock()
        self.dir.mkdir(parents=True, exist_ok=True)
        self._index: list[Segment] | None = None
        self._sizes: dict[Path, int] = {}
        self._bytes = 0

    def _scan(self) -> list[Segment]:
        found = []
        for p in self.dir.iterdir():
            m = FINAL_RE.match(p.name)
            if m:
                found.append(Segment(int(m.group(1)), int(m.group(2)), p))
        return sorted(found)

    def _loaded(self) -> list[Segment]:
        """The index (call with the lock held)."""
        if self._index is None:
            self._index = self._scan()
            self._sizes = {s.path: s.size for s in self._index}
            self._bytes = sum(self._sizes.values())
        return self._index

    def _insert(self, seg: Segment, size: int) -> None:
        bisect.insort(self._loaded(), seg)
        self._sizes[seg.path] = size
        self._bytes += size

    def _remove(self, seg: Segment) -> int:
        idx = self._loaded()
        i = bisect.bisect_left(idx, seg)
        if i < len(idx) and idx[i] == seg:
            del idx[i]
        size = self._sizes.pop(seg.path, 0)
        self._bytes -= size
        return size

    def segments(self) -> list[Segment]:
        with self.lock:
            return list(self._loaded())

    def sized_segments(self) -> list[tuple[Segment, int]]:
        """Segments with their sizes as indexed (no stat per file), oldest first."""
        with self.lock:
            return [(s, self._sizes.get(s.path, 0)) for s in self._loaded()]

    def add(self, part: Path, start_ms: int, end_ms: int) -> Segment | None:
        """Give a closed part file its final name; an empty part (no packet arrived) is dropped."""
        size = part.stat().st_size if part.exists() else 0
        if end_ms <= start_ms or size == 0:
            part.unlink(missing_ok=True)
            return None
        seg = Segment(start_ms, end_ms, self.dir / final_name(start_ms, end_ms))
        with self.lock:
            self._loaded()  # scan before the rename, or the scan would find the new file too
            part.rename(seg.path)
            self._insert(seg, size)
        return seg

    def rename(self, seg: Segment, start_ms: int, end_ms: int) -> Segment:
        """Move a segment to a corrected span (a better clock anchor was found); pruned = unchanged."""
        new = Segment(start_ms, end_ms, self.dir / final_name(start_ms, end_ms))
        with self.lock:
            self._loaded()
            try:
                seg.path.rename(new.path)
            except FileNotFoundError:
                return seg
            self._insert(new, self._remove(seg))
        return new

    def covering(self, start_ms: int, end_ms: int) -> list[Segment]:
        """Segments overlapping [start, end], oldest first."""
        return [s for s in self.segments() if s.end_ms > start_ms and s.start_ms < end_ms]

    def prune(self, now_ms: int | None = None) -> int:
        """Drop the oldest segments past the minutes or the bytes bound; returns how many."""
        now_ms = int(time.time() * 1000) if now_ms is None else now_ms
        dropped = 0
        with self.lock:
            idx = self._loaded()
            while idx and (idx[0].end_ms < now_ms - self.max_ms or self._bytes > self.max_bytes):
                seg = idx[0]
                self._remove(seg)
                seg.path.unlink(missing_ok=True)
                dropped += 1
        if dropped:
            log.debug("ring %s: pruned %d segments", self.dir.name, dropped)
        return dropped

    def drop(self, seg: Segment) -> int:
        """Delete one segment for the disk policy; its bytes, or 0 if it was already gone.

        Under the lock, so a clip being cut (which holds it while ffmpeg reads) keeps its files."""
        with self.lock:
            idx = self._loaded()
            i = bisect.bisect_left(idx, seg)
            if i >= len(idx) or idx[i] != seg:
                return 0
            size = self._remove(seg)
            seg.path.unlink(missing_ok=True)
        return size

    def bytes_used(self) -> int:
        with self.lock:
            self._loaded()
            return self._bytes

    def recover_parts(self, exclude_run: str | None = None) -> list[Segment]:
        """Name the part files an earlier ffmpeg left open (agent or ffmpeg killed mid-segment).

        The end is the file's mtime (the last packet written), the start that minus the
        probed duration: good to the write latency, which is what the clip cut needs.
        """
        recovered = []
        for part in sorted(self.dir.glob(PART_GLOB)):
            if exclude_run and part.name.startswith(f"part-{exclude_run}-"):
                continue
            duration = self.probe_duration(part)
            if duration is None or duration <= 0:
                log.info("ring %s: dropping unreadable leftover %s", self.dir.name, part.name)
                part.unlink(missing_ok=True)
                continue
            end_ms = int(part.stat().st_mtime * 1000)
            seg = self.add(part, end_ms - int(duration * 1000), end_ms)
            if seg:
                log.info("ring %s: recovered %s (%.1f s)", self.dir.name, seg.path.name, duration)
                recovered.append(seg)
        return recovered

    def probe_duration(self, path: Path) -> float | None:
        try:
            out = subprocess.run(
                [self.ffprobe, "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
                capture_output=True,
                text=True,
                timeout=20,
                check=False,
            )
            return float(json.loads(out.stdout)["format"]["duration"])
        except (OSError, subprocess.TimeoutExpired, ValueError, KeyError, TypeError):
            return None

"""The camera rings as the disk policy sees them: which segments may go, and in which class.

A segment past the ring's retention (`[recording] ring_minutes`; the ring prunes only when a
new segment arrives, so a camera that went offline leaves its old ones) is
`recording_expired`; a segment a pending clip request still needs (the clip is not cut yet:
its post-roll is still being recorded, or it waits its turn) is `evidence_pending`, since
deleting it loses evidence the centre has not got; every other segment is `recording`.
The open `part-*.ts` that ffmpeg is writing is not in the ring's index, so it never goes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path

from core.interfaces import Evictable, EvictClass
from drivers.camera.clipper import ClipRequest
from drivers.camera.ring import Ring, Segment

PendingFn = Callable[[], list[ClipRequest]]


class RingReclaimer:
    """An EvictableSource over every recorded camera's ring."""

    def __init__(self, rings: Mapping[str, Ring], pending: PendingFn, segment_ms: int):
        self.rings = rings
        self.pending = pending
        # A clip starts at the keyframe at or before its start: one segment of margin before it.
        self.margin_ms = segment_ms

    def evictable(self, now_ms: int) -> list[Evictable]:
        wanted: dict[str, list[tuple[int, int]]] = {}
        for req in self.pending():
            wanted.setdefault(req.camera, []).append((req.start_ms - self.margin_ms, req.end_ms))
        out: list[Evictable] = []
        for camera, ring in self.rings.items():
            spans = wanted.get(camera, [])
            for seg, size in ring.sized_segments():
                cls: EvictClass
                if any(seg.end_ms > a and seg.start_ms < b for a, b in spans):
                    cls = "evidence_pending"
                elif seg.end_ms < now_ms - ring.max_ms:
                    cls = "recording_expired"
                else:
                    cls = "recording"
                out.append(Evictable(cls, seg.path, size, camera, seg.start_ms, seg.end_ms,
                                     key=camera))
        return out

    def evict(self, item: Evictable) -> bool:
        ring = self.rings.get(item.key)
        if ring is None:
            return False
        return ring.drop(Segment(item.start_ms, item.end_ms, Path(item.path))) > 0

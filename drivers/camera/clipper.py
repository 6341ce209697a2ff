"""Clip requests: wait until the ring holds the span, cut it, hand the MP4 to the media sink.

A request (from a rule, a central command or motion) is due once its end has passed and
the segment holding the end is closed. Pending requests are kept in a small JSON file next
to the ring, so a rule-triggered clip whose post-roll outlives an agent restart is still
cut afterwards (the ring survives restarts too). A clip made for a record names it in
`reason`; MediaSink holds the file until the centre acks it complete.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from core.interfaces import Component, Health, MediaSink
from drivers.camera.clips import ClipFailed, ClipUnavailable, cut_clip
from drivers.camera.config import RecordingConfig
from drivers.camera.ring import Ring

log = logging.getLogger(__name__)

EventFn = Callable[[str, str, dict[str, Any]], None]  # (camera, event, detail)


# What a cut or a snapshot writes in the work dir before the media sink takes the file (or
# the pending list's temporary copy). An agent killed meanwhile leaves them; nobody else
# would ever delete them. Everything else there (pending-clips.json) is kept.
LEFTOVERS = ("clip-*.mp4", "*.ffconcat", "snap-*.jpg", "*.tmp")


def sweep_work_dir(work_dir: Path) -> list[str]:
    """Delete what an earlier, killed agent left half-written in the cameras' work dir.

    Called before the clipper runs: one agent owns the data dir, so nothing of these is being
    written now; a pending request is cut again from the ring, into a new file."""
    gone = []
    for pattern in LEFTOVERS:
        for path in work_dir.glob(pattern):
            path.unlink(missing_ok=True)
            gone.append(path.name)
    if gone:
        log.info("camera work dir: removed %d files left by an interrupted run: %s", len(gone), ", ".join(sorted(gone)))
    return sorted(gone)


@dataclass
class ClipRequest:
    camera: str
    start_ms: int
    end_ms: int
    reason: dict[str, Any]
    id: str = field(default_factory=lambda: uuid.uuid4().hex)
    attempts: int = 0


class Clipper(Component):
    name = "camera:clips"

    def __init__(
        self,
        rings: Mapping[str, Ring],
        media: MediaSink,
        cfg: RecordingConfig,
        work_dir: Path,
        on_event: EventFn | None = None,
    ):
        self.rings = rings
        self.media = media
        self.cfg = cfg
        self.work_dir = work_dir
        self.on_event = on_event
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.pending_path = work_dir / "pending-clips.json"
        self.swept = sweep_work_dir(work_dir)
        self._pending: list[ClipRequest] = self._load()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._cut_lock = threading.Lock()  # one ffmpeg cut at a time: they are I/O bound and short
        self.made: collections.deque[tuple[str, ClipRequest]] = collections.deque(maxlen=100)  # newest last
        self.failed = 0
        self.last_failed = False

    # -- requests ----------------------------------------------------------------------
    def request(self, req: ClipRequest) -> None:
        if req.camera not in self.rings:
            raise KeyError(f"no recorded camera {req.camera!r}; recorded: {', '.join(sorted(self.rings))}")
        with self._lock:
            self._pending.append(req)
            self._save()
        self._wake.set()

    def pending(self) -> list[ClipRequest]:
        with self._lock:
            return list(self._pending)

    def due_at(self, req: ClipRequest) -> float:
        """Wall seconds after which the segment holding req.end is closed (or will never come)."""
        return req.end_ms / 1000 + self.cfg.segment_s + 1.0

    def give_up_at(self, req: ClipRequest) -> float:
        return self.due_at(req) + 2 * self.cfg.segment_s + self.cfg.io_timeout_s + 10

    def cut_and_send(self, req: ClipRequest) -> str:
        """Cut now (the caller waited until due) and hand the file over; returns the MEDIA_ID."""
        ring = self.rings[req.camera]
        out = self.work_dir / f"clip-{req.id}.mp4"
        with self._cut_lock:
            clip = cut_clip(ring, req.start_ms, req.end_ms, out, self.cfg.ffmpeg, self.cfg.ffprobe)
        try:
            media_id = self.media.add_media(
                clip.path,
                camera=req.camera,
                media_type="video/mp4",
                start_ms=clip.start_ms,
                end_ms=clip.end_ms,
                reason=req.reason,
                src=f"camera:{req.camera}",
            )
        finally:
            out.unlink(missing_ok=True)  # add_media moved it; anything left is ours to drop
        log.info("camera %s: clip %s (%d segments) for %s", req.camera, media_id, clip.segments, req.reason)
        self.made.append((media_id, req))
        self.last_failed = False
        return media_id

    def wait_and_cut(self, req: ClipRequest, stop: threading.Event | None = None) -> str:
        """For central commands: block until due (bounded by clip_max_s), then cut and send."""
        delay = self.due_at(req) - time.time()
        if delay > self.cfg.clip_max_s:
            raise ValueError(f"clip end is {delay:.0f} s in the future; at most {self.cfg.clip_max_s:g} s allowed")
        ring = self.rings[req.camera]
        waiter = stop or threading.Event()
        while True:
            now = time.time()
            segs = ring.segments()
            if segs and segs[-1].end_ms >= req.end_ms:
                break
            if now >= self.due_at(req) and (now >= self.give_up_at(req) or self._ring_idle(ring, now)):
                break
            if waiter.wait(0.2):
                break
        return self.cut_and_send(req)

    # -- component -----------------------------------------------------------------------
    def health(self) -> Health:
        return "degraded" if self.last_failed else "ok"

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            self._wake.wait(0.5)
            self._wake.clear()
            now = time.time()
            for req in self.pending():
                if stop.is_set():
                    break
                ring = self.rings.get(req.camera)
                segs = ring.segments() if ring else []
                covered = bool(segs) and segs[-1].end_ms >= req.end_ms
                if not covered and now < self.due_at(req):
                    continue
                if not covered and now < self.give_up_at(req) and not self._ring_idle(ring, now):
                    continue
                self._process(req)

    def _ring_idle(self, ring: Ring | None, now: float) -> bool:
        """Nothing recorded lately: waiting longer will not bring the end of the span."""
        segs = ring.segments() if ring else []
        return not segs or now - segs[-1].end_ms / 1000 > 3 * self.cfg.segment_s + self.cfg.io_timeout_s

    def _process(self, req: ClipRequest) -> None:
        try:
            self.cut_and_send(req)
        except ClipUnavailable as exc:
            self.failed += 1
            self.last_failed = True
            log.warning("camera %s: clip for %s impossible: %s", req.camera, req.reason, exc)
            if self.on_event:
                self.on_event(
                    req.camera, "clip_failed", {"camera": req.camera, "reason": req.reason, "error": str(exc)}
                )
        except (ClipFailed, OSError) as exc:
            req.attempts += 1
            if req.attempts < 3:
                log.warning("camera %s: clip attempt %d failed: %s", req.camera, req.attempts, exc)
                return  # stays pending; retried on the next pass
            self.failed += 1
            self.last_failed = True
            if self.on_event:
                self.on_event(
                    req.camera, "clip_failed", {"camera": req.camera, "reason": req.reason, "error": str(exc)}
                )
        with self._lock:
            self._pending = [r for r in self._pending if r.id != req.id]
            self._save()

    # -- persistence ---------------------------------------------------------------------
    def _load(self) -> list[ClipRequest]:
        try:
            raw = json.loads(self.pending_path.read_text())
            return [ClipRequest(**r) for r in raw]
        except FileNotFoundError:
            return []
        except (ValueError, TypeError) as exc:
            log.warning("ignoring unreadable %s: %s", self.pending_path, exc)
            return []

    def _save(self) -> None:
        tmp = self.pending_path.with_suffix(".tmp")
        with open(tmp, "w") as f:
            json.dump([asdict(r) for r in self._pending], f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.pending_path)

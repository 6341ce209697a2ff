"""Wiring of the camera subsystem: per camera a source, a recorder and a frame grabber; one clipper.

Built once by runtime.build_components(ctx). Everything that reaches the core goes through
the AgentContext: device events (online/offline/tamper/clock_drift/...), committed records
(clip rules), central commands (clip, snapshot) and the media sink.
"""

from __future__ import annotations

import logging
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from core.interfaces import AgentContext, Component
from drivers.camera.clipper import Clipper, ClipRequest
from drivers.camera.config import CameraConfig, check_rules
from drivers.camera.grabber import FrameGrabber
from drivers.camera.pool import PooledRecorder, RecordingPool
from drivers.camera.recorder import Recorder
from drivers.camera.ring import Ring
from drivers.camera.rules import RuleListener
from drivers.camera.secrets import scrub
from drivers.camera.source import CameraSource, OnvifWatch
from drivers.camera.tamper import MotionDetector, in_hours

log = logging.getLogger(__name__)


def recordings_dir(config: Any) -> Path:
    rec = config.recording
    return Path(rec.dir) if rec.dir is not None else Path(config.agent.data_dir) / "recordings"


class CameraSystem:
    def __init__(self, ctx: AgentContext):
        self.ctx = ctx
        config = ctx.config
        check_rules(config)
        self.rec_cfg = config.recording
        self.dir = recordings_dir(config)
        self.sources: dict[str, CameraSource] = {}
        self.rings: dict[str, Ring] = {}
        self.grabbers: dict[str, FrameGrabber] = {}
        self.components: list[Component] = []
        self.pool: RecordingPool | None = None
        if self.rec_cfg.processes == "shared" and any(c.record for c in config.cameras):
            self.pool = RecordingPool(self.rec_cfg)
            self.components.append(self.pool)
        for cam in config.cameras:
            self._add_camera(cam)
        self.clipper = Clipper(
            self.rings,
            ctx.media,
            self.rec_cfg,
            self.dir / ".work",
            on_event=lambda cam, ev, d: self.event(cam, ev, d),
        )
        self.components.append(self.clipper)
        if self.rings:
            from drivers.camera.reclaim import RingReclaimer

            # The rings give way to records under disk pressure (buffer.diskpolicy).
            ctx.register_evictable(
                RingReclaimer(self.rings, self.clipper.pending, int(self.rec_cfg.segment_s * 1000))
            )
        if config.clip_rules:
            ctx.subscribe_records(RuleListener(config.clip_rules, self.clipper.request))
        from drivers.camera.commands import CameraCommands

        commands = CameraCommands(self)
        ctx.register_command("clip", commands.clip)
        ctx.register_command("snapshot", commands.snapshot)

    def event(self, camera: str, event: str, detail: dict[str, Any]) -> None:
        """A device_event for the camera; a full buffer must not kill the camera's threads."""
        try:
            self.ctx.device_event(f"camera:{camera}", event, detail, src=f"camera:{camera}")
        except Exception as exc:
            log.warning("camera %s: could not record %s: %s", camera, event, exc)

    def _add_camera(self, cam: CameraConfig) -> None:
        name = cam.name
        source = CameraSource(cam, lambda ev, d: self.event(name, ev, d))
        self.sources[name] = source
        if cam.record:
            ring = Ring(self.dir / name, self.rec_cfg.ring_minutes, self.rec_cfg.ring_mb * 2**20, self.rec_cfg.ffprobe)
            self.rings[name] = ring
            args = (name, source.main_url, ring, self.rec_cfg, cam.transport, source.secrets, cam.reconnect_max_s)
            self.components.append(PooledRecorder(self.pool, *args) if self.pool is not None else Recorder(*args))
        grabber = FrameGrabber(
            cam,
            source.sub_url,
            lambda ev, d: self.event(name, ev, d),
            source.secrets,
            on_frame=FrameHooks(self, cam) if (cam.motion.enabled or cam.snapshot_interval_s) else None,
        )
        self.grabbers[name] = grabber
        self.components.append(grabber)
        if cam.onvif is not None:
            self.components.append(OnvifWatch(source))

    def snapshot(self, camera: str, reason: dict[str, Any], full: bool = False, hold: bool = True) -> str:
        """JPEG handed to the media sink; returns the MEDIA_ID. full = from the main stream if the
        camera allows it (evidence wants the resolution), else the newest sub-stream frame.
        hold=False for periodic snapshots: under disk pressure they go before any evidence."""
        grabber = self.grabbers[camera]
        jpeg: bytes | None = None
        if full and grabber.cfg.snapshot_main:
            try:
                jpeg, at_ms = grabber.grab_main_jpeg(self.sources[camera].main_url())
            except Exception as exc:  # the sub-stream frame is still a snapshot
                log.warning(
                    "camera %s: full-resolution snapshot failed (%s); using the sub stream",
                    camera,
                    scrub(str(exc), *self.sources[camera].secrets),
                )
        if jpeg is None:
            jpeg, at_ms = grabber.snapshot_jpeg()
        work = self.dir / ".work"
        work.mkdir(parents=True, exist_ok=True)
        path = work / f"snap-{camera}-{at_ms}-{time.monotonic_ns()}.jpg"
        path.write_bytes(jpeg)
        try:
            return self.ctx.media.add_media(
                path,
                camera=camera,
                media_type="image/jpeg",
                start_ms=at_ms,
                end_ms=at_ms,
                reason=reason,
                src=f"camera:{camera}",
                hold=hold,
            )
        finally:
            path.unlink(missing_ok=True)


class FrameHooks:
    """Per judged frame: motion after hours (a clip) and periodic snapshots."""

    def __init__(self, system: CameraSystem, cam: CameraConfig):
        self.system = system
        self.cam = cam
        self.motion = MotionDetector(cam.motion)
        self.last_motion_clip = 0.0
        self.last_snapshot = time.monotonic()

    def __call__(self, frame: npt.NDArray[np.uint8], gray: npt.NDArray[np.uint8]) -> None:
        now = time.monotonic()
        m = self.cam.motion
        if m.enabled:
            local = datetime.now()
            moving = self.motion.moving(gray)
            if (
                moving
                and in_hours(m.hours, local.hour * 60 + local.minute)
                and now - self.last_motion_clip >= m.cooldown_s
                and self.cam.name in self.system.rings
            ):
                self.last_motion_clip = now
                at = int(time.time() * 1000)
                self.system.clipper.request(
                    ClipRequest(
                        self.cam.name,
                        at - 5000,
                        at + int(m.clip_s * 1000),
                        {"motion": True, "rule": "motion", "hours": m.hours},
                    )
                )
                self.system.event(self.cam.name, "motion", {"camera": self.cam.name})
        if self.cam.snapshot_interval_s and now - self.last_snapshot >= self.cam.snapshot_interval_s:
            self.last_snapshot = now
            try:
                self.system.snapshot(self.cam.name, {"periodic_s": self.cam.snapshot_interval_s}, hold=False)
            except Exception as exc:
                log.warning("camera %s: periodic snapshot failed: %s", self.cam.name, exc)

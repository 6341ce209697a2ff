"""Frames from a camera's sub stream (opencv): liveness, tamper, the latest frame for snapshots.

Liveness is the age of the last frame, as Frigate judges it, not whether a thread runs.
An RTSP server that freezes with the connection open sends nothing and closes nothing, so
opencv's FFmpeg backend is given a read timeout (CAP_PROP_READ_TIMEOUT_MSEC = stale_after_s):
grab() then fails after that long without a frame, and the camera is reported offline.
Every frame is grabbed (so no stale buffer builds up) but only grab_fps of them are
decoded to pixels (retrieve) and judged.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from core.interfaces import Component, Health
from drivers.camera.config import CameraConfig
from drivers.camera.onvif_client import CameraError
from drivers.camera.secrets import scrub
from drivers.camera.tamper import TamperJudge, to_gray

log = logging.getLogger(__name__)

EventFn = Callable[[str, dict[str, Any]], None]
FrameHook = Callable[[npt.NDArray[np.uint8], npt.NDArray[np.uint8]], None]  # (bgr, gray)
_ENV_LOCK = threading.Lock()  # opencv reads its FFmpeg options from the environment at open


def open_capture(url: str, transport: str, timeout_s: float) -> cv2.VideoCapture | None:
    """Open with open and read timeouts; None if the stream does not open in time."""
    # One decoder thread: a sub stream decodes easily on one core, and FFmpeg's default (one
    # per core, each with its own frame buffers) cost 4 MB and 2 threads per camera here.
    params = [
        cv2.CAP_PROP_OPEN_TIMEOUT_MSEC,
        int(timeout_s * 1000),
        cv2.CAP_PROP_READ_TIMEOUT_MSEC,
        int(timeout_s * 1000),
        cv2.CAP_PROP_N_THREADS,
        1,
    ]
    with _ENV_LOCK:
        os.environ["OPENCV_FFMPEG_CAPTURE_OPTIONS"] = f"rtsp_transport;{transport}"
        cap = cv2.VideoCapture(url, cv2.CAP_FFMPEG, params)
    if not cap.isOpened():
        cap.release()
        return None
    return cap


class FrameGrabber(Component):
    def __init__(
        self,
        cfg: CameraConfig,
        url: Callable[[], str],
        on_event: EventFn,
        secrets: tuple[str | None, ...] = (),
        on_frame: FrameHook | None = None,
    ):
        self.name = f"camera:{cfg.name}:frames"
        self.cfg = cfg
        self._url = url
        self.on_event = on_event
        self.secrets = secrets
        self.on_frame = on_frame
        self.online: bool | None = None  # None until the first frame or the first failure
        self.tamper = TamperJudge(cfg.tamper)
        self.frames = 0
        self.last_frame_at = 0.0  # monotonic
        self._latest: tuple[float, npt.NDArray[np.uint8]] | None = None  # (wall s, BGR)
        self._lock = threading.Lock()
        self._pending: list[tuple[str, dict[str, Any]]] = []  # tamper events, reported by run()

    def health(self) -> Health:
        if not self.online:
            return "down"
        return "degraded" if self.tamper.active else "ok"

    def latest(self, max_age_s: float | None = None) -> tuple[float, npt.NDArray[np.uint8]] | None:
        """The newest judged frame and its wall time, if fresh enough."""
        max_age = self.cfg.stale_after_s if max_age_s is None else max_age_s
        with self._lock:
            if self._latest is None or time.time() - self._latest[0] > max_age:
                return None
            return self._latest

    def snapshot_jpeg(self, quality: int = 90) -> tuple[bytes, int]:
        """JPEG of the newest frame and its epoch ms; raises LookupError if there is none fresh."""
        got = self.latest()
        if got is None:
            raise LookupError(f"camera {self.cfg.name} has no frame younger than {self.cfg.stale_after_s:g} s")
        ok, buf = cv2.imencode(".jpg", got[1], [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise LookupError("JPEG encoding failed")
        return buf.tobytes(), int(got[0] * 1000)

    def grab_main_jpeg(self, url: str, quality: int = 90) -> tuple[bytes, int]:
        """One full-resolution frame from the main stream (its own short RTSP session), as JPEG."""
        cap = open_capture(url, self.cfg.transport, self.cfg.stale_after_s)
        if cap is None:
            raise LookupError(f"camera {self.cfg.name}: main stream does not open")
        try:
            ok, frame = cap.read()
            at_ms = int(time.time() * 1000)
        finally:
            cap.release()
        if not ok or frame is None:
            raise LookupError(f"camera {self.cfg.name}: no frame from the main stream")
        ok, buf = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, quality])
        if not ok:
            raise LookupError("JPEG encoding failed")
        return buf.tobytes(), at_ms

    def run(self, stop: threading.Event) -> None:
        """A reader thread grabs; this thread is the watchdog and the only one that reports.

        opencv's read timeout fires on a frozen stream, but its FFmpeg backend then retries the
        read instead of failing (seen with opencv 5.0 against a SIGSTOPped server), so liveness
        cannot wait for grab() to return: it is the age of the last frame, checked twice a second.
        """
        reader_stop = threading.Event()
        reader = threading.Thread(target=self._reader, args=(reader_stop,), daemon=True, name=f"{self.name}:read")
        started = time.monotonic()
        reader.start()
        try:
            while not stop.wait(0.5):
                age = time.monotonic() - (self.last_frame_at or started)
                if age > self.cfg.stale_after_s:
                    self._set_online(False, f"no frame for {age:.1f} s")
                elif self.last_frame_at:
                    self._set_online(True, "")
                self._drain_events()
        finally:
            reader_stop.set()
            # release() of a capture whose server froze waits out the timeout; do not wait longer
            reader.join(timeout=2 * self.cfg.stale_after_s + 2)
            self._drain_events()

    def _reader(self, stop: threading.Event) -> None:
        backoff = 1.0
        while not stop.is_set():
            try:
                url = self._url()
            except CameraError as exc:  # ONVIF could not say where the stream is
                log.warning("camera %s: %s", self.cfg.name, exc)
                backoff = backoff * 2 if exc.retryable else self.cfg.reconnect_max_s
                stop.wait(min(backoff, self.cfg.reconnect_max_s))
                continue
            cap = open_capture(url, self.cfg.transport, self.cfg.stale_after_s)
            got = False
            if cap is not None:
                try:
                    got = self._read(cap, stop)
                finally:
                    cap.release()
            backoff = 1.0 if got else min(backoff * 2, self.cfg.reconnect_max_s)
            if stop.is_set():
                break
            log.debug("camera %s: reconnecting to %s in %.0f s", self.cfg.name, scrub(url, *self.secrets), backoff)
            stop.wait(backoff)

    def _read(self, cap: cv2.VideoCapture, stop: threading.Event) -> bool:
        interval = 1.0 / self.cfg.grab_fps
        next_judge = 0.0
        got = False
        while not stop.is_set():
            asked = time.monotonic()
            if not cap.grab():
                return got
            now = time.monotonic()
            if now - asked >= 0.9 * self.cfg.stale_after_s:
                # The read timed out; opencv 5.0 then hands out a frame left in the decoder
                # instead of failing. A frozen camera must not look alive every few seconds.
                log.debug("camera %s: grab took %.1f s; treating it as a timeout", self.cfg.name, now - asked)
                return got
            got = True
            self.frames += 1
            self.last_frame_at = now
            if now < next_judge:
                continue
            next_judge = now + interval
            ok, frame = cap.retrieve()
            if ok and frame is not None:
                self._judge(np.asarray(frame, dtype=np.uint8))
        return got

    def _judge(self, frame: npt.NDArray[np.uint8]) -> None:
        with self._lock:
            self._latest = (time.time(), frame)
        gray = to_gray(frame)
        if self.cfg.tamper.enabled:
            change = self.tamper.feed(gray)
            if change is not None:
                event, verdict = change
                detail: dict[str, Any] = {"camera": self.cfg.name, "metrics": verdict.metrics}
                if verdict.condition:
                    detail["condition"] = verdict.condition
                log.warning("camera %s: %s %s", self.cfg.name, event, verdict.condition or "cleared")
                with self._lock:
                    self._pending.append((event, detail))
        if self.on_frame is not None:
            self.on_frame(frame, gray)

    def _set_online(self, online: bool, reason: str) -> None:
        if self.online is online:
            return
        self.online = online
        if online:
            log.info("camera %s online", self.cfg.name)
            self.on_event("online", {"camera": self.cfg.name})
        else:
            log.warning("camera %s offline: %s", self.cfg.name, reason)
            self.on_event("offline", {"camera": self.cfg.name, "reason": reason})

    def _drain_events(self) -> None:
        with self._lock:
            pending, self._pending = self._pending, []
        for event, detail in pending:
            self.on_event(event, detail)

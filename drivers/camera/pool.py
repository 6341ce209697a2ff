"""`[recording] processes = "shared"`: one ffmpeg records every healthy camera; a failing camera leaves it.

Eight ffmpegs cost 116 MB (PSS) and one ffmpeg with eight inputs 44 MB, for the same CPU
(docs/benchmarks.md, issue 13). But one process for several cameras fails differently: when
a camera freezes or drops, ffmpeg 5.1 ends that input after the read timeout and goes on
with the others, never reconnecting it and never exiting; and a camera that is down when it
starts makes the whole process exit. So the pool watches each camera's own segment list
(`-segment_list pipe:N`, one pipe per camera): a camera with no closed segment for
`io_timeout_s` + 3 segments (or none at all when the process ended) is evicted, the pool
restarts without it (the others lose the time it takes to open every input again: a gap
of about 8 s with 8 cameras here; once per failure, not per retry), and the evicted
camera records in its own ffmpeg from then on, with the per-camera backoff, until the agent
restarts. Recording itself, the ring and the wall-clock anchoring are the Recorder's.
"""

from __future__ import annotations

import collections
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.interfaces import Component, Health
from drivers.camera.config import RecordingConfig
from drivers.camera.onvif_client import CameraError
from drivers.camera.recorder import Recorder, _die_with_parent, ffmpeg_record_args, stop_ffmpeg
from drivers.camera.ring import Ring
from drivers.camera.secrets import scrub

log = logging.getLogger(__name__)

# Before the first segment, ffmpeg opens its inputs one after the other: with 8 cameras all
# had closed segments 13 s after the start on this 2-core machine under load.
STARTUP_GRACE_S = 5.0
STARTUP_PER_INPUT_S = 2.0


def shared_args(
    ffmpeg: str, members: list[tuple[str, Path, int]], cfg: RecordingConfig, transports: list[str]
) -> list[str]:
    """One command for several cameras: each camera's inputs and outputs exactly as its own
    recorder would have them (ffmpeg_record_args), its list on its own pipe (fd)."""
    inputs: list[str] = []
    outputs: list[str] = []
    for i, ((url, part_pattern, fd), transport) in enumerate(zip(members, transports, strict=True)):
        single = ffmpeg_record_args(ffmpeg, url, part_pattern, cfg.segment_s, cfg.io_timeout_s, transport)
        k = single.index("-i")
        # ffmpeg opens its inputs one after the other, each probed for up to 5 s by default
        # (about 2 s each measured with 8 cameras): keep the probe to one second.
        inputs += [*single[single.index("-rtsp_transport") : k], "-analyzeduration", "1000000", *single[k : k + 2]]
        tail = single[k + 2 :]
        tail[tail.index("0:v:0")] = f"{i}:v:0"
        tail[tail.index("pipe:1")] = f"pipe:{fd}"
        outputs += tail
    return [ffmpeg, "-hide_banner", "-loglevel", "warning", "-nostdin", *inputs, *outputs]


class PooledRecorder(Recorder):
    """A camera's recorder whose ffmpeg is the pool's, until the pool evicts it; then its own."""

    def __init__(
        self,
        pool: RecordingPool,
        camera: str,
        url: Callable[[], str],
        ring: Ring,
        cfg: RecordingConfig,
        transport: str = "tcp",
        secrets: tuple[str | None, ...] = (),
        backoff_max_s: float = 30.0,
    ):
        super().__init__(camera, url, ring, cfg, transport, secrets, backoff_max_s)
        self.pool = pool
        self.evicted = threading.Event()

    def run(self, stop: threading.Event) -> None:
        if not self.evicted.is_set():
            self.ring.recover_parts()
            self.pool.join(self)
            try:
                while not stop.wait(0.5):
                    if self.evicted.is_set():
                        break
            finally:
                self.pool.leave(self)
            if stop.is_set():
                return
            log.warning("camera %s: records in its own ffmpeg from now on", self.camera)
        super().run(stop)


class RecordingPool(Component):
    """The one shared ffmpeg: restarted when a camera joins, leaves or is evicted."""

    def __init__(self, cfg: RecordingConfig) -> None:
        self.name = "camera:recording-pool"
        self.cfg = cfg
        self.runs = 0
        self._members: dict[str, PooledRecorder] = {}
        self._lock = threading.Lock()
        self._changed = threading.Event()
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)
        self._raw: collections.deque[str] = collections.deque(maxlen=50)  # unscrubbed, never logged

    def join(self, member: PooledRecorder) -> None:
        with self._lock:
            self._members[member.camera] = member
        self._changed.set()

    def leave(self, member: PooledRecorder) -> None:
        with self._lock:
            if self._members.pop(member.camera, None) is None:
                return
        self._changed.set()

    def health(self) -> Health:
        with self._lock:
            members = list(self._members.values())
        if not members:
            return "ok"
        return "ok" if self._proc is not None and self._proc.poll() is None else "down"

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        try:
            while not stop.is_set():
                self._changed.clear()
                with self._lock:
                    members = list(self._members.values())
                if not members:
                    if self._wait_change(stop, None):
                        break
                    continue
                wrote = self._run_once(stop, members)
                if stop.is_set():
                    break
                if self._changed.is_set():
                    backoff = 1.0
                    continue
                backoff = 1.0 if wrote else min(backoff * 2, self.cfg.io_timeout_s * 6)
                if self._wait_change(stop, backoff):
                    break
        finally:
            self._kill()

    def _wait_change(self, stop: threading.Event, timeout: float | None) -> bool:
        """Waits for a change of members (or the timeout); True if the agent is stopping."""
        deadline = None if timeout is None else time.monotonic() + timeout
        while not stop.is_set():
            if self._changed.wait(0.5) or (deadline is not None and time.monotonic() >= deadline):
                return False
        return True

    def _run_once(self, stop: threading.Event, members: list[PooledRecorder]) -> bool:
        """One ffmpeg for `members`; True if any of them closed a segment."""
        run_id = str(int(time.time() * 1000))
        specs: list[tuple[str, Path, int]] = []
        pipes: list[tuple[PooledRecorder, int, int]] = []
        secrets: list[str | None] = []
        urls: list[str] = []
        for m in members:
            try:
                urls.append(m._url())
            except CameraError as exc:  # ONVIF could not say where: its own recorder will retry
                log.warning("camera %s: %s", m.camera, exc)
                self._evict(m, "no stream address")
        if len(urls) < len(members):
            return False  # the members changed: run() starts again with the others
        try:
            for m, url in zip(members, urls, strict=True):
                r, w = os.pipe()
                pipes.append((m, r, w))
                specs.append((url, m.ring.dir / f"part-{run_id}-%06d.ts", w))
                secrets += m.secrets
            args = shared_args(self.cfg.ffmpeg, specs, self.cfg, [m.transport for m in members])
            self.runs += 1
            self._stderr_tail.clear()
            self._raw.clear()
            try:
                self._proc = proc = subprocess.Popen(
                    args,
                    stdin=subprocess.DEVNULL,
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.PIPE,
                    text=True,
                    pass_fds=[w for _, _, w in pipes],
                    preexec_fn=_die_with_parent,  # noqa: PLW1509 - see recorder._die_with_parent
                )
            except OSError:
                for _, r, _ in pipes:
                    os.close(r)
                raise
        finally:
            for _, _, w in pipes:
                os.close(w)  # the child has its copies; EOF on each list when ffmpeg ends
        before = {m.camera: m.segments_written for m in members}
        readers = [threading.Thread(target=self._read_stderr, args=(proc, tuple(secrets)), daemon=True,
                                    name=f"{self.name}:stderr")]
        for m, r, _ in pipes:
            readers.append(threading.Thread(target=self._read_list, args=(m, r), daemon=True,
                                            name=f"{m.name}:list"))
        for t in readers:
            t.start()
        log.info("cameras %s: recording in one ffmpeg", ", ".join(m.camera for m in members))
        watch_from = time.monotonic() + STARTUP_GRACE_S + STARTUP_PER_INPUT_S * len(members)
        silent_after = self.cfg.io_timeout_s + 3 * self.cfg.segment_s
        while not stop.wait(0.5):
            if proc.poll() is not None or self._changed.is_set():
                break
            now = time.monotonic()
            dead = [m for m in members
                    if now - max(m.last_segment_at, watch_from) > silent_after]
            if dead:
                for m in dead:
                    self._evict(m, f"no segment for {silent_after:g} s")
                break
        self._kill()
        for t in readers:
            t.join(timeout=5)
        if proc.stderr is not None:
            proc.stderr.close()
        for m in members:
            m.ring.recover_parts()
            m.ring.prune()
        if not stop.is_set() and not self._changed.is_set():
            # The process ended by itself: a camera that closed no segment in this run is the
            # likely cause (ffmpeg exits when any input fails to open).
            # ffmpeg names the input that failed ("URL: Connection refused"); if no URL is named,
            # every camera that closed no segment goes.
            silent = [m for m in members if m.segments_written == before[m.camera]]
            named = [m for m, url in zip(members, urls, strict=True) if any(url in line for line in self._raw)]
            for m in [m for m in silent if m in named] or silent:
                self._evict(m, f"ffmpeg ended (code {proc.returncode}): {' | '.join(self._stderr_tail)}")
        return any(m.segments_written > before[m.camera] for m in members)

    def _evict(self, member: PooledRecorder, why: str) -> None:
        log.warning("camera %s: leaves the shared recording (%s)", member.camera, why)
        member.evicted.set()
        self.leave(member)

    @staticmethod
    def _read_list(member: PooledRecorder, fd: int) -> None:
        with open(fd, encoding="utf-8", errors="replace") as f:
            member.read_segment_list(f)

    def _read_stderr(self, proc: subprocess.Popen[str], secrets: tuple[str | None, ...]) -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            self._raw.append(line)
            clean = scrub(line.rstrip(), *secrets)
            if clean:
                self._stderr_tail.append(clean)
                log.debug("shared ffmpeg: %s", clean)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        stop_ffmpeg(proc)

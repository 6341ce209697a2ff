"""Continuous recording of one camera's main stream: one ffmpeg per camera, stream copy, into the ring.

ffmpeg's segment muxer cuts MPEG-TS segments at keyframes (`-c copy`: no decoding, so the
CPU cost is that of a bare `ffmpeg -c copy`) and prints one CSV line per closed segment on
stdout (`-segment_list pipe:1`). That line arrives when the segment closes, so its arrival
time anchors the stream clock to the wall clock: offset = arrival - stream end, keeping the
smallest offset seen in the run (the least delayed line). MPEG-TS stays readable after a
kill -9; Ring.recover_parts() names what a dead ffmpeg left. When the camera goes silent,
ffmpeg's socket timeout ends it and we restart it with backoff.
"""

from __future__ import annotations

import collections
import ctypes
import logging
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from core.interfaces import Component, Health
from drivers.camera.config import RecordingConfig
from drivers.camera.onvif_client import CameraError
from drivers.camera.ring import Ring, Segment
from drivers.camera.secrets import scrub

log = logging.getLogger(__name__)

_libc = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """Runs in the forked child before exec: SIGKILL it when the thread that started it dies.

    Without it, a SIGKILLed agent leaves ffmpeg recording on its own (ffmpeg ignores SIGPIPE),
    and the restarted agent would start a second one on the same ring. Only an already
    resolved C call runs here, no Python locks are taken between fork and exec.
    """
    _libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


def stop_ffmpeg(proc: subprocess.Popen[str] | None, timeout_s: float = 5.0) -> None:
    """SIGTERM first, so ffmpeg closes its open segments cleanly (playable to the end); SIGKILL if it hangs."""
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def ffmpeg_record_args(
    ffmpeg: str, url: str, part_pattern: Path, segment_s: float, io_timeout_s: float, transport: str = "tcp"
) -> list[str]:
    """The recording command; also what the benchmark compares against a bare `-c copy`."""
    return [
        ffmpeg,
        "-hide_banner",
        "-loglevel",
        "warning",
        "-nostdin",
        "-rtsp_transport",
        transport,
        "-timeout",
        str(int(io_timeout_s * 1_000_000)),
        "-fflags",
        "+genpts",
        "-i",
        url,
        "-map",
        "0:v:0",
        "-c",
        "copy",
        "-f",
        "segment",
        "-segment_time",
        f"{segment_s:g}",
        "-segment_format",
        "mpegts",
        "-segment_list",
        "pipe:1",
        "-segment_list_type",
        "csv",
        "-reset_timestamps",
        "0",
        str(part_pattern),
    ]


class Recorder(Component):
    """Keeps ffmpeg recording; a crash of ffmpeg is routine (camera outage), not a component crash."""

    def __init__(
        self,
        camera: str,
        url: Callable[[], str],
        ring: Ring,
        cfg: RecordingConfig,
        transport: str = "tcp",
        secrets: tuple[str | None, ...] = (),
        backoff_max_s: float = 30.0,
    ):
        self.name = f"camera:{camera}:record"
        self.camera = camera
        self._url = url
        self.ring = ring
        self.cfg = cfg
        self.transport = transport
        self.secrets = secrets
        self.backoff_max_s = backoff_max_s
        self.last_segment_at = 0.0  # monotonic
        self.segments_written = 0
        self.runs = 0
        self._proc: subprocess.Popen[str] | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=20)

    def health(self) -> Health:
        fresh = time.monotonic() - self.last_segment_at < 3 * self.cfg.segment_s + self.cfg.io_timeout_s
        return "ok" if self.last_segment_at and fresh else "down"

    def run(self, stop: threading.Event) -> None:
        backoff = 1.0
        try:
            self.ring.recover_parts()
            while not stop.is_set():
                before = self.segments_written
                permanent = False
                try:
                    self._run_once(stop)
                except CameraError as exc:  # ONVIF could not say where the stream is
                    log.warning("camera %s: %s", self.camera, exc)
                    permanent = not exc.retryable
                self.ring.recover_parts()  # the segment open when ffmpeg ended
                self.ring.prune()
                if stop.is_set():
                    break
                if permanent:
                    backoff = self.backoff_max_s
                else:
                    backoff = 1.0 if self.segments_written > before else min(backoff * 2, self.backoff_max_s)
                log.info("camera %s: recorder restarts in %.0f s", self.camera, backoff)
                if stop.wait(backoff):
                    break
        finally:
            self._kill()

    def _run_once(self, stop: threading.Event) -> None:
        run_id = str(int(time.time() * 1000))
        url = self._url()
        args = ffmpeg_record_args(
            self.cfg.ffmpeg,
            url,
            self.ring.dir / f"part-{run_id}-%06d.ts",
            self.cfg.segment_s,
            self.cfg.io_timeout_s,
            self.transport,
        )
        self.runs += 1
        self._stderr_tail.clear()
        self._proc = proc = subprocess.Popen(
            args,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=_die_with_parent,  # noqa: PLW1509 - see _die_with_parent
        )
        readers = [
            threading.Thread(target=self._read_list, args=(proc,), daemon=True, name=f"{self.name}:list"),
            threading.Thread(target=self._read_stderr, args=(proc,), daemon=True, name=f"{self.name}:stderr"),
        ]
        for t in readers:
            t.start()
        log.info("camera %s: recording %s", self.camera, scrub(url, *self.secrets))
        while not stop.wait(0.5):
            if proc.poll() is not None:
                break
        self._kill()
        for t in readers:
            t.join(timeout=5)
        for pipe in (proc.stdout, proc.stderr):
            if pipe is not None:
                pipe.close()
        if not stop.is_set():
            log.warning(
                "camera %s: ffmpeg ended (code %s): %s",
                self.camera,
                proc.returncode,
                " | ".join(self._stderr_tail) or "no output",
            )

    def _read_list(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        self.read_segment_list(proc.stdout)

    def read_segment_list(self, lines: Iterable[str]) -> None:
        """One CSV line per closed segment: NAME,START,END in stream seconds (one ffmpeg run).

        The first lines of a run arrive late (RTSP start-up buffering), so a smaller offset
        found later re-anchors the run's earlier segments: names stay contiguous.
        """
        offset: float | None = None
        run: list[tuple[Segment, float, float]] = []
        for line in lines:
            arrival_ms = time.time() * 1000
            try:
                name, start_s, end_s = line.strip().rsplit(",", 2)
                start, end = float(start_s), float(end_s)
            except ValueError:
                log.debug("camera %s: unexpected segment list line %r", self.camera, line)
                continue
            candidate = arrival_ms - end * 1000
            if offset is not None and candidate < offset - 20:
                run = [
                    (self.ring.rename(seg, int(a * 1000 + candidate), int(b * 1000 + candidate)), a, b)
                    for seg, a, b in run
                ]
            offset = candidate if offset is None else min(offset, candidate)
            seg = self.ring.add(self.ring.dir / Path(name).name, int(start * 1000 + offset), int(end * 1000 + offset))
            if seg is not None:
                run = run[-100:] + [(seg, start, end)]
                self.segments_written += 1
                self.last_segment_at = time.monotonic()
                self.ring.prune()

    def _read_stderr(self, proc: subprocess.Popen[str]) -> None:
        """ffmpeg repeats the input URL in errors: every line is scrubbed before it is kept or logged."""
        assert proc.stderr is not None
        for line in proc.stderr:
            clean = scrub(line.rstrip(), *self.secrets)
            if clean:
                self._stderr_tail.append(clean)
                log.debug("camera %s ffmpeg: %s", self.camera, clean)

    def _kill(self) -> None:
        proc, self._proc = self._proc, None
        stop_ffmpeg(proc)

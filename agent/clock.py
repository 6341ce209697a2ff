"""Is the system clock trustworthy? NTP sync state, and wall-clock jumps as device events.

Every record carries `at` in wall-clock milliseconds, so the centre must know when those
can be trusted. Two questions, answered here:

1. Is the clock synchronised? We ask the kernel with adjtimex(2) in read-only mode
   (modes = 0, no privilege needed). Whoever disciplines the clock (systemd-timesyncd,
   chrony, ntpd) clears STA_UNSYNC; the kernel sets it again once maxerror passes 16 s
   without an update. This is the same test `timedatectl` uses for "System clock
   synchronized", and it works without systemd or D-Bus. If the call is refused
   (e.g. a seccomp filter without adjtimex) the answer is "unknown", never a crash.
2. Did the wall clock jump? ClockWatch compares how far the wall clock moved with how far
   a clock that cannot be set moved. We use CLOCK_BOOTTIME rather than CLOCK_MONOTONIC
   because it keeps counting through suspend: a laptop-style suspend would otherwise look
   like a forward jump. NTP slewing changes the rate by at most 500 ppm (2.5 ms per 5 s),
   far below any sensible threshold, so only steps are reported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from agent.config.core import ClockSection
from core.interfaces import Component, Health

log = logging.getLogger(__name__)

STA_UNSYNC = 0x0040  # <linux/timex.h>
TIME_ERROR = 5       # adjtimex return value: clock not synchronised


class _Timeval(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_usec", ctypes.c_long)]


class _Timex(ctypes.Structure):
    """struct timex from <sys/timex.h> (glibc, LP64); ctypes adds the same alignment padding."""

    _fields_ = [
        ("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
        ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
        ("constant", ctypes.c_long), ("precision", ctypes.c_long), ("tolerance", ctypes.c_long),
        ("time", _Timeval), ("tick", ctypes.c_long), ("ppsfreq", ctypes.c_long),
        ("jitter", ctypes.c_long), ("shift", ctypes.c_int), ("stabil", ctypes.c_long),
        ("jitcnt", ctypes.c_long), ("calcnt", ctypes.c_long), ("errcnt", ctypes.c_long),
        ("stbcnt", ctypes.c_long), ("tai", ctypes.c_int),
        ("_reserved", ctypes.c_int * 11),
    ]


@dataclass(frozen=True)
class ClockSync:
    """synced is None when the kernel could not be asked; reason then says why."""

    synced: bool | None
    maxerror_ms: float | None = None
    esterror_ms: float | None = None
    reason: str = ""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True)
    except OSError:
        return None


_LIBC = _libc()


def read_sync() -> ClockSync:
    """Ask the kernel whether the clock is NTP-synchronised (adjtimex with modes = 0)."""
    if _LIBC is None or not hasattr(_LIBC, "adjtimex"):
        return ClockSync(None, reason="adjtimex is not available")
    tx = _Timex()
    tx.modes = 0  # read only: never changes the clock, needs no CAP_SYS_TIME
    state = _LIBC.adjtimex(ctypes.byref(tx))
    if state < 0:
        err = ctypes.get_errno()
        return ClockSync(None, reason=f"adjtimex failed: errno {err}")
    synced = state != TIME_ERROR and not tx.status & STA_UNSYNC
    return ClockSync(synced, maxerror_ms=tx.maxerror / 1000, esterror_ms=tx.esterror / 1000)


def boottime() -> float:
    """Seconds since boot, counting suspend; cannot be set, so it is our reference."""
    return time.clock_gettime(time.CLOCK_BOOTTIME)


class EventSink(Protocol):
    """The part of core.interfaces.AgentContext that ClockWatch uses."""

    def device_event(self, device: str, event: str, detail: Mapping[str, Any] | None = None,
                     src: str = "agent") -> None: ...


class CentreClock:
    """This PC's clock against the centre's, from the `at` of verified central commands.

    uplink-v1 acks carry no time, a command does: `at` is the centre's clock when it sent it.
    Its arrival time here minus `at` is the offset plus the transit delay, which is never
    negative and is long for a command the broker kept while the agent was offline; so the
    smallest of the recent samples is the estimate (NTP's minimum filter). A command the
    agent refuses for its skew (`command_max_skew_s`) never becomes a sample."""

    def __init__(self, keep: int = 16, max_age_s: float = 86400.0,
                 wall: Callable[[], float] = time.time, mono: Callable[[], float] = time.monotonic) -> None:
        self._samples: deque[tuple[float, int]] = deque(maxlen=keep)
        self._max_age_s = max_age_s
        self._wall = wall
        self._mono = mono
        self._lock = threading.Lock()

    def note(self, at_ms: int) -> None:
        with self._lock:
            self._samples.append((self._mono(), int(self._wall() * 1000) - int(at_ms)))

    def as_dict(self) -> dict[str, int | None]:
        """`centre_offset_ms` (positive: this PC is ahead) and how many samples it rests on."""
        with self._lock:
            horizon = self._mono() - self._max_age_s
            while self._samples and self._samples[0][0] < horizon:
                self._samples.popleft()
            best = min((s for _, s in self._samples), default=None)
            return {"centre_offset_ms": best, "centre_samples": len(self._samples)}


class ClockWatch(Component):
    """Every check_interval_s: report wall-clock jumps past jump_threshold_s and changes of
    the NTP sync state as `device_event`s (device "agent"), and keep health "degraded"
    while the clock is known to be unsynchronised.

    The time sources are parameters so a test can step the wall clock; the system clock
    itself cannot be set without CAP_SYS_TIME, and must not be on a shared machine.
    """

    name = "clock"

    def __init__(self, ctx: EventSink, cfg: ClockSection, *,
                 wall: Callable[[], float] = time.time,
                 reference: Callable[[], float] = boottime,
                 sync: Callable[[], ClockSync] = read_sync) -> None:
        self._ctx = ctx
        self._cfg = cfg
        self._wall = wall
        self._reference = reference
        self._sync = sync
        self._last_sync: ClockSync | None = None
        self.jumps = 0

    @property
    def last_sync(self) -> ClockSync | None:
        """The latest sync reading, for the status document."""
        return self._last_sync

    def health(self) -> Health:
        s = self._last_sync
        return "degraded" if s is not None and s.synced is False else "ok"

    def run(self, stop: threading.Event) -> None:
        self._check_sync(first=True)
        wall0, ref0 = self._wall(), self._reference()
        while not stop.wait(self._cfg.check_interval_s):
            wall1, ref1 = self._wall(), self._reference()
            self._check_jump(wall0, ref0, wall1, ref1)
            self._check_sync(first=False)
            wall0, ref0 = wall1, ref1

    def _check_jump(self, wall0: float, ref0: float, wall1: float, ref1: float) -> None:
        elapsed = ref1 - ref0
        delta = (wall1 - wall0) - elapsed
        if abs(delta) <= self._cfg.jump_threshold_s:
            return
        self.jumps += 1
        detail = {
            "delta_ms": round(delta * 1000),         # + forward, - backward
            "wall_before": round(wall0 * 1000),     # wall clock at the previous check, epoch ms
            "wall_after": round(wall1 * 1000),      # wall clock now, epoch ms
            "elapsed_ms": round(elapsed * 1000),    # true time between the two, by CLOCK_BOOTTIME
        }
        log.warning("wall clock jumped by %d ms (threshold %.1f s)", detail["delta_ms"],
                    self._cfg.jump_threshold_s)
        self._ctx.device_event("agent", "clock_jump", detail)

    def _check_sync(self, first: bool) -> None:
        now = self._sync()
        before, self._last_sync = self._last_sync, now
        if now.synced is None:
            if first:
                log.info("clock sync state unknown: %s", now.reason)
            return
        # At start only a bad state is news; afterwards every change of synced is.
        changed = (not now.synced) if first else (before is None or before.synced != now.synced)
        if changed:
            log.log(logging.INFO if now.synced else logging.WARNING,
                    "system clock %s", "synchronised" if now.synced else "NOT synchronised (NTP)")
            self._ctx.device_event("agent", "clock_synced" if now.synced else "clock_unsynced",
                                   {"maxerror_ms": now.maxerror_ms})

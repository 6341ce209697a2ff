"""agent.clock: the kernel's NTP sync state, and wall-clock jumps as device_event records.

The system clock cannot be stepped here (it needs CAP_SYS_TIME, and the machine is
shared), so the jump tests inject the wall clock; the reference clock and the kernel
sync call are the real ones unless a test says otherwise.
"""

from __future__ import annotations

import ctypes
import struct
import threading
from collections.abc import Iterator, Mapping
from typing import Any

import pytest

from agent.clock import STA_UNSYNC, TIME_ERROR, ClockSync, ClockWatch, boottime, read_sync
from agent.config.core import ClockSection
from tests.peers.net import wait_for

SYS_ADJTIMEX = 159  # x86_64


class Events:
    """Collects device_event calls as the agent context would record them."""

    def __init__(self) -> None:
        self.items: list[tuple[str, str, dict[str, Any]]] = []
        self.lock = threading.Lock()

    def device_event(self, device: str, event: str, detail: Mapping[str, Any] | None = None,
                     src: str = "agent") -> None:
        with self.lock:
            self.items.append((device, event, dict(detail or {})))

    def named(self, event: str) -> list[dict[str, Any]]:
        with self.lock:
            return [d for _, e, d in self.items if e == event]


class SteppableWall:
    """A wall clock that follows the real reference clock plus an offset the test can step."""

    def __init__(self) -> None:
        self.offset = 1_700_000_000.0 - boottime()
        self.reads = 0

    def __call__(self) -> float:
        self.reads += 1
        return boottime() + self.offset


@pytest.fixture
def watch() -> Iterator[tuple[ClockWatch, Events, SteppableWall]]:
    events, wall = Events(), SteppableWall()
    w = ClockWatch(events, ClockSection(jump_threshold_s=2.0, check_interval_s=0.01), wall=wall,
                   sync=lambda: ClockSync(True, 1.0, 0.5))
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    t.start()
    try:
        yield w, events, wall
    finally:
        stop.set()
        t.join(5)
        assert not t.is_alive()


def test_read_sync_matches_the_raw_syscall() -> None:
    """Decode struct timex from a raw adjtimex(2) by byte offsets, independently of the
    ctypes Structure, so a wrong field layout in agent.clock would show here."""
    libc = ctypes.CDLL(None, use_errno=True)
    buf = ctypes.create_string_buffer(208)  # sizeof(struct timex) on x86_64
    state = libc.syscall(SYS_ADJTIMEX, buf)
    assert state >= 0, ctypes.get_errno()
    maxerror, esterror, status = struct.unpack_from("<qqi", buf.raw, 24)
    got = read_sync()
    assert got.synced == (state != TIME_ERROR and not status & STA_UNSYNC)
    # maxerror grows by 500 ppm between the two calls when unsynchronised; allow for it.
    assert got.maxerror_ms is not None and abs(got.maxerror_ms - maxerror / 1000) < 5
    assert got.esterror_ms == esterror / 1000


def test_no_event_while_the_wall_clock_runs_normally(watch: tuple[ClockWatch, Events, SteppableWall]) -> None:
    w, events, wall = watch
    wait_for(lambda: wall.reads >= 20, timeout=10, what="twenty clock checks")
    assert events.items == [] and w.jumps == 0


@pytest.mark.parametrize("step_s", [3600.0, -90.0])
def test_a_step_becomes_one_clock_jump_event(watch: tuple[ClockWatch, Events, SteppableWall],
                                             step_s: float) -> None:
    w, events, wall = watch
    wait_for(lambda: wall.reads >= 3, what="the watch to start")
    wall.offset += step_s
    (detail,) = wait_for(lambda: events.named("clock_jump"), what="a clock_jump event")
    assert abs(detail["delta_ms"] - step_s * 1000) < 500
    moved = detail["wall_after"] - detail["wall_before"]
    assert abs(moved - detail["elapsed_ms"] - detail["delta_ms"]) <= 2
    reads = wall.reads
    wait_for(lambda: wall.reads >= reads + 10, what="ten more checks")
    assert len(events.named("clock_jump")) == 1, "one step must be reported once"
    assert w.jumps == 1


def test_a_drift_below_the_threshold_is_not_a_jump(watch: tuple[ClockWatch, Events, SteppableWall]) -> None:
    _, events, wall = watch
    wait_for(lambda: wall.reads >= 3, what="the watch to start")
    wall.offset += 1.5  # below jump_threshold_s = 2
    reads = wall.reads
    wait_for(lambda: wall.reads >= reads + 10, what="ten more checks")
    assert events.named("clock_jump") == []


def test_sync_changes_are_events_and_health() -> None:
    events = Events()
    states = iter([ClockSync(False, 16000.0, 16000.0), ClockSync(False, 16000.0, 16000.0),
                   ClockSync(True, 12.0, 1.0)])
    last = ClockSync(True, 12.0, 1.0)
    calls = 0

    def sync() -> ClockSync:
        nonlocal calls
        calls += 1
        return next(states, last)

    w = ClockWatch(events, ClockSection(check_interval_s=0.01), sync=sync)
    stop = threading.Event()
    t = threading.Thread(target=w.run, args=(stop,))
    t.start()
    try:
        wait_for(lambda: events.named("clock_unsynced"), what="clock_unsynced at start")
        wait_for(lambda: events.named("clock_synced"), what="clock_synced after NTP caught up")
        wait_for(lambda: calls >= 8, what="more checks")
        assert w.health() == "ok"
        assert [e for _, e, _ in events.items] == ["clock_unsynced", "clock_synced"]
        assert events.named("clock_unsynced")[0] == {"maxerror_ms": 16000.0}
    finally:
        stop.set()
        t.join(5)


def test_unsynced_clock_degrades_health_and_unknown_does_not() -> None:
    events = Events()
    w = ClockWatch(events, ClockSection(), sync=lambda: ClockSync(False, 16000.0, 16000.0))
    w._check_sync(first=True)
    assert w.health() == "degraded"
    u = ClockWatch(events, ClockSection(), sync=lambda: ClockSync(None, reason="adjtimex failed: errno 1"))
    u._check_sync(first=True)
    assert u.health() == "ok" and u.last_sync is not None and u.last_sync.synced is None
    assert [e for _, e, _ in events.items] == ["clock_unsynced"]

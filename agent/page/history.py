"""Backlog and acked seq over the last hours, for the page's chart, and the broker link watch.

Two rings in memory: one sample every FINE_S for the last hour (what a technician watching a
backlog drain wants), one a minute for `[status_page] history_hours`. Nothing is persisted:
after a restart the chart starts again, the buffer itself holds the truth.
The same thread notices the uplink's connection changing and tells the open pages at once.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.interfaces import Component, Health
from core.panels import Publish

FINE_S = 10.0
LINK_POLL_S = 0.25


@dataclass(frozen=True)
class Sample:
    at_ms: int
    backlog: int  # records not yet acked by the centre
    acked_seq: int
    last_seq: int

    def as_list(self) -> list[int]:
        return [self.at_ms, self.backlog, self.acked_seq, self.last_seq]


@dataclass(frozen=True)
class Probe:
    """What the sampler reads from the running agent (agent.daemon wires these)."""

    sample: Callable[[], Sample]
    link: Callable[[], dict[str, Any]]  # {"connected": bool, "last_error": str | None}


class History:
    def __init__(self, hours: int) -> None:
        self._lock = threading.Lock()
        self.fine: collections.deque[Sample] = collections.deque(maxlen=int(3600 / FINE_S))
        self.coarse: collections.deque[Sample] = collections.deque(maxlen=hours * 60)

    def add(self, s: Sample) -> None:
        with self._lock:
            self.fine.append(s)
            if not self.coarse or s.at_ms - self.coarse[-1].at_ms >= 60_000:
                self.coarse.append(s)

    def as_dict(self) -> dict[str, Any]:
        """Columns [at_ms, backlog, acked_seq, last_seq]: the minute ring older than the fine
        ring's first sample, then the fine ring."""
        with self._lock:
            fine = list(self.fine)
            first = fine[0].at_ms if fine else None
            coarse = [s for s in self.coarse if first is None or s.at_ms < first]
        return {"columns": ["at_ms", "backlog", "acked_seq", "last_seq"],
                "samples": [s.as_list() for s in (*coarse, *fine)]}


class Sampler(Component):
    name = "page:sampler"

    def __init__(self, probe: Probe, history: History, publish: Publish) -> None:
        self.probe = probe
        self.history = history
        self.publish = publish
        self.link: dict[str, Any] | None = None
        self.alive = False

    def health(self) -> Health:
        return "ok" if self.alive else "down"

    def run(self, stop: threading.Event) -> None:
        next_sample = 0.0
        self.alive = True
        try:
            while True:
                link = self.probe.link()
                if link != self.link:
                    self.link = link
                    self.publish("link", link)
                now = time.monotonic()
                if now >= next_sample:
                    next_sample = now + FINE_S
                    s = self.probe.sample()
                    self.history.add(s)
                    self.publish("sample", {"sample": s.as_list()})
                if stop.wait(LINK_POLL_S):
                    return
        finally:
            self.alive = False

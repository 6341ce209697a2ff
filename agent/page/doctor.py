"""The doctor's checks for the page: run in this component's thread, never on the API's loop.

A run takes seconds (it probes the broker, the cameras' streams, the scales), so the page
shows the last results with their age and asks for a new run; runs never overlap. It runs
when a page first asks for results and on the page's button; with `[status_page]
doctor_every_min` > 0 also that often, and once shortly after start.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.doctor import Finding, Result, error
from core.interfaces import Component, Health
from core.panels import Publish

log = logging.getLogger(__name__)

FIRST_RUN_S = 5.0


class DoctorRunner(Component):
    name = "page:doctor"

    def __init__(self, run: Callable[[], list[Finding]], every_min: int, publish: Publish) -> None:
        self._run = run
        self.every_s = every_min * 60.0
        self.publish = publish
        self._wanted = threading.Event()
        self._lock = threading.Lock()
        self.running = False
        self.findings: list[Finding] = []
        self.finished_ms: int | None = None
        self.took_s: float | None = None

    def health(self) -> Health:
        return "ok"

    def request(self) -> None:
        """Ask for a run (the page's button); one already running counts."""
        self._wanted.set()

    def as_dict(self) -> dict[str, Any]:
        with self._lock:
            worst = max((f.result for f in self.findings), key=_rank, default=None)
            return {"running": self.running or self._wanted.is_set(), "finished_ms": self.finished_ms,
                    "took_s": self.took_s, "worst": worst.value if worst else None,
                    "findings": [f.as_dict() for f in self.findings]}

    def run(self, stop: threading.Event) -> None:
        wait = FIRST_RUN_S if self.every_s else None
        while not stop.is_set():
            deadline = time.monotonic() + wait if wait is not None else None
            while not self._wanted.is_set() and not stop.is_set():
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    break
                stop.wait(min(0.2, left) if left is not None else 0.2)
            if stop.is_set():
                return
            self._wanted.clear()
            self._once()
            wait = self.every_s or None

    def _once(self) -> None:
        self.running = True
        self.publish("doctor", {"running": True})
        t0 = time.monotonic()
        try:
            findings = self._run()
        except Exception as exc:  # the doctor guards each check; this is the doctor itself
            log.exception("the doctor failed")
            findings = [error("doctor.run", f"the doctor itself failed: {type(exc).__name__}: {exc}",
                              "make a support bundle (coopagent support-bundle) for the helpdesk")]
        with self._lock:
            self.findings = findings
            self.finished_ms = time.time_ns() // 1_000_000
            self.took_s = round(time.monotonic() - t0, 1)
            self.running = False
        self.publish("doctor", {"running": False, "finished_ms": self.finished_ms})


def _rank(r: Result) -> int:
    return {Result.OK: 0, Result.SKIPPED: 0, Result.WARNING: 1, Result.ERROR: 2}[r]

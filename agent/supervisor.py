"""Runs each Component in its own thread and restarts it after a crash, with backoff.

At most `max_restarts` crashes within `restart_window_s`: past that the component is
reported "down" and left to cool down for a whole window before one more try, so a
camera that is broken for the afternoon neither spins a core nor takes the agent (and
the records of every other device) down with it. Components stop in the reverse of the
order they were added, each with its own stop event.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from dataclasses import dataclass, field

from agent.config.core import SupervisorSection
from core.interfaces import Component, Health

log = logging.getLogger(__name__)


@dataclass
class _Slot:
    component: Component
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    crashes: deque[float] = field(default_factory=deque)
    restarts: int = 0
    last_error: str | None = None
    given_up: bool = False
    running: bool = False


class Supervisor:
    def __init__(self, cfg: SupervisorSection):
        self.cfg = cfg
        self._slots: list[_Slot] = []

    def add(self, component: Component) -> None:
        self._slots.append(_Slot(component))

    def start(self) -> None:
        for slot in self._slots:
            self._start(slot)

    def _start(self, slot: _Slot) -> None:
        slot.thread = threading.Thread(target=self._run, args=(slot,), name=f"comp-{slot.component.name}",
                                       daemon=True)
        slot.thread.start()

    def _run(self, slot: _Slot) -> None:
        comp = slot.component
        backoff = 0.5
        while not slot.stop.is_set():
            slot.running = True
            try:
                comp.run(slot.stop)
                if slot.stop.is_set():
                    break
                raise RuntimeError("returned before it was asked to stop")
            except Exception as exc:
                slot.running = False
                slot.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("component %s crashed: %s", comp.name, slot.last_error)
                now = time.monotonic()
                slot.crashes.append(now)
                while slot.crashes and now - slot.crashes[0] > self.cfg.restart_window_s:
                    slot.crashes.popleft()
                if len(slot.crashes) >= self.cfg.max_restarts:
                    slot.given_up = True
                    log.error("component %s crashed %d times within %.0f s; down, next try in %.0f s",
                              comp.name, len(slot.crashes), self.cfg.restart_window_s, self.cfg.restart_window_s)
                    if slot.stop.wait(self.cfg.restart_window_s):
                        break
                    slot.crashes.clear()
                    slot.given_up = False
                    backoff = 0.5
                else:
                    if slot.stop.wait(backoff):
                        break
                    backoff = min(self.cfg.backoff_max_s, backoff * 2)
                slot.restarts += 1
                log.info("restarting component %s (restart %d)", comp.name, slot.restarts)
        slot.running = False

    def stop(self, timeout: float = 15.0) -> None:
        for slot in reversed(self._slots):
            self.stop_one(slot.component, timeout)

    def stop_one(self, component: Component, timeout: float = 15.0) -> None:
        for slot in self._slots:
            if slot.component is component:
                slot.stop.set()
                if slot.thread is not None:
                    slot.thread.join(timeout)
                    if slot.thread.is_alive():
                        log.error("component %s did not stop within %.0f s", component.name, timeout)

    def health(self) -> dict[str, Health]:
        out: dict[str, Health] = {}
        for slot in self._slots:
            if slot.given_up or not slot.running:
                out[slot.component.name] = "down"
            else:
                try:
                    out[slot.component.name] = slot.component.health()
                except Exception:
                    out[slot.component.name] = "degraded"
        return out

    def details(self) -> dict[str, dict[str, object]]:
        return {s.component.name: {"restarts": s.restarts, "last_error": s.last_error, "given_up": s.given_up}
                for s in self._slots}

"""Supervision: restart after a crash with backoff, give up past N per window, stop in reverse order."""

from __future__ import annotations

import threading

from agent.config.core import SupervisorSection
from agent.supervisor import Supervisor
from core.interfaces import Component
from tests.peers.net import wait_for


class Crashy(Component):
    name = "crashy"

    def __init__(self, crashes: int):
        self.crashes = crashes
        self.runs = 0

    def run(self, stop: threading.Event) -> None:
        self.runs += 1
        if self.runs <= self.crashes:
            raise RuntimeError(f"boom {self.runs}")
        stop.wait()


class Recorder(Component):
    def __init__(self, name: str, log: list[str]):
        self.name = name
        self.log = log

    def run(self, stop: threading.Event) -> None:
        stop.wait()
        self.log.append(self.name)


def test_crashed_component_is_restarted_and_becomes_ok() -> None:
    sup = Supervisor(SupervisorSection(max_restarts=5, restart_window_s=60, backoff_max_s=0.2))
    c = Crashy(crashes=2)
    sup.add(c)
    sup.start()
    wait_for(lambda: c.runs == 3 and sup.health()["crashy"] == "ok", timeout=10, what="third run")
    assert sup.details()["crashy"]["restarts"] == 2 and "boom 2" in str(sup.details()["crashy"]["last_error"])
    sup.stop()


def test_component_is_down_after_max_crashes_in_window() -> None:
    sup = Supervisor(SupervisorSection(max_restarts=3, restart_window_s=60, backoff_max_s=0.1))
    c = Crashy(crashes=100)
    sup.add(c)
    sup.start()
    wait_for(lambda: sup.details()["crashy"]["given_up"], timeout=10, what="give up")
    runs = c.runs
    assert sup.health()["crashy"] == "down" and runs == 3
    threading.Event().wait(0.5)  # an observation window: no restart may happen in the cool-down
    assert c.runs == runs
    sup.stop(timeout=5)


def test_stop_in_reverse_order() -> None:
    log: list[str] = []
    sup = Supervisor(SupervisorSection())
    for n in ("buffer", "uplink", "camera"):
        sup.add(Recorder(n, log))
    sup.start()
    sup.stop()
    assert log == ["camera", "uplink", "buffer"]

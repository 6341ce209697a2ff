"""Fixtures of the serial tests: socat pty pairs under tmp_path, components run in threads."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from agent.interfaces import Component
from drivers.serial.sim.pty import PtyLink


@pytest.fixture
def pty_pair(tmp_path: Path) -> Iterator[Callable[[str], PtyLink]]:
    links: list[PtyLink] = []

    def make(name: str) -> PtyLink:
        link = PtyLink(tmp_path / f"tty-{name}", tmp_path / f"dev-{name}").start()
        links.append(link)
        return link

    yield make
    for link in links:
        link.stop()


class Running:
    """A Component in its own thread, stopped and joined at the end (no thread left behind)."""

    def __init__(self, component: Component) -> None:
        self.component = component
        self.stop = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, name=component.name, daemon=True)

    def _run(self) -> None:
        try:
            self.component.run(self.stop)
        except BaseException as exc:  # surfaced by close()
            self.error = exc

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=10)
        assert not self.thread.is_alive(), f"{self.component.name} did not stop"
        if self.error is not None:
            raise self.error


@pytest.fixture
def run_component() -> Iterator[Callable[[Component], Running]]:
    running: list[Running] = []

    def start(c: Component) -> Running:
        r = Running(c)
        r.thread.start()
        running.append(r)
        return r

    yield start
    for r in reversed(running):
        r.close()

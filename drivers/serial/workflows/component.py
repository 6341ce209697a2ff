"""The workflow's own supervised thread: pairing windows that expire and outbox records to re-send."""

from __future__ import annotations

import logging
import threading

from core.interfaces import Component, Health
from drivers.serial.workflows.engine import WorkflowEngine

log = logging.getLogger(__name__)


class WorkflowTicker(Component):
    name = "workflow"

    def __init__(self, engine: WorkflowEngine, interval_s: float = 0.1) -> None:
        self.engine = engine
        self.interval_s = interval_s
        self._health: Health = "ok"

    def health(self) -> Health:
        return self._health

    def run(self, stop: threading.Event) -> None:
        # Records left in the outbox by a crash go first, before anything new happens.
        self.engine.flush()
        while not stop.wait(self.interval_s):
            self.engine.tick()
            waiting = self.engine.store.outbox_size()
            if waiting:
                self.engine.flush()
            self._health = "degraded" if self.engine.store.outbox_size() else "ok"

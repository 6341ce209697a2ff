"""Refused central messages, recorded as device_events and rate-limited by kind.

A forged or broken ack or command is worth a record (the centre sees that someone talks on
its topics, or that its own code is wrong), but a flood of them must not fill the buffer or
crowd out sales. So each kind of refusal (what: ack or command, and the refusal's code:
signature, kid, unsealed, replay, ...) is recorded at most `per_minute` times a minute, and
all kinds together at most 4 x that; the rest are counted, and once the minute is over one
summary per kind says how many were not recorded (docs/decisions.md, spec choices).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

log = logging.getLogger(__name__)

WINDOW_S = 60.0
OVERALL_FACTOR = 4  # all kinds together: codes are a fixed set, but cycling through them must stay bounded


@dataclass
class _Kind:
    recorded: int = 0
    suppressed: int = 0
    last_reason: str = ""


class RefusalLog:
    def __init__(self, record: Callable[[Mapping[str, Any]], None], per_minute: int,
                 clock: Callable[[], float] = time.monotonic):
        self._record = record
        self.per_kind = per_minute
        self.overall = OVERALL_FACTOR * per_minute
        self._clock = clock
        self.total = 0  # every refusal since start (status: refused_messages)
        self.unrecorded = 0  # of which not recorded one by one (status: refused_unrecorded)
        self._kinds: dict[tuple[str, str], _Kind] = {}
        self._window_start = clock()
        self._window_recorded = 0
        self._lock = threading.Lock()

    def refused(self, what: str, code: str, reason: str) -> None:
        """One refused central message (called on the uplink thread)."""
        with self._lock:
            self.total += 1
            out = self._roll()
            kind = self._kinds.setdefault((what, code), _Kind())
            if kind.recorded < self.per_kind and self._window_recorded < self.overall:
                kind.recorded += 1
                self._window_recorded += 1
                out.append({"what": what, "code": code, "reason": reason})
            else:
                kind.suppressed += 1
                kind.last_reason = reason
                self.unrecorded += 1
        self._emit(out)

    def flush(self) -> None:
        """Summaries of a minute that is over (housekeeping calls this, so a flood that
        stopped is still summed up without a further refusal)."""
        with self._lock:
            out = self._roll()
        self._emit(out)

    def _roll(self) -> list[dict[str, Any]]:
        now = self._clock()
        if now - self._window_start < WINDOW_S:
            return []
        summaries = [{"what": what, "code": code, "reason": k.last_reason, "suppressed": k.suppressed}
                     for (what, code), k in sorted(self._kinds.items()) if k.suppressed]
        self._kinds.clear()
        self._window_start, self._window_recorded = now, 0
        return summaries

    def _emit(self, details: list[dict[str, Any]]) -> None:
        for detail in details:
            try:
                self._record(detail)
            except Exception as exc:  # buffer full or stopping: the refusal is still counted in status
                log.warning("could not record a refused %s: %s", detail["what"], exc)

"""A reader's records on their way to the buffer: committed in order, held through an outage.

A device cannot be asked to send again, so when the buffer is full or unavailable a read or
weight waits here with its arrival time and its id already chosen (the re-post is then
idempotent), up to hold_max records. What does not fit is counted and written as one `gap`
record (uplink-v1: "what was given up and why") as soon as the buffer takes records again.
"""

from __future__ import annotations

import collections
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from uuid6 import uuid7

from core.interfaces import BufferFull, BufferUnavailable, RecordRejected

if TYPE_CHECKING:
    from drivers.serial.port import SerialReader

log = logging.getLogger(__name__)

Committed = Callable[[dict[str, Any]], None]


class HeldRecords:
    def __init__(self, reader: SerialReader, what: str, hold_max: int = 1000, retry_s: float = 1.0) -> None:
        self.reader = reader
        self.what = what  # "scan reads", "weights": for the gap record
        self.hold_max = hold_max
        self.retry_s = retry_s
        self.dropped = 0
        self._queue: collections.deque[tuple[dict[str, Any], Committed | None]] = collections.deque()
        self._next_try = 0.0

    def __len__(self) -> int:
        return len(self._queue)

    def add(self, record: dict[str, Any], now: float, committed: Committed | None = None) -> None:
        """Queue a record (an id is given here if it has none) and deliver what is due."""
        record.setdefault("id", str(uuid7()))
        if len(self._queue) >= self.hold_max:
            self.dropped += 1
        else:
            self._queue.append((record, committed))
        self.deliver(now)

    def deliver(self, now: float) -> None:
        if now < self._next_try:
            return
        while self._queue:
            record, committed = self._queue[0]
            try:
                self.reader.ctx.records.submit([record])
            except (BufferFull, BufferUnavailable, TimeoutError) as exc:
                if "buffer" not in self.reader._problems:
                    log.error("%s: buffer refused a record, holding %d: %s", self.reader.name, len(self), exc)
                self.reader.problem("buffer", True)
                self._next_try = now + self.retry_s
                return
            except RecordRejected as exc:  # invalid for good: retrying cannot help
                log.error("%s: record refused: %s", self.reader.name, exc)
            else:
                if committed is not None:
                    committed(record)
            self._queue.popleft()
        if self.dropped and not self._write_gap():
            return
        self.reader.problem("buffer", False)

    def _write_gap(self) -> bool:
        gap = {
            "kind": "gap",
            "src": self.reader.name,
            "data": {
                "what": f"{self.dropped} {self.what}",
                "reason": f"buffer refused records with {self.hold_max} already held",
            },
        }
        try:
            self.reader.ctx.records.submit([gap])
        except RecordRejected as exc:
            log.error("%s: gap record not stored: %s", self.reader.name, exc)
            return False
        self.dropped = 0
        return True

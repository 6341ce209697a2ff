"""Live events for open pages: any thread publishes, each server-sent-events stream reads on.

Events are numbered and kept in a short ring, so a browser that reconnects (EventSource sends
Last-Event-ID) gets what it missed, and a stream answered through an API worker process,
which is collected whole, can end after its first events and resume (agent.page.routes).
"""

from __future__ import annotations

import asyncio
import collections
import threading
from collections.abc import Mapping
from typing import Any

import orjson

KEEP = 512


class EventHub:
    def __init__(self, keep: int = KEEP) -> None:
        self._lock = threading.Lock()
        self._events: collections.deque[tuple[int, str, bytes]] = collections.deque(maxlen=keep)
        self._seq = 0
        self._waiters: set[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = set()

    @property
    def last_id(self) -> int:
        return self._seq

    def publish(self, event: str, data: Mapping[str, Any]) -> None:
        body = orjson.dumps(data)
        with self._lock:
            self._seq += 1
            self._events.append((self._seq, event, body))
            waiters = list(self._waiters)
        for loop, ev in waiters:
            try:
                loop.call_soon_threadsafe(ev.set)
            except RuntimeError:  # that loop is closed: its stream is gone
                pass

    def since(self, last: int) -> list[tuple[int, str, bytes]]:
        with self._lock:
            return [e for e in self._events if e[0] > last]

    async def wait(self, last: int, timeout: float) -> list[tuple[int, str, bytes]]:
        """Events after `last`, waiting up to `timeout` s for one; [] on timeout."""
        ev = asyncio.Event()
        key = (asyncio.get_running_loop(), ev)
        with self._lock:
            self._waiters.add(key)
        try:
            got = self.since(last)
            if got:
                return got
            try:
                await asyncio.wait_for(ev.wait(), timeout)
            except TimeoutError:
                return []
            return self.since(last)
        finally:
            with self._lock:
                self._waiters.discard(key)

"""Seq acks to the agents, coalesced per device: at most one in flight, and a retry sends only the newest.

A seq ack is cumulative (uplink-v1 "Acks and commands": `seq` N covers every batch up to N), so a
newer one supersedes every older one. Measured in the storm of issue 10: with 1,000 branches
reconnecting at once, Mosquitto refused the receiver's acks ("Message queue full": the agent's
session queue was full), and the receiver queued every refused ack for a retry of its own,
stale ones included, which fed the queue that refused them. Here a device has one entry: the
newest head this receiver committed, whether an ack is in flight (published, no PUBACK yet), and
when a refused one may be tried again (doubling from ACK_RETRY_MIN_S to ACK_RETRY_MAX_S). A head
that moves while an ack is in flight waits for that PUBACK and then goes out alone.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

ACK_RETRY_MIN_S = 1.0
ACK_RETRY_MAX_S = 60.0
# An ack with no PUBACK for this long is taken as lost (paho resends it by itself after a reconnect,
# but a session the broker dropped forgets it): the device may get a newer one.
INFLIGHT_STALE_S = 30.0


@dataclass
class _Due:
    seq: int = 0  # the newest head committed for the device (read under its row lock, so from the database)
    wanted: bool = False  # an ack of `seq` is owed
    inflight_at: float | None = None  # when the ack now in flight was published
    retry_at: float = 0.0
    delay: float = 0.0


class AckOutbox:
    """Used by the worker thread only. publish(dev, seq) signs and publishes one seq ack."""

    def __init__(self, publish: Callable[[str, int], None], clock: Callable[[], float] = time.monotonic):
        self._publish = publish
        self._clock = clock
        self._devs: dict[str, _Due] = {}
        self.published = 0
        self.coalesced = 0  # acks owed that were folded into a later one instead of being sent

    def want(self, dev: str, seq: int) -> None:
        """The device's chain head after a commit (or a batch seen again): it is owed an ack of it."""
        d = self._devs.setdefault(dev, _Due())
        if d.wanted or d.inflight_at is not None:
            self.coalesced += 1
        d.seq = max(d.seq, seq)
        d.wanted = True

    def accepted(self, dev: str) -> None:
        """The broker PUBACKed our ack (success)."""
        d = self._devs.get(dev)
        if d is None:
            return
        d.inflight_at, d.delay, d.retry_at = None, 0.0, 0.0
        if not d.wanted:
            del self._devs[dev]

    def refused(self, dev: str) -> None:
        """The broker refused our ack (quota, queue full, not authorized): owe the newest again, later."""
        d = self._devs.setdefault(dev, _Due())
        d.inflight_at = None
        d.wanted = True
        d.delay = min(max(ACK_RETRY_MIN_S, d.delay * 2), ACK_RETRY_MAX_S)
        d.retry_at = self._clock() + d.delay

    def flush(self, final: bool = False) -> None:
        """Publish the newest owed ack of every device with none in flight and no refusal to wait out.

        final (the receiver is stopping): every owed ack goes out now, in flight or not. Waiting
        for the older one's PUBACK would leave a committed head unacked: a flooded receiver's
        MQTT thread may not have read that PUBACK yet, and the next receiver never sees the
        device's batches again (they were PUBACKed), so the agent would learn of them only from
        its own resend, minutes later. A second ack of a newer head is harmless: acks are
        cumulative.
        """
        now = self._clock()
        for dev, d in self._devs.items():
            if not d.wanted:
                continue
            if not final and now < d.retry_at:
                continue
            if not final and d.inflight_at is not None and now - d.inflight_at < INFLIGHT_STALE_S:
                continue
            d.wanted = False
            d.inflight_at = now
            self.published += 1
            self._publish(dev, d.seq)

    def owed(self) -> int:
        return sum(1 for d in self._devs.values() if d.wanted)

"""Test doubles of OUR OWN core interfaces (core.interfaces RecordSink and AgentContext).

The real buffer is another engineer's work; these keep the serial tests fast and independent
of it (the end-to-end tests use the real one). MemorySink runs the real per-kind validation
(wire.records.normalize_records), fills id/at/src as it does, and a record re-posted with an
id it already holds is not stored twice (idempotent re-post).
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from concurrent.futures import Future
from typing import Any

from core.interfaces import BufferUnavailable, Health
from wire.records import normalize_records


class MemorySink:
    def __init__(self) -> None:
        self.records: list[dict[str, Any]] = []
        self.ids: set[str] = set()
        self.cond = threading.Condition()
        self.fail: bool = False

    def submit(self, records: Sequence[Mapping[str, Any]], timeout: float | None = None) -> list[str]:
        if self.fail:
            raise BufferUnavailable("buffer down (test)")
        out = []
        norm = normalize_records(records)
        with self.cond:
            for n in norm:
                rec = {"id": n.id, "kind": n.kind, "at": n.at, "src": n.src, "data": dict(n.data)}
                if rec["id"] not in self.ids:
                    self.ids.add(rec["id"])
                    self.records.append(rec)
                out.append(rec["id"])
            self.cond.notify_all()
        return out

    def submit_nowait(self, records: Sequence[Mapping[str, Any]]) -> Future[list[str]]:
        f: Future[list[str]] = Future()
        try:
            f.set_result(self.submit(records))
        except Exception as exc:
            f.set_exception(exc)
        return f

    def of(self, kind: str) -> list[dict[str, Any]]:
        with self.cond:
            return [r for r in self.records if r["kind"] == kind]

    def events(self, event: str | None = None) -> list[dict[str, Any]]:
        return [r["data"] for r in self.of("device_event") if event is None or r["data"]["event"] == event]


class FakeContext:
    """AgentContext double: device events become device_event records in the same sink."""

    def __init__(self, config: Any, sink: MemorySink | None = None) -> None:
        self.config = config
        self.records = sink or MemorySink()
        self.health: dict[str, Health] = {}

    @property
    def media(self) -> Any:
        raise NotImplementedError("serial drivers have no media")

    def subscribe_records(self, listener: Any) -> None:
        pass

    def register_command(self, name: str, handler: Any) -> None:
        pass

    def device_event(
        self, device: str, event: str, detail: Mapping[str, Any] | None = None, src: str = "agent"
    ) -> None:
        self.records.submit(
            [
                {
                    "kind": "device_event",
                    "src": src,
                    "data": {"device": device, "event": event, "detail": dict(detail or {})},
                }
            ]
        )

    def set_health(self, component: str, health: Health) -> None:
        self.health[component] = health

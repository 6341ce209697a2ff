"""agent/refusals.py: refused central messages are recorded once each, at most N per kind a
minute, and a flood is summed up after the minute instead of filling the buffer."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from agent.refusals import OVERALL_FACTOR, WINDOW_S, RefusalLog


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def make(per_minute: int = 3) -> tuple[RefusalLog, list[Mapping[str, Any]], Clock]:
    records: list[Mapping[str, Any]] = []
    clock = Clock()
    return RefusalLog(records.append, per_minute, clock=clock), records, clock


def test_a_flood_of_one_kind_is_bounded_and_summed_up_after_the_minute() -> None:
    log, records, clock = make(per_minute=3)
    for i in range(1000):
        log.refused("ack", "signature", f"ack: bad signature #{i}")
    assert [r["reason"] for r in records] == ["ack: bad signature #0", "ack: bad signature #1",
                                               "ack: bad signature #2"]
    assert log.total == 1000 and log.unrecorded == 997
    log.flush()  # the minute is not over: nothing yet
    assert len(records) == 3
    clock.now += WINDOW_S
    log.flush()
    assert records[3] == {"what": "ack", "code": "signature", "reason": "ack: bad signature #999",
                          "suppressed": 997}
    log.flush()  # summed up once
    clock.now += WINDOW_S
    log.flush()
    assert len(records) == 4
    log.refused("ack", "signature", "again")  # a new minute: recorded again
    assert records[-1] == {"what": "ack", "code": "signature", "reason": "again"}


def test_one_flood_does_not_hide_another_kind_but_all_kinds_together_are_bounded() -> None:
    log, records, clock = make(per_minute=2)
    for _ in range(50):
        log.refused("ack", "signature", "x")
    log.refused("command", "replay", "command c1 was already carried out")
    assert records[-1]["code"] == "replay"  # still recorded: its own budget
    codes = ["kid", "alg", "payload", "fields", "version", "device", "stale", "unsealed", "oversize", "malformed"]
    for _ in range(20):
        for code in codes:
            log.refused("ack", code, code)
            log.refused("command", code, code)
    assert len(records) == OVERALL_FACTOR * 2
    clock.now += WINDOW_S
    log.flush()
    summaries = records[OVERALL_FACTOR * 2:]
    assert sum(int(s["suppressed"]) for s in summaries) == log.unrecorded
    assert len(summaries) == len({(s["what"], s["code"]) for s in summaries})  # one per kind


def test_a_record_that_cannot_be_written_is_still_counted() -> None:
    def full(detail: Mapping[str, Any]) -> None:
        raise RuntimeError("buffer full")

    log = RefusalLog(full, 5, clock=Clock())
    log.refused("ack", "kid", "unknown kid")  # no exception reaches the uplink thread
    assert log.total == 1

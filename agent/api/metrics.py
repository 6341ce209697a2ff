"""The API's own Prometheus counters, in prometheus_client's default registry.

Module-level so a restarted ApiComponent does not register them twice; whoever renders
metrics_text() with prometheus_client.generate_latest() gets them with everything else.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prometheus_client import Counter

REQUESTS = Counter("coop_api_ingest_requests", "POST /v1/records requests by HTTP status", ["code"])
RECORDS = Counter("coop_api_ingest_records", "records accepted (201) through the local API")

_by_code = {code: REQUESTS.labels(str(code)) for code in (201, 400, 401, 409, 413, 415, 422, 500, 503, 507)}


# In an API worker process the counters live in the agent, not here: count() hands the figures
# to this function instead, and the worker sends them over in batches (agent.api.worker).
_forward: Callable[[int, int], None] | None = None


def forward_to(fn: Callable[[int, int], None] | None) -> None:
    global _forward
    _forward = fn


def apply(counts: dict[int, list[int]]) -> None:
    """Counts a worker process made: {status: [requests, records]}."""
    for status, (requests, records) in counts.items():
        _child(status).inc(requests)
        if records:
            RECORDS.inc(records)


def _child(status: int) -> Any:
    child = _by_code.get(status)
    if child is None:
        child = _by_code[status] = REQUESTS.labels(str(status))
    return child


def count(status: int, records: int) -> None:
    if _forward is not None:
        _forward(status, records)
        return
    _child(status).inc()
    if records:
        RECORDS.inc(records)

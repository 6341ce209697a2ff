"""The API's own Prometheus counters, in prometheus_client's default registry.

Module-level so a restarted ApiComponent does not register them twice; whoever renders
metrics_text() with prometheus_client.generate_latest() gets them with everything else.
"""

from __future__ import annotations

from prometheus_client import Counter

REQUESTS = Counter("coop_api_ingest_requests", "POST /v1/records requests by HTTP status", ["code"])
RECORDS = Counter("coop_api_ingest_records", "records accepted (201) through the local API")

_by_code = {code: REQUESTS.labels(str(code)) for code in (201, 400, 401, 409, 413, 415, 422, 500, 503, 507)}


def count(status: int, records: int) -> None:
    child = _by_code.get(status)
    if child is None:
        child = _by_code[status] = REQUESTS.labels(str(status))
    child.inc()
    if records:
        RECORDS.inc(records)

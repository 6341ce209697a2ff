"""Prometheus text for GET /metrics: the API's counters plus the agent's gauges read at scrape time.

The agent's figures live in a registry of its own (one per Agent), read from the buffer
when scraped rather than kept up to date on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.daemon import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent):
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
        a = self.agent
        backlog = a.store.backlog()
        for key, help_text in (("records", "records not yet acked by the centre"),
                               ("batches", "sealed batches not yet acked by the centre"),
                               ("media_bytes", "media bytes not yet acked by the centre")):
            yield GaugeMetricFamily(f"coop_backlog_{key}", help_text, value=backlog[key])
        yield GaugeMetricFamily("coop_acked_seq", "highest batch seq acked by the centre", value=a.store.acked_seq())
        yield GaugeMetricFamily("coop_last_seq", "highest batch seq sealed", value=a.store.last_seq())
        yield GaugeMetricFamily("coop_broker_connected", "1 when connected to the broker",
                                value=1 if a.uplink.connected else 0)
        yield GaugeMetricFamily("coop_refused_pubacks", "PUBACKs with a failure reason code",
                                value=a.uplink.refused_pubacks)
        yield from disk_metrics(a.disk.as_dict())
        up = GaugeMetricFamily("coop_component_ok", "1 ok, 0.5 degraded, 0 down", labels=["component"])
        for name, health in a.health().items():
            up.add_metric([name], {"ok": 1.0, "degraded": 0.5}.get(health, 0.0))
        yield up


def disk_metrics(disk: Mapping[str, Any]) -> Iterator[GaugeMetricFamily | CounterMetricFamily]:
    """The disk policy's thresholds and what it deleted (buffer.diskpolicy; docs/operations.md says
    what each level means). Alert on coop_disk_level >= 2 (below the reserve) and on any growth of
    coop_disk_deleted_files_total{class="evidence_pending"}."""
    yield GaugeMetricFamily("coop_disk_free_bytes", "free bytes on the buffer's file system", value=disk["free_bytes"])
    yield GaugeMetricFamily("coop_disk_warn_bytes", "free space below which the agent warns ([disk] warn_mb)",
                            value=disk["warn_bytes"])
    yield GaugeMetricFamily("coop_disk_reserve_bytes", "free space kept for records ([disk] reserve_mb)",
                            value=disk["reserve_bytes"])
    level = GaugeMetricFamily("coop_disk_level", "disk pressure: 0 ok, 1 below warn_mb, 2 below reserve_mb, "
                              "3-7 the deepest class deleted (recording_expired, recording, snapshot, "
                              "evidence_confirmed, evidence_pending), 8 records refused", labels=["level"])
    level.add_metric([disk["level"]], disk["level_index"])
    yield level
    files = CounterMetricFamily("coop_disk_deleted_files", "files deleted under disk pressure, by class",
                                labels=["class"])
    size = CounterMetricFamily("coop_disk_deleted_bytes", "bytes deleted under disk pressure, by class",
                               labels=["class"])
    for cls, n in disk["deleted"].items():
        files.add_metric([cls], n["files"])
        size.add_metric([cls], n["bytes"])
    yield files
    yield size
    yield CounterMetricFamily("coop_disk_full_refusals", "groups of records refused: disk full, nothing to delete",
                              value=disk["refused_full"])


def metrics_text_for(agent: Agent) -> Callable[[], bytes]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return lambda: generate_latest(REGISTRY) + generate_latest(registry)

"""Prometheus text for GET /metrics: the API's counters plus the agent's gauges read at scrape time.

The agent's figures live in a registry of its own (one per Agent), read from the buffer
when scraped rather than kept up to date on the hot path.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from prometheus_client import REGISTRY, CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from agent.daemon import Agent


class AgentCollector(Collector):
    def __init__(self, agent: Agent):
        self.agent = agent

    def collect(self) -> Iterator[GaugeMetricFamily]:
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
        up = GaugeMetricFamily("coop_component_ok", "1 ok, 0.5 degraded, 0 down", labels=["component"])
        for name, health in a.health().items():
            up.add_metric([name], {"ok": 1.0, "degraded": 0.5}.get(health, 0.0))
        yield up


def metrics_text_for(agent: Agent) -> Callable[[], bytes]:
    registry = CollectorRegistry()
    registry.register(AgentCollector(agent))
    return lambda: generate_latest(REGISTRY) + generate_latest(registry)

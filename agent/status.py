"""The status document: the spec's fields (signed, on MQTT) and the technician's extras (CLI, API)."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from agent import __version__

if TYPE_CHECKING:
    from agent.daemon import Agent


class StatusBuilder:
    def __init__(self, agent: Agent):
        self.agent = agent

    def spec_doc(self) -> dict[str, Any]:
        """Spec: Status. `state` and `at` are set by the uplink when it signs."""
        a = self.agent
        return {"v": 1, "dev": a.cfg.agent.device, "at": time.time_ns() // 1_000_000, "state": "online",
                "version": __version__, "backlog": a.store.backlog(), "acked_seq": a.store.acked_seq(),
                "components": a.health()}

    def full_doc(self) -> dict[str, Any]:
        """`coopagent status --json` and GET /v1/status: the spec fields plus what a technician needs."""
        a = self.agent
        doc = self.spec_doc()
        sync = a.clock.last_sync
        doc.update({
            "running": True,
            "last_seq": a.store.last_seq(),
            "broker": {"url": a.cfg.uplink.broker, "connected": a.uplink.connected,
                       "last_error": a.uplink.last_error, "refused_pubacks": a.uplink.refused_pubacks,
                       "connects": a.uplink.connects},
            "buffer": {"path": str(a.cfg.db_path), "full": a.store.full, "last_error": a.store.last_error,
                       "written_by": a.store.agent_versions()},
            "clock": {"synchronized": sync.synced if sync else None,
                      "detail": sync.as_dict() if sync else None, "jumps": a.clock.jumps,
                      **a.centre_clock.as_dict()},
            "disk": a.disk.as_dict(),
            "refused_messages": a.refusals.total,
            "refused_unrecorded": a.refusals.unrecorded,
            "supervisor": a.supervisor.details(),
            "uptime_s": int(time.time() - a.started_at),
        })
        return doc

"""Topic names of uplink-v1 (spec: Topics)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Topics:
    prefix: str  # PREFIX/SOCIETY/BRANCH/DEVICE

    @classmethod
    def for_device(cls, topic_prefix: str, device: str) -> Topics:
        return cls(f"{topic_prefix}/{device}")

    @property
    def batch(self) -> str:
        return f"{self.prefix}/batch"

    @property
    def status(self) -> str:
        return f"{self.prefix}/status"

    @property
    def ack(self) -> str:
        return f"{self.prefix}/ack"

    @property
    def cmd(self) -> str:
        return f"{self.prefix}/cmd"

    def media(self, media_id: str, index: int) -> str:
        return f"{self.prefix}/media/{media_id}/{index}"

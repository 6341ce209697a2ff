"""Topic names of uplink-v1 (spec: Topics): built by the agent (Topics), parsed by the receiver (parse_topic)."""

from __future__ import annotations

import re
from dataclasses import dataclass

_INDEX_RE = re.compile(r"^(0|[1-9][0-9]{0,8})$")


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


@dataclass(frozen=True)
class Topic:
    """A parsed inbound topic: PREFIX/SOC/BR/DEV/(batch|status|media/ID/INDEX)."""

    dev: str
    kind: str  # batch | status | media
    media_id: str = ""
    index: int = -1


def parse_topic(prefix: str, topic: str) -> Topic | None:
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) < 4:
        return None
    dev = "/".join(parts[:3])
    rest = parts[3:]
    if rest in (["batch"], ["status"]):
        return Topic(dev, rest[0])
    if len(rest) == 3 and rest[0] == "media":
        index = int(rest[2]) if _INDEX_RE.match(rest[2]) else -1
        return Topic(dev, "media", rest[1], index)
    return None


def device_topic(prefix: str, dev: str, leaf: str) -> str:
    return f"{prefix}/{dev}/{leaf}"

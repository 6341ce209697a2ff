"""Validation of records against the spec's kinds (owned by the API work; placeholder).

normalize_records() is called by the buffer for every record from every source (API,
serial drivers, cameras, the agent itself), so one set of rules guards the chain.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agent.interfaces import RecordInvalid

KINDS = ("sale", "stock_move", "count", "count_session", "scan", "weight", "media", "device_event", "gap")


@dataclass(frozen=True)
class NormRecord:
    id: str          # given by the source, or a new UUIDv7
    kind: str
    at: int          # epoch ms UTC
    src: str
    data: dict[str, Any]
    id_given: bool   # True when the source chose the id (idempotent re-post applies)
    fingerprint: bytes  # SHA-256 over the content the source gave; equal re-posts match


def normalize_records(records: Sequence[Mapping[str, Any]], default_src: str = "agent") -> list[NormRecord]:
    """Check each record's kind and data; fill id (UUIDv7), at (now) and src. Raises RecordInvalid(reason, index)."""
    raise RecordInvalid("record validation not implemented yet")

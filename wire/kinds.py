"""The record kinds of uplink-v1 ("Kinds in version 1"): the one place they are written.

Everything else derives from this table: the record checks (wire.records keys one check per
kind on it, and refuses to import if one is missing), the receiver's batch check, the local
API's OpenAPI enum and the clip rules' choice of kinds. A new kind is a line here and its
check in wire.records.
"""

from __future__ import annotations

from typing import Literal, get_args

Kind = Literal["sale", "stock_move", "count", "count_session", "scan", "weight", "media", "device_event", "gap"]
KINDS: tuple[str, ...] = get_args(Kind)
KIND_SET: frozenset[str] = frozenset(KINDS)

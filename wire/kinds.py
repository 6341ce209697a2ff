"""A record of uplink-v1: its envelope and its kinds ("Kinds in version 1"), the one place they are written.

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
# A record is exactly {id, kind, at, src, data}; anything else belongs inside data.
RECORD_KEYS: frozenset[str] = frozenset(("id", "kind", "at", "src", "data"))

# The media kind: MEDIA_ID is safe in a topic; the types a clip or snapshot may have, with the
# file suffix each is stored under.
MEDIA_ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
MEDIA_TYPES = {"video/mp4": ".mp4", "image/jpeg": ".jpg"}

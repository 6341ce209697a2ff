"""Request and response shapes of the local API, for /openapi.json.

Only documentation: POST /v1/records is validated by wire.records (strict, per kind), not by
these models, so the OpenAPI document and the checks cannot drift apart, the per-kind `data`
schemas below are generated from the very TypeAdapters that do the checking.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from wire.kinds import Kind
from wire.records import ADAPTERS, ID_MAX, SRC_MAX


class RecordIn(BaseModel):
    kind: Kind = Field(description="a spec kind; `media` is refused over the API")
    data: dict[str, Any] = Field(description="as the kind says (see the <Kind>Data schemas); more keys are kept")
    id: str | None = Field(
        None,
        min_length=1,
        max_length=ID_MAX,
        description="your own unique id (UUIDv7 or ULID recommended) makes a re-post idempotent; default: a new UUIDv7",
    )
    at: int | None = Field(None, description="epoch milliseconds UTC, from 2020 to now + 1 day; default: now")
    src: str | None = Field(
        None,
        min_length=1,
        max_length=SRC_MAX,
        description='default "api", or "api:NAME" with header X-Coop-Source: NAME',
    )


class RecordsIn(BaseModel):
    records: list[RecordIn] = Field(min_length=1, description="all or nothing: one bad record refuses them all")


class IdsOut(BaseModel):
    ids: list[str] = Field(description="one id per record, in order; durable when you read this")


class ApiError(BaseModel):
    error: str = Field(
        description="bad_request, unauthorized, conflict, too_large, unsupported_media_type, "
        "invalid_record, unavailable, buffer_full"
    )
    reason: str = Field(description='what to fix, e.g. "records[3].data.lines[0]: missing gtin"')
    index: int | None = Field(None, description="the index of the record at fault, when there is one")


def data_schemas() -> dict[str, dict[str, Any]]:
    """One JSON schema per kind's `data`, named like SaleData, with nested $defs lifted out."""
    out: dict[str, dict[str, Any]] = {}
    for kind, adapter in ADAPTERS.items():
        name = "".join(p.title() for p in kind.split("_")) + "Data"
        schema = adapter.json_schema(ref_template="#/components/schemas/{model}")
        for sub, sub_schema in schema.pop("$defs", {}).items():
            out[sub] = sub_schema
        schema["title"] = name
        out[name] = schema
    return out


ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    code: {"model": ApiError, "description": text}
    for code, text in {
        400: "bad JSON, wrong shape, or a bad X-Coop-Source header",
        401: "missing or wrong bearer token",
        409: "an id that exists with different content",
        413: "body over [api] max_body_bytes or more than [api] max_records_per_request records",
        415: "Content-Type is not application/json",
        422: "a record is invalid; `reason` names the record index and field",
        503: "the buffer is not running",
        507: "the buffer's disk or cap is full; nothing was stored",
    }.items()
}

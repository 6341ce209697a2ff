"""Request and response shapes of the local API, for /openapi.json.

Only documentation: POST /v1/records is validated by wire.records (strict, per kind), not by
these models, so the OpenAPI document and the checks cannot drift apart, the per-kind `data`
schemas below are generated from the very TypeAdapters that do the checking.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, JsonValue

from wire.kinds import KINDS, Kind
from wire.records import ADAPTERS, ID_MAX, SRC_MAX

API_KINDS = [k for k in KINDS if k != "media"]
_KIND_ENUM: list[JsonValue] = list(API_KINDS)
AT_MIN_MS = 1_577_836_800_000  # 2020-01-01T00:00:00Z (wire.records)


class RecordIn(BaseModel):
    # The implementation refuses any other key (wire.records); the schema says so, so a
    # client generated from it, or a fuzzer (tests/api/test_openapi_fuzz.py), does not guess.
    model_config = ConfigDict(extra="forbid")

    kind: Kind = Field(description="a spec kind; `media` is refused over the API",
                       json_schema_extra={"enum": _KIND_ENUM})
    data: dict[str, Any] = Field(description="as the kind says (see the <Kind>Data schemas); more keys are kept")
    id: str | None = Field(
        None,
        min_length=1,
        max_length=ID_MAX,
        description="your own unique id (UUIDv7 or ULID recommended) makes a re-post idempotent; default: a new UUIDv7",
    )
    at: int | None = Field(None, ge=AT_MIN_MS,
                           description="epoch milliseconds UTC, from 2020 to now + 1 day; default: now")
    src: str | None = Field(
        None,
        min_length=1,
        max_length=SRC_MAX,
        description='default "api", or "api:NAME" with header X-Coop-Source: NAME',
    )


class RecordsIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

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


def kind_record_schemas(record_in: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One record schema per kind the API takes (kind fixed, data its <Kind>Data): what
    RecordsIn's items really are, so a client or a fuzzer can build a valid record."""
    out: dict[str, dict[str, Any]] = {}
    for kind in API_KINDS:
        title = "".join(p.title() for p in kind.split("_"))
        props = dict(record_in["properties"])
        props["kind"] = {"const": kind, "type": "string"}
        props["data"] = {"$ref": f"#/components/schemas/{title}Data"}
        out[f"{title}Record"] = {**record_in, "title": f"{title}Record", "properties": props}
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

"""The FastAPI app: status, metrics, OpenAPI, other subsystems' routers, and the declared ingest route.

No /docs or /redoc pages: they load JavaScript from a CDN, and a branch PC may be offline;
/openapi.json is what an integrator's tools read.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Request, Security
from fastapi.openapi.utils import get_openapi
from fastapi.responses import Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CONTENT_TYPE_LATEST

import agent
from agent.api.ingest import ClientGone, read_body
from agent.api.ingest_core import IngestCore, Reply, error
from agent.api.schema import ERROR_RESPONSES, IdsOut, RecordsIn, data_schemas, kind_record_schemas
from core.auth import bearer_ok
from core.interfaces import StatusProvider

_bearer = HTTPBearer(auto_error=False, description="the token in [api] token_file")
_COMPONENTS = "#/components/schemas/{model}"


def _json(reply: Reply) -> Response:
    headers = {"WWW-Authenticate": "Bearer"} if reply.status == 401 else None
    return Response(reply.body, status_code=reply.status, media_type="application/json", headers=headers)


def build_app(
    core: IngestCore,
    status: StatusProvider,
    metrics_text: Callable[[], bytes],
    routers: Sequence[APIRouter] = (),
) -> FastAPI:
    app = FastAPI(
        title="coopagent local API",
        version=getattr(agent, "__version__", "0"),
        docs_url=None,
        redoc_url=None,
        description="Hand sales and stock records to the branch agent. See docs/api.md.",
    )

    @app.post(
        "/v1/records",
        status_code=201,
        response_model=IdsOut,
        responses=ERROR_RESPONSES,
        summary="Store records durably (all or nothing)",
        openapi_extra={
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": {"$ref": _COMPONENTS.format(model="RecordsIn")}}},
            }
        },
    )
    async def post_records(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
    ) -> Response:
        """Also served by the raw ASGI fast path (agent.api.ingest); both run IngestCore."""
        h = request.headers
        pre = core.precheck(
            _b(h.get("authorization")),
            _b(h.get("content-type")),
            _b(h.get("content-length")),
            _b(h.get("x-coop-source")),
        )
        if isinstance(pre, Reply):
            return _json(pre)
        try:
            body = await read_body(request.receive, core.max_body_bytes)
        except ClientGone:
            return Response(status_code=400)  # nobody is listening any more
        if body is None:
            return _json(core.too_large())
        return _json(await core.handle(body, pre))

    @app.get(
        "/v1/status",
        summary="The agent's status (the same document as `coopagent status --json`)",
        responses={401: ERROR_RESPONSES[401]},
    )
    def get_status(
        request: Request, _: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None
    ) -> Response:
        # A plain def: FastAPI runs it in its thread pool, so the status reads never block the loop.
        if not bearer_ok(_b(request.headers.get("authorization")), core.token):
            return _json(error(401, "missing or wrong bearer token"))
        return Response(orjson.dumps(status()), media_type="application/json")

    @app.get("/metrics", summary="Prometheus text; no token (loopback, counters only)", response_class=Response)
    def get_metrics() -> Response:
        return Response(metrics_text(), media_type=CONTENT_TYPE_LATEST)

    for router in routers:
        app.include_router(router)

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            doc = get_openapi(title=app.title, version=app.version, description=app.description, routes=app.routes)
            schemas = doc.setdefault("components", {}).setdefault("schemas", {})
            records = RecordsIn.model_json_schema(ref_template=_COMPONENTS)
            schemas.update(records.pop("$defs", {}))
            schemas["RecordsIn"] = records
            per_kind = kind_record_schemas(schemas["RecordIn"])
            schemas.update(per_kind)
            records["properties"]["records"]["items"] = {
                "oneOf": [{"$ref": _COMPONENTS.format(model=name)} for name in per_kind],
                "discriminator": {"propertyName": "kind", "mapping": {
                    s["properties"]["kind"]["const"]: _COMPONENTS.format(model=name) for name, s in per_kind.items()}},
            }
            schemas.update(data_schemas())
            app.openapi_schema = doc
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app


def _b(value: str | None) -> bytes | None:
    return None if value is None else value.encode("latin-1")

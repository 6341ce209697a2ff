"""The local API's stock-take routes: open, close and list count sessions (`coopagent count` uses them).

The agent mounts `router` next to /v1/records. Each route checks the bearer token itself
(the token the serial subsystem read from [api] token_file when it was built), so the routes
are safe whether or not the app adds its own auth dependency.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from core.auth import bearer_ok
from drivers.serial.workflows.commands import NAME_RE
from drivers.serial.workflows.engine import WorkflowEngine, WorkflowError

router = APIRouter(prefix="/v1/count", tags=["stock-take"])

_NAME = NAME_RE.pattern


class OpenIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    location: str = Field(pattern=_NAME, description="the shelf, bay or room being counted, e.g. A-12")
    device: str | None = Field(None, description="the scanner that counts; default: the only configured one")
    blind: bool | None = Field(None, description="hide running totals; default [workflow] blind_count")
    recount: bool = Field(False, description="a recount of the location's last closed session")


class CloseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    session: str | None = Field(None, description="the session id; or give the device")
    device: str | None = None


def _engine_and_auth(authorization: str | None) -> WorkflowEngine | JSONResponse:
    from drivers.serial import runtime

    token = runtime.api_token()
    if token is None or not bearer_ok(authorization.encode("latin-1") if authorization else None, token):
        return JSONResponse(
            {"error": "missing or wrong bearer token"},
            status_code=401,
            headers={"WWW-Authenticate": "Bearer"},
        )
    engine = runtime.workflow_engine()
    if engine is None:
        return JSONResponse({"error": "no scanners are configured on this agent"}, status_code=503)
    return engine


def _call(authorization: str | None, fn: Any, status: int = 200) -> JSONResponse:
    got = _engine_and_auth(authorization)
    if isinstance(got, JSONResponse):
        return got
    try:
        return JSONResponse(fn(got), status_code=status)
    except WorkflowError as exc:
        return JSONResponse({"error": str(exc)}, status_code=exc.status)


Auth = Annotated[str | None, Header(description="Bearer TOKEN")]


@router.post("/open", status_code=201, summary="Open a stock-take session at a location on a scanner")
def count_open(body: OpenIn, authorization: Auth = None) -> JSONResponse:
    def go(engine: WorkflowEngine) -> dict[str, Any]:
        device = body.device
        if device is None:
            if len(engine.scanners) != 1:
                raise WorkflowError(f"name the device: one of {', '.join(engine.scanners)}", 400)
            device = next(iter(engine.scanners))
        return engine.open_session(body.location, device, blind=body.blind, recount=body.recount, src="api:local")

    return _call(authorization, go, 201)


@router.post("/close", summary="Close a session; answers with its totals per GTIN")
def count_close(body: CloseIn, authorization: Auth = None) -> JSONResponse:
    return _call(authorization, lambda e: e.close_session(body.session, body.device, src="api:local"))


@router.get("/status", summary="Open sessions (blind ones show line counts only)")
def count_status(authorization: Auth = None) -> JSONResponse:
    return _call(authorization, lambda e: e.status())

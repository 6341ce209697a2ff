"""The page's routes on the local API: /page (HTML), its JSON, its live events, the panels' files.

Auth: the same token as the API. The browser gives it once to the login form; the answer
sets an HttpOnly, SameSite=Strict cookie holding an HMAC of the token (never the token), so
no script can read it and no other site can send it; every data route checks that cookie
or a bearer header. A client that is not on loopback gets 404 unless `[status_page]
allow_lan` is set (docs/decisions.md). Handlers that read the buffer are plain defs, run in
FastAPI's thread pool, so the API's loop never waits on SQLite.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import shutil
import urllib.parse
from collections.abc import AsyncIterator, Callable, Mapping
from typing import Any

import orjson
from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response, StreamingResponse

from agent import __version__
from agent.config.model import AgentConfig
from agent.page.doctor import DoctorRunner
from agent.page.history import History, Sampler
from agent.page.html import login_page, status_page
from agent.page.hub import EventHub
from core.auth import bearer_ok, load_token
from core.panels import Panel

COOKIE = "coop_page"
COOKIE_MAX_AGE_S = 12 * 3600
KEEPALIVE_S = 15.0
FORWARDED = "coopagent.forwarded"  # scope extension set by agent.api.workers.call_app


class StatusPage:
    """What the routes read; the agent fills `panels` once its device families are built."""

    def __init__(self, cfg: AgentConfig, status: Callable[[], dict[str, Any]], hub: EventHub,
                 history: History, doctor: DoctorRunner, sampler: Sampler) -> None:
        self.cfg = cfg
        self.status = status
        self.hub = hub
        self.history = history
        self.doctor = doctor
        self.sampler = sampler
        self.panels: list[Panel] = []
        self._token: bytes | None = None

    @property
    def token(self) -> bytes:
        if self._token is None:  # read once, like the API's own (core.auth)
            self._token = load_token(self.cfg.api.token_file)
        return self._token

    def session(self) -> str:
        return hmac.new(self.token, b"coopagent status page v1", hashlib.sha256).hexdigest()

    def allowed_client(self, request: Request) -> bool:
        client = request.client
        if client is None:
            return False  # unknown origin: treated as the LAN
        try:
            loopback = ipaddress.ip_address(client.host.split("%")[0]).is_loopback
        except ValueError:
            return False
        return loopback or self.cfg.status_page.allow_lan

    def signed_in(self, request: Request) -> bool:
        cookie = request.cookies.get(COOKIE)
        if cookie is not None and hmac.compare_digest(cookie.encode(), self.session().encode()):
            return True
        header = request.headers.get("authorization")
        return bearer_ok(None if header is None else header.encode("latin-1"), self.token)

    def guard(self, request: Request) -> None:
        """404 for a client the page is not served to; 401 without the token."""
        if not self.allowed_client(request):
            raise HTTPException(404)
        if not self.signed_in(request):
            raise HTTPException(401, "sign in at /page with the API token", {"WWW-Authenticate": "Bearer"})

    def panel(self, name: str) -> Panel:
        for p in self.panels:
            if p.name == name:
                return p
        raise HTTPException(404, f"no panel {name!r}")

    def status_doc(self) -> dict[str, Any]:
        doc = self.status()
        data_dir = self.cfg.agent.data_dir
        du = shutil.disk_usage(data_dir)
        # Beside the disk policy's own fields (level, reserve: agent.status), the disk's total for the bar.
        doc["disk"] = {**doc.get("disk", {}), "path": str(data_dir), "free_bytes": du.free, "total_bytes": du.total}
        return doc


def page_router(page: StatusPage) -> APIRouter:
    r = APIRouter(prefix="/page", include_in_schema=False)

    def cookie_kw() -> dict[str, Any]:
        return {"key": COOKIE, "httponly": True, "samesite": "strict", "path": "/page"}

    @r.get("", response_class=HTMLResponse)
    def index(request: Request) -> Response:
        if not page.allowed_client(request):
            raise HTTPException(404)
        device = page.cfg.agent.device
        if not page.signed_in(request):
            return HTMLResponse(login_page(device, str(page.cfg.api.token_file)))
        return HTMLResponse(status_page(device, __version__, page.panels), headers={"Cache-Control": "no-store"})

    @r.post("/login")
    async def login(request: Request) -> Response:
        if not page.allowed_client(request):
            raise HTTPException(404)
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        given = (form.get("token") or [""])[0].strip().encode()
        if not hmac.compare_digest(given, page.token):
            return HTMLResponse(login_page(page.cfg.agent.device, str(page.cfg.api.token_file),
                                           "That is not the API token."), status_code=401)
        out = RedirectResponse("/page", status_code=303)
        out.set_cookie(value=page.session(), max_age=COOKIE_MAX_AGE_S, **cookie_kw())
        return out

    @r.post("/logout")
    def logout() -> Response:
        out = RedirectResponse("/page", status_code=303)
        out.delete_cookie(**cookie_kw())
        return out

    @r.get("/status")
    def status(request: Request) -> Response:
        page.guard(request)
        return _json(page.status_doc())

    @r.get("/history")
    def history(request: Request) -> Response:
        page.guard(request)
        return _json(page.history.as_dict())

    @r.get("/doctor")
    def doctor(request: Request) -> Response:
        page.guard(request)
        if page.doctor.finished_ms is None:
            page.doctor.request()  # the first page opened gets results without a click
        return _json(page.doctor.as_dict())

    @r.post("/doctor/run", status_code=202)
    def doctor_run(request: Request) -> Response:
        page.guard(request)
        page.doctor.request()
        return _json({"requested": True}, 202)

    @r.get("/panels/{name}/state")
    def panel_state(name: str, request: Request) -> Response:
        page.guard(request)
        p = page.panel(name)
        return _json(p.state() if p.state is not None else {})

    @r.get("/panels/{name}/files/{key}")
    def panel_file(name: str, key: str, request: Request) -> Response:
        page.guard(request)
        p = page.panel(name)
        got = p.files(key) if p.files is not None else None
        if got is None:
            raise HTTPException(404, f"{name} has no {key!r} now")
        return Response(got[0], media_type=got[1], headers={"Cache-Control": "no-store"})

    @r.get("/events")
    async def events(request: Request) -> Response:
        page.guard(request)
        try:
            last = int(request.headers.get("last-event-id", ""))
        except ValueError:
            last = page.hub.last_id
        one_shot = FORWARDED in request.scope.get("extensions", {})
        return StreamingResponse(_stream(page.hub, last, one_shot), media_type="text/event-stream",
                                 headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    return r


async def _stream(hub: EventHub, last: int, one_shot: bool) -> AsyncIterator[bytes]:
    """Server-sent events from `last` on. Through an API worker process the answer is collected
    whole, so it ends after the first events and the browser reconnects at once (retry) with
    Last-Event-ID: a little later, nothing lost."""
    yield b"retry: 300\n\n" if one_shot else b"retry: 2000\n\n"
    while True:
        got = await hub.wait(last, KEEPALIVE_S)
        if not got:
            yield b": keepalive\n\n"
        for seq, event, body in got:
            last = seq
            yield b"id: %d\ndata: {\"event\":%s,\"data\":%s}\n\n" % (seq, orjson.dumps(event), body)
        if one_shot:
            return


def _json(doc: Mapping[str, Any] | list[Any], status: int = 200) -> Response:
    return Response(orjson.dumps(doc), status_code=status, media_type="application/json",
                    headers={"Cache-Control": "no-store"})

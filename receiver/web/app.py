"""The evidence view's FastAPI application: the shared state, login and sessions, errors as pages.

Routes are `async` and call the databases directly: each connection is then used by one
thread only (the event loop), queries answer in milliseconds (bench/bench_search.py), and
clips stream through Starlette's FileResponse (HTTP Range, so the browser can seek).
The pages themselves are in receiver/web/pages.py and receiver/web/admin.py.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from receiver.config import ReceiverConfig
from receiver.database import Database, open_database
from receiver.keys import DeviceRegistry
from receiver.web import accounts
from receiver.web.accounts import Session, SessionExpired
from receiver.web.fmt import iso_seconds, money, ts
from receiver.web.schema import open_web_state

log = logging.getLogger(__name__)
HERE = Path(__file__).parent
COOKIE = "coop_session"
LOGIN_CSRF = "coop_login_csrf"


class LoginRequired(Exception):
    """No live session: back to the login page, with why (expired, or not logged in)."""

    def __init__(self, why: str, then: str):
        self.why, self.then = why, then


class Forbidden(Exception):
    """A live session asked for what its role or authority does not allow: a 403 page saying which."""

    def __init__(self, message: str):
        self.message = message


class BadRequest(Exception):
    def __init__(self, message: str, status: int = 400):
        self.message, self.status = message, status


@dataclass
class WebState:
    config: ReceiverConfig
    rdb: Database  # the receiver's store, read only
    db: Database  # the web application's own tables
    registry: DeviceRegistry
    templates: Jinja2Templates
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def media_dir(self) -> Path:
        return self.config.receiver.media_dir

    def close(self) -> None:
        self.rdb.close()
        self.db.close()

    # -- sessions ------------------------------------------------------------------------

    def session(self, request: Request, role: str = "auditor") -> Session:
        """The request's live session with at least `role`, or LoginRequired / Forbidden."""
        token = request.cookies.get(COOKIE)
        then = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if not token:
            raise LoginRequired("login", then)
        w = self.config.web
        try:
            s = accounts.resume(self.db, token, w.session_idle_minutes * 60_000, w.session_max_hours * 3_600_000)
        except SessionExpired:
            raise LoginRequired("expired", then) from None
        if s is None:
            raise LoginRequired("login", then)
        if not s.account.can(role):
            raise Forbidden(f"This page needs the {role} role; your account {s.account.name} is {s.account.role}. "
                            "Ask an admin if you need it.")
        return s

    def check_csrf(self, s: Session, form: Mapping[str, Any]) -> None:
        given = form.get("csrf")
        if not accounts.csrf_ok(s.csrf, given if isinstance(given, str) else None):
            raise Forbidden("This form was not sent by a page of this session (CSRF check failed). "
                            "Reload the page and send it again.")

    def page(self, request: Request, template: str, s: Session | None, status: int = 200,
             **ctx: Any) -> HTMLResponse:
        return self.templates.TemplateResponse(
            request, template, {"s": s, "account": s.account if s else None, **ctx}, status_code=status
        )


def _templates() -> Jinja2Templates:
    t = Jinja2Templates(directory=str(HERE / "templates"))
    t.env.filters["ts"] = ts
    t.env.filters["money"] = money
    t.env.filters["iso"] = iso_seconds
    t.env.autoescape = True
    return t


def create_app(config: ReceiverConfig, *, rdb: Database | None = None, db: Database | None = None) -> FastAPI:
    """The application over the configured stores (tests may pass open ones)."""
    r = config.receiver
    state = WebState(
        config=config,
        rdb=rdb or open_database(r, writer=False),
        db=db or open_web_state(r.database_url, r.database_password(), config.web.db),
        registry=DeviceRegistry(config),
        templates=_templates(),
    )
    app = FastAPI(title="coop centre: evidence", docs_url=None, redoc_url=None, openapi_url=None)
    app.state.web = state
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _login(request: Request, exc: LoginRequired) -> Response:
        if request.url.path.startswith(("/media/", "/api/")) or request.headers.get("accept") == "application/json":
            return Response("log in first", status_code=401, media_type="text/plain")
        resp = RedirectResponse(f"/login?why={exc.why}&then={quote(exc.then, safe='')}", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.exception_handler(Forbidden)
    async def _forbidden(request: Request, exc: Forbidden) -> Response:
        s = _quiet_session(state, request)
        return state.page(request, "error.html", s, status=403, title="Not allowed", message=exc.message)

    @app.exception_handler(BadRequest)
    async def _bad(request: Request, exc: BadRequest) -> Response:
        s = _quiet_session(state, request)
        return state.page(request, "error.html", s, status=exc.status, title="Cannot do that", message=exc.message)

    @app.middleware("http")
    async def _headers(request: Request, call_next: Any) -> Response:
        resp: Response = await call_next(request)
        # No framing (clickjacking), no sniffing, scripts only from here: the pages hold personal data.
        resp.headers.setdefault("X-Frame-Options", "DENY")
        resp.headers.setdefault("X-Content-Type-Options", "nosniff")
        resp.headers.setdefault("Referrer-Policy", "same-origin")
        resp.headers.setdefault(
            "Content-Security-Policy",
            "default-src 'self'; media-src 'self'; img-src 'self'; object-src 'none'; frame-ancestors 'none'",
        )
        if request.url.path.startswith(("/record", "/media", "/admin", "/search", "/exceptions")):
            resp.headers.setdefault("Cache-Control", "no-store")
        return resp

    @app.get("/login", response_class=HTMLResponse)
    async def login_form(request: Request, why: str = "", then: str = "/search") -> Response:
        message = {"expired": "Your session has expired. Log in again.",
                   "login": "Log in to continue.", "out": "You are logged out."}.get(why, "")
        token = secrets.token_urlsafe(24)
        resp = state.page(request, "login.html", None, message=message, then=_safe_then(then), csrf=token)
        resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict", secure=config.web.secure_cookies,
                        path="/login")
        return resp

    @app.post("/login", response_class=HTMLResponse)
    async def login(request: Request) -> Response:
        form = await request.form()
        name, password = str(form.get("name", "")), str(form.get("password", ""))
        then = _safe_then(str(form.get("then", "/search")))
        cookie = request.cookies.get(LOGIN_CSRF)
        if not cookie or not accounts.csrf_ok(cookie, str(form.get("csrf", ""))):
            raise Forbidden("The login form was not sent by this site's login page (CSRF check failed). "
                            "Open the login page again.")
        account = accounts.check_password(state.db, name, password)
        from receiver.web import audit

        if account is None:
            audit.append(state.db, None, "login_failed", name[:64], account_name=name[:64])
            token = secrets.token_urlsafe(24)
            resp = state.page(request, "login.html", None, status=401, message="Wrong user name or password.",
                              error=True, then=then, csrf=token, name=name)
            resp.set_cookie(LOGIN_CSRF, token, httponly=True, samesite="strict",
                            secure=config.web.secure_cookies, path="/login")
            return resp
        audit.append(state.db, account, "login", account.name)
        token = accounts.open_session(state.db, account)
        ok = RedirectResponse(then, status_code=303)
        ok.set_cookie(COOKIE, token, httponly=True, samesite="strict", secure=config.web.secure_cookies, path="/")
        ok.delete_cookie(LOGIN_CSRF, path="/login")
        return ok

    @app.post("/logout")
    async def logout(request: Request) -> Response:
        s = state.session(request)
        state.check_csrf(s, await request.form())
        accounts.close_session(state.db, request.cookies[COOKIE])
        resp = RedirectResponse("/login?why=out", status_code=303)
        resp.delete_cookie(COOKIE, path="/")
        return resp

    @app.get("/")
    async def root() -> Response:
        return RedirectResponse("/search", status_code=303)

    from receiver.web import admin, pages

    pages.register(app, state)
    admin.register(app, state)
    return app


def _safe_then(then: str) -> str:
    """Only a path of this site after login (an open redirect would hand a phishing page our login)."""
    return then if then.startswith("/") and not then.startswith("//") and "\\" not in then else "/search"


def _quiet_session(state: WebState, request: Request) -> Session | None:
    """The session for an error page's navigation, if any; an error page never fails on it."""
    try:
        return state.session(request)
    except (LoginRequired, Forbidden):
        return None

"""The admin's pages: accounts and authorities, the devices, and the access log (read only, chain checked)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fastapi import FastAPI, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from receiver.store import ReceiverStore
from receiver.web import accounts, audit
from receiver.web.accounts import ROLES, AccountError
from receiver.web.app import BadRequest
from wire.kinds import KINDS

if TYPE_CHECKING:
    from receiver.web.app import WebState


def register(app: FastAPI, state: WebState) -> None:
    @app.get("/admin", response_class=HTMLResponse)
    async def admin_home(request: Request, message: str = "") -> Response:
        s = state.session(request, "admin")
        return state.page(request, "admin.html", s, accounts=accounts.accounts(state.db),
                          authorities=accounts.authorities(state.db), roles=ROLES, kinds=KINDS, message=message)

    @app.post("/admin/accounts")
    async def admin_add_account(request: Request) -> Response:
        s = state.session(request, "admin")
        form = await request.form()
        state.check_csrf(s, form)
        name = str(form.get("name", "")).strip()
        try:
            accounts.add_account(state.db, name, str(form.get("password", "")), str(form.get("role", "")),
                                 str(form.get("authority", "")))
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        audit.append(state.db, s.account, "account_set", name, {"role": str(form.get("role"))})
        return RedirectResponse("/admin?message=account+saved", status_code=303)

    @app.post("/admin/accounts/{name}/disable")
    async def admin_disable(request: Request, name: str) -> Response:
        s = state.session(request, "admin")
        state.check_csrf(s, await request.form())
        if name == s.account.name:
            raise BadRequest("You cannot disable your own account.")
        accounts.set_disabled(state.db, name, True)
        audit.append(state.db, s.account, "account_disabled", name)
        return RedirectResponse("/admin?message=account+disabled", status_code=303)

    @app.post("/admin/authorities")
    async def admin_add_authority(request: Request) -> Response:
        s = state.session(request, "admin")
        form = await request.form()
        state.check_csrf(s, form)
        name = str(form.get("name", "")).strip()
        societies = [x.strip() for x in str(form.get("societies", "")).split(",") if x.strip()]
        kinds = [str(k) for k in form.getlist("kinds")]
        try:
            accounts.add_authority(state.db, name, societies, kinds)
        except AccountError as exc:
            raise BadRequest(str(exc)) from None
        audit.append(state.db, s.account, "authority_set", name, {"societies": societies, "kinds": kinds})
        return RedirectResponse("/admin?message=authority+saved", status_code=303)

    @app.get("/admin/access-log", response_class=HTMLResponse)
    async def admin_log(request: Request, before: int | None = None) -> Response:
        s = state.session(request, "admin")
        rows = audit.rows(state.db, 200, before)
        checked, problem = audit.verify(state.db)
        return state.page(request, "access_log.html", s, rows=rows, checked=checked, problem=problem,
                          next=rows[-1].n if len(rows) == 200 else None)

    @app.get("/admin/devices", response_class=HTMLResponse)
    async def admin_devices(request: Request) -> Response:
        s = state.session(request, "admin")
        store = ReceiverStore.over(state.rdb)
        registered = set(state.registry.devices())
        devs = sorted(set(store.devices()) | registered)
        return state.page(request, "devices.html", s,
                          devices=[store.device_state(d) | {"registered": d in registered} for d in devs])

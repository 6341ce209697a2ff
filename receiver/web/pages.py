"""The pages every role has: search, exceptions, a record beside its clips, clip requests, media, export, compliance."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import time
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI, Request
from fastapi.responses import FileResponse, HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.background import BackgroundTask

from receiver.evidence.export import ExportError, export_bundle
from receiver.evidence.keys import lookup_for
from receiver.search import FLAGS, Query, search, split_dev
from receiver.web import audit, compliance, evidence
from receiver.web.app import BadRequest, Forbidden
from receiver.web.fmt import parse_local
from wire.kinds import KINDS

if TYPE_CHECKING:
    from receiver.web.app import WebState

log = logging.getLogger(__name__)
PART = re.compile(r"^[a-z0-9][a-z0-9-]{0,31}$")



def _query(params: dict[str, str], exceptions: bool) -> Query:
    def opt(k: str) -> str | None:
        v = params.get(k, "").strip()
        return v or None

    kind = opt("kind")
    if kind is not None and kind not in KINDS:
        raise BadRequest(f"kind = {kind!r} is not one of: {', '.join(KINDS)}")
    try:
        since, until = parse_local(params.get("since", ""), "from"), parse_local(params.get("until", ""), "until")
    except ValueError as exc:
        raise BadRequest(str(exc)) from None
    before = None
    if opt("before"):
        try:
            a, b, c, d = (int(x) for x in params["before"].split(":"))
            before = (a, b, c, d)
        except ValueError:
            raise BadRequest("before must be AT:DID:SEQ:POS (the link under the results)") from None
    return Query(society=opt("society"), branch=opt("branch"), kind=kind, since=since, until=until,
                 receipt=opt("receipt"), till=opt("till"), gtin=opt("gtin"), doc=opt("doc"),
                 exceptions=exceptions or params.get("exceptions") == "1", before=before)


def register(app: FastAPI, state: WebState) -> None:
    @app.get("/search", response_class=HTMLResponse)
    async def search_page(request: Request) -> Response:
        return _results(request, state, exceptions=False)

    @app.get("/exceptions", response_class=HTMLResponse)
    async def exceptions_page(request: Request) -> Response:
        return _results(request, state, exceptions=True)

    @app.get("/record/{did}/{seq}/{pos}", response_class=HTMLResponse)
    async def record_page(request: Request, did: int, seq: int, pos: int) -> Response:
        s = state.session(request)
        reqs = _requests(state, did, seq, pos)
        try:
            view = evidence.load_record(state.rdb, state.registry, state.media_dir, did, seq, pos, s.account.grants,
                                        state.config.web.clip_window_s * 1000, reqs)
        except evidence.NotFound:
            raise BadRequest("There is no such record.", 404) from None
        except evidence.NotGranted:
            raise Forbidden(f"Your authority ({s.account.authority}) has not been granted this record's society "
                            "or kind.") from None
        evidence.request_states(state.rdb, did, reqs)
        cameras = sorted({m.camera for m in view.media} | {g.camera for g in view.gaps} | _cameras(state, did))
        return state.page(request, "record.html", s, v=view, flags=FLAGS, cameras=cameras,
                          export_ready=True)

    @app.get("/record/{did}/{seq}/{pos}/requests.json")
    async def record_requests(request: Request, did: int, seq: int, pos: int) -> Response:
        s = state.session(request)
        _granted_record(state, s.account.grants, did, seq, pos)
        reqs = _requests(state, did, seq, pos)
        evidence.request_states(state.rdb, did, reqs)
        return JSONResponse({"requests": [{"cid": r.cid, "state": r.state, "media": r.media} for r in reqs]})

    @app.post("/record/{did}/{seq}/{pos}/request")
    async def request_media(request: Request, did: int, seq: int, pos: int) -> Response:
        s = state.session(request, "operator")
        form = await request.form()
        state.check_csrf(s, form)
        row = _granted_record(state, s.account.grants, did, seq, pos)
        if s.account.grants.kinds is not None and "media" not in s.account.grants.kinds:
            raise Forbidden(f"Your authority ({s.account.authority}) is not granted media: it cannot ask for clips.")
        cmd = str(form.get("cmd", "clip"))
        camera = str(form.get("camera", "")).strip()
        if cmd not in ("clip", "snapshot") or not camera:
            raise BadRequest("Choose clip or snapshot, and name the camera.")
        args: dict[str, Any] = {"camera": camera}
        start = end = None
        if cmd == "clip":
            try:
                start = parse_local(str(form.get("start", "")), "from")
                end = parse_local(str(form.get("end", "")), "until")
            except ValueError as exc:
                raise BadRequest(str(exc)) from None
            if start is None or end is None or end <= start:
                raise BadRequest("A clip needs a start before its end.")
            args |= {"start": start, "end": end}
        dev = row["dev"]
        try:
            cid = _send_command(state, dev, cmd, args)
        except Exception as exc:  # the broker is down or refuses us: say so on the page, keep nothing half-done
            log.warning("command %s to %s not sent: %s", cmd, dev, exc)
            raise BadRequest(f"The {cmd} request could not be sent to {dev}: {exc}", 502) from None
        db = state.db
        db.begin()
        try:
            db.execute(
                'INSERT INTO clip_requests (cid, did, dev, record_seq, record_pos, cmd, camera, start, "end", '
                "account, at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (cid, did, dev, seq, pos, cmd, camera, start, end, s.account.name, int(time.time() * 1000)),
            )
            db.commit()
        except BaseException:
            db.rollback()
            raise
        audit.append(db, s.account, "request_" + cmd, f"{dev} {camera}", {"command": cid, **args})
        return RedirectResponse(f"/record/{did}/{seq}/{pos}#requests", status_code=303)

    @app.get("/media/{did}/{media_id}")
    async def media(request: Request, did: int, media_id: str) -> Response:
        s = state.session(request)
        row = state.rdb.execute(
            "SELECT d.dev, m.path, m.type, m.camera, m.state FROM media m JOIN devices d ON d.did = m.did "
            "WHERE m.did = ? AND m.media_id = ?",
            (did, media_id),
        ).fetchone()
        if row is None or row[4] != "complete" or row[1] is None:
            return Response("no such clip (or not complete yet)", status_code=404, media_type="text/plain")
        dev, path, mtype, camera = row[0], row[1], row[2], row[3]
        society, _ = split_dev(dev)
        if not s.account.grants.allows(society, "media"):
            return Response("your authority is not granted this clip", status_code=403, media_type="text/plain")
        rng = request.headers.get("range", "")
        # One row per viewing, not per range request: a player asks for bytes=0- when it starts (or restarts).
        if not rng or rng.replace(" ", "").startswith("bytes=0-"):
            audit.append(state.db, s.account, "view_clip", f"{dev} {media_id}", {"camera": camera, "range": rng})
        return FileResponse(path, media_type=mtype, headers={"Cache-Control": "no-store"})

    @app.post("/export")
    async def export(request: Request) -> Response:
        s = state.session(request, "auditor")
        form = await request.form()
        state.check_csrf(s, form)
        picked = [str(v) for v in form.getlist("rec")]
        if not picked:
            raise BadRequest("Select at least one record to export.")
        selection: list[tuple[str, str]] = []
        refused = 0
        for p in picked[:10_000]:
            try:
                did, seq, pos = (int(x) for x in p.split(":"))
            except ValueError:
                raise BadRequest(f"{p!r} is not a record reference") from None
            row = state.rdb.execute(
                "SELECT d.dev, s.id, s.society, s.kind FROM record_search s JOIN devices d ON d.did = s.did "
                "WHERE s.did = ? AND s.seq = ? AND s.pos = ?",
                (did, seq, pos),
            ).fetchone()
            if row is None or not s.account.grants.allows(row[2], row[3]):
                refused += 1  # not granted (or unknown): left out, whatever the form said
                continue
            selection.append((row[0], row[1]))
        if not selection:
            raise Forbidden(f"None of the selected records is granted to your authority ({s.account.authority}).")
        from receiver.keys import load_central_key
        from wire.cose import Signer

        signer = Signer(load_central_key(state.config.receiver.key_file))
        audit.append(state.db, s.account, "export", f"{len(selection)} records",
                     {"records": [f"{d} {i}" for d, i in selection], "refused": refused})
        fd, tmp = tempfile.mkstemp(prefix="coop-bundle-", suffix=".cbor")
        try:
            with os.fdopen(fd, "wb") as out:
                # keys: the devices' keys as this centre's config and registry hold them (the library's
                # default would read the installed config, not the one this application was started with).
                export_bundle(state.rdb, state.media_dir, selection, signer, out,
                              exporter_name=f"{state.config.web.exporter_name} ({s.account.name})",
                              keys=lookup_for(state.config, state.rdb))
        except ExportError as exc:
            os.unlink(tmp)
            raise BadRequest(f"The bundle could not be made: {exc}", 409) from None
        except BaseException:
            os.unlink(tmp)
            raise
        name = f"evidence-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}.coop-bundle"
        return FileResponse(tmp, media_type="application/octet-stream", filename=name,
                            background=BackgroundTask(os.unlink, tmp))

    @app.get("/compliance", response_class=HTMLResponse)
    async def compliance_index(request: Request) -> Response:
        s = state.session(request)
        socs = sorted({r[0].split("/")[0] for r in state.rdb.execute("SELECT dev FROM devices")})
        g = s.account.grants.societies
        return state.page(request, "compliance_index.html", s, societies=[x for x in socs if g is None or x in g])

    # Before /compliance/{society}: that pattern would take "soc-a.csv" as a society.
    @app.get("/compliance/{society}.csv")
    async def compliance_csv(request: Request, society: str, sort: str = "problems", dir: str = "desc") -> Response:
        s = state.session(request)
        rows = _compliance(state, s, society, sort, dir)
        return Response(compliance.to_csv(rows), media_type="text/csv; charset=utf-8",
                        headers={"Content-Disposition": f'attachment; filename="compliance-{society}.csv"'})

    @app.get("/compliance/{society}", response_class=HTMLResponse)
    async def compliance_page(request: Request, society: str, sort: str = "problems", dir: str = "desc") -> Response:
        s = state.session(request)
        rows = _compliance(state, s, society, sort, dir)
        return state.page(request, "compliance.html", s, society=society, rows=rows, columns=compliance.COLUMNS,
                          sort=sort, dir=dir, cfg=state.config.web)

def _compliance(state: WebState, s: Any, society: str, sort: str, direction: str) -> list[compliance.Row]:
    if not PART.match(society):
        raise BadRequest("A society id is lower-case letters, digits and '-'.", 404)
    g = s.account.grants.societies
    if g is not None and society not in g:
        raise Forbidden(f"Your authority ({s.account.authority}) has not been granted society {society}.")
    rows = compliance.report(state.rdb, society, state.config.web, int(time.time() * 1000))
    return compliance.sort_rows(rows, sort, direction != "asc")


def _results(request: Request, state: WebState, exceptions: bool) -> Response:
    s = state.session(request)
    params = dict(request.query_params)
    q = _query(params, exceptions)
    g = s.account.grants
    if q.society and g.societies is not None and q.society not in g.societies:
        raise Forbidden(f"Your authority ({s.account.authority}) has not been granted society {q.society}.")
    if q.kind and g.kinds is not None and q.kind not in g.kinds:
        raise Forbidden(f"Your authority ({s.account.authority}) has not been granted records of kind {q.kind}.")
    searched = exceptions or any(params.get(k) for k in ("society", "branch", "kind", "since", "until", "receipt",
                                                          "till", "gtin", "doc", "before"))
    t0 = time.perf_counter()
    rows = search(state.rdb, q, g) if searched else []
    took_ms = (time.perf_counter() - t0) * 1000
    nxt = None
    if len(rows) == q.limit:
        last = rows[-1]
        nxt = {**{k: v for k, v in params.items() if k != "before"},
               "before": f"{last['at']}:{last['did']}:{last['seq']}:{last['pos']}"}
    kinds = [k for k in KINDS if g.kinds is None or k in g.kinds]
    return state.page(request, "search.html", s, rows=rows, p=params, exceptions=exceptions, searched=searched,
                      took_ms=took_ms, next=nxt, kinds=kinds, flags=FLAGS, export_ready=True)


def _granted_record(state: WebState, grants: Any, did: int, seq: int, pos: int) -> dict[str, Any]:
    row = state.rdb.execute(
        "SELECT d.dev, s.society, s.kind, s.at FROM record_search s JOIN devices d ON d.did = s.did "
        "WHERE s.did = ? AND s.seq = ? AND s.pos = ?",
        (did, seq, pos),
    ).fetchone()
    if row is None:
        raise BadRequest("There is no such record.", 404)
    if not grants.allows(row[1], row[2]):
        raise Forbidden("Your authority has not been granted this record's society or kind.")
    return {"dev": row[0], "society": row[1], "kind": row[2], "at": row[3]}


def _requests(state: WebState, did: int, seq: int, pos: int) -> list[evidence.Request]:
    return [
        evidence.Request(r[0], r[1], r[2], r[3], r[4], r[5], r[6], "sent")
        for r in state.db.execute(
            'SELECT cid, cmd, camera, start, "end", account, at FROM clip_requests '
            "WHERE did = ? AND record_seq = ? AND record_pos = ? ORDER BY at",
            (did, seq, pos),
        )
    ]


def _cameras(state: WebState, did: int) -> set[str]:
    """Cameras this device has sent media or gaps from (the request form offers them)."""
    return {r[0] for r in state.rdb.execute(
        "SELECT DISTINCT camera FROM media WHERE did = ?", (did,))}


def _send_command(state: WebState, dev: str, cmd: str, args: dict[str, Any]) -> str:
    """Sign the command with the central key and publish it (QoS 1) as `coop-receiver send-command` does."""
    from receiver.keys import load_central_key
    from receiver.mqtt import publish_once
    from wire.cose import Signer
    from wire.messages import command
    from wire.topics import device_topic

    r = state.config.receiver
    signer = state.extra.get("signer")
    if signer is None:
        signer = state.extra["signer"] = Signer(load_central_key(r.key_file))
    cid, cose = command(signer, dev, cmd, args)
    publish_once(r, device_topic(r.topic_prefix, dev, "cmd"), cose, f"{r.client_id}-web-{os.getpid()}",
                 r.command_timeout_s)
    return cid

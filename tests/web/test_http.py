"""The evidence view over HTTP against real uvicorn, on SQLite and on a real PostgreSQL.

Search by each field, the exceptions list, clips served with HTTP Range, CSRF on forms,
roles, grants in search and clips, the append-only hash-chained access log, compliance CSV,
and the search index backfill.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterator
from contextlib import closing
from typing import Any

import httpx
import pytest

from receiver.database import open_database
from receiver.search import backfill
from receiver.web import audit
from tests.web.conftest import PASSWORD, Web

STORES = ("sqlite", "postgresql")


def login(web: Web, name: str) -> httpx.Client:
    c = httpx.Client(base_url=web.url, timeout=30)
    page = c.get("/login")
    csrf = re.search(r'name="csrf" value="([^"]+)"', page.text)
    assert csrf is not None
    r = c.post("/login", data={"name": name, "password": PASSWORD, "csrf": csrf.group(1), "then": "/search"})
    assert r.status_code == 303, r.text
    return c


def csrf_of(c: httpx.Client, path: str = "/search") -> str:
    m = re.search(r'name="csrf" value="([^"]+)"', c.get(path).text)
    assert m is not None
    return m.group(1)


def receipts(html: str) -> list[str]:
    return re.findall(r"<td>(R-\d+|W-\d+|ST-\d+)</td>", html)


@pytest.fixture
def auditor(web: Web) -> Iterator[httpx.Client]:
    c = login(web, "audrey")
    yield c
    c.close()


def test_search_by_each_field(auditor: httpx.Client) -> None:
    def q(**params: Any) -> list[str]:
        r = auditor.get("/search", params=params)
        assert r.status_code == 200, r.text
        return receipts(r.text)

    assert q(receipt="R-1003") == ["R-1003"]
    assert q(till="7") == ["R-9001"]
    assert q(doc="W-77") == ["W-77"]
    assert q(gtin="06291041500299") == ["R-1002"]
    assert q(gtin="06291041500213", society="soc-a", branch="branch-2") == ["R-2001"]
    assert q(gtin="06291041500213", society="soc-b") == ["R-9001"]
    assert q(society="soc-a", branch="branch-2") == ["R-2001"]
    assert q(kind="stock_move") == ["W-77"]
    # [16:00:05, 16:00:25): the voids of branch-2 and branch-9, newest first
    assert q(since="2025-11-24T16:00:05", until="2025-11-24T16:00:25", kind="sale") == ["R-9001", "R-2001"]
    assert q(receipt="R-1003", society="soc-b") == []
    bad = auditor.get("/search", params={"since": "yesterday"})
    assert bad.status_code == 400 and "give a date and time" in bad.text


def test_exceptions_newest_first(auditor: httpx.Client) -> None:
    assert receipts(auditor.get("/exceptions").text) == ["ST-5", "W-77", "R-1004", "R-1003", "R-9001", "R-2001"]


def test_clip_is_served_with_range_and_each_viewing_logged(web: Web, auditor: httpx.Client) -> None:
    did = web.centre.ids["void"].split(":")[0]
    blob = web.centre.clip.read_bytes()
    whole = auditor.get(f"/media/{did}/clip-void-1")
    assert whole.status_code == 200 and whole.content == blob and whole.headers["content-type"] == "video/mp4"
    part = auditor.get(f"/media/{did}/clip-void-1", headers={"Range": "bytes=100-199"})
    assert part.status_code == 206 and part.content == blob[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{len(blob)}"
    db = web.centre.web_db()
    try:
        views = db.execute("SELECT account, target FROM access_log WHERE action = 'view_clip'").fetchall()
    finally:
        db.close()
    assert [tuple(v) for v in views] == [("audrey", "soc-a/branch-1/agent-1 clip-void-1")]  # not per range
    anon = httpx.get(f"{web.url}/media/{did}/clip-void-1")
    assert anon.status_code == 401 and anon.content != blob


def test_partner_sees_neither_other_societies_nor_clips(web: Web) -> None:
    with closing(login(web, "pat")) as c:
        assert receipts(c.get("/exceptions").text) == ["R-9001"]
        assert receipts(c.get("/search", params={"gtin": "06291041500213"}).text) == ["R-9001"]
        did = web.centre.ids["void"].split(":")[0]
        r = c.get(f"/media/{did}/clip-void-1")
        assert r.status_code == 403 and r.content != web.centre.clip.read_bytes()
        assert c.get("/search", params={"kind": "stock_move"}).status_code == 403


def test_forms_refuse_a_missing_or_foreign_csrf_token(web: Web) -> None:
    with closing(login(web, "olga")) as c:
        void = web.centre.ids["void"].replace(":", "/")
        for token in (None, "forged"):
            data = {"cmd": "snapshot", "camera": "till-3"} | ({"csrf": token} if token else {})
            r = c.post(f"/record/{void}/request", data=data)
            assert r.status_code == 403 and "CSRF check failed" in r.text
        r = c.post("/logout", data={"csrf": "forged"})
        assert r.status_code == 403 and c.get("/search").status_code == 200  # still logged in
    with httpx.Client(base_url=web.url) as anon:
        r = anon.post("/login", data={"name": "audrey", "password": PASSWORD, "csrf": "x"})
        assert r.status_code == 403 and "coop_session" not in r.cookies


def test_auditor_cannot_ask_for_clips(web: Web, auditor: httpx.Client) -> None:
    void = web.centre.ids["void"].replace(":", "/")
    r = auditor.post(f"/record/{void}/request", data={"cmd": "snapshot", "camera": "till-3",
                                                      "csrf": csrf_of(auditor)})
    assert r.status_code == 403 and "needs the operator role" in r.text


def test_access_log_is_append_only_and_chained(web: Web, auditor: httpx.Client) -> None:
    did = web.centre.ids["void"].split(":")[0]
    auditor.get(f"/media/{did}/clip-void-1")
    db = web.centre.web_db()
    try:
        n, problem = audit.verify(db)
        assert n >= 2 and problem is None
        for sql in ("UPDATE access_log SET account = 'nobody'", "DELETE FROM access_log"):
            with pytest.raises(db.errors, match="append-only"):
                db.begin()
                try:
                    db.execute(sql)
                finally:
                    db.rollback()
        assert audit.verify(db) == (n, None)
        if db.kind == "postgresql":
            with pytest.raises(db.errors, match="append-only"):
                db.execute("TRUNCATE access_log")
        else:  # someone with the file and sqlite3 drops the trigger: the chain shows the edit
            db.execute("DROP TRIGGER access_log_no_update")
            db.execute("UPDATE access_log SET target = 'something else' WHERE action = 'view_clip'")
            checked, problem = audit.verify(db)
            assert problem is not None and problem.endswith("was changed after it was written")
    finally:
        db.close()


def test_compliance_csv_sorted(web: Web, auditor: httpx.Client) -> None:
    page = auditor.get("/compliance/soc-a", params={"sort": "device", "dir": "asc"})
    assert page.status_code == 200
    r = auditor.get("/compliance/soc-a.csv", params={"sort": "device", "dir": "desc"})
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/csv")
    rows = list(csv.DictReader(io.StringIO(r.text)))
    assert [x["device"] for x in rows] == ["soc-a/branch-2/agent-1", "soc-a/branch-1/agent-1"]
    b1 = rows[1]
    # Its 3 batches came just now (not silent) but were sealed a year ago (late); its ST-6 stock-take
    # never closed; no status (so no clock) came.
    assert b1["silent_min"] == "0" and b1["late_batches_24h"] == "3" and b1["open_stocktakes"] == "1"
    assert b1["clock"] == "no status received" and b1["missing_batches"] == "0" and b1["chain_breaks"] == "0"
    assert b1["problems"] == "3" and rows[0]["problems"] == "2"


def test_backfill_indexes_rows_stored_before_the_index(web: Web, auditor: httpx.Client) -> None:
    before = auditor.get("/exceptions").text
    db = open_database(web.centre.config.receiver, writer=True)
    try:
        db.begin()
        db.execute("DELETE FROM record_search")
        db.execute("DELETE FROM record_gtins")
        db.commit()
        assert receipts(auditor.get("/exceptions").text) == []
        assert backfill(db) == 11
        assert backfill(db) == 0  # again: nothing left to do
    finally:
        db.close()
    assert receipts(auditor.get("/exceptions").text) == receipts(before)
    assert receipts(auditor.get("/search", params={"gtin": "06291041500299"}).text) == ["R-1002"]


def test_pages_follow_each_other_without_loss_or_repeat(web: Web) -> None:
    """Keyset pages (`before` = the last row's at, did, seq, pos) walk the whole list exactly once."""
    from receiver.search import Grants, Query, search

    db = open_database(web.centre.config.receiver, writer=False)
    try:
        everything = search(db, Query(limit=500), Grants(None, None))
        seen: list[str] = []
        before = None
        while True:
            page = search(db, Query(limit=2, before=before), Grants(None, None))
            if not page:
                break
            seen += [r["id"] for r in page]
            last = page[-1]
            before = (last["at"], last["did"], last["seq"], last["pos"])
    finally:
        db.close()
    assert seen == [r["id"] for r in everything] and len(seen) == 11

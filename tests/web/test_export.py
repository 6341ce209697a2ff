"""Exports from the evidence view: only what the account's authority is granted goes in, and each is logged.

The bundle itself is receiver/evidence/export.py's (its own tests check the format and
`coop-verify`); here the route: the selection is filtered by the grants before the library
sees it, the export is in the access log with exactly the records that went in, and the
answer is a download. The test of a real bundle runs when that module is part of the build.
"""

from __future__ import annotations

import json
import re
from contextlib import closing

from tests.web.conftest import Web
from tests.web.test_http import csrf_of, login


def _exports(web: Web) -> list[dict[str, object]]:
    db = web.centre.web_db()
    try:
        return [json.loads(r[0]) for r in db.execute("SELECT detail FROM access_log WHERE action = 'export'")]
    finally:
        db.close()


def _ref(web: Web, receipt: str, name: str) -> str:
    with closing(login(web, name)) as c:
        refs = re.findall(r'name="rec" value="(\d+:\d+:\d+)"', c.get("/search", params={"receipt": receipt}).text)
    assert len(refs) == 1, refs
    return str(refs[0])


def test_export_of_records_not_granted_is_refused_and_nothing_logged(web: Web) -> None:
    soc_a_void = web.centre.ids["void"]
    with closing(login(web, "pat")) as c:  # partner: soc-b sales only
        r = c.post("/export", data={"csrf": csrf_of(c), "rec": [soc_a_void]})
    assert r.status_code == 403
    assert "None of the selected records is granted to your authority (partner)" in r.text
    assert _exports(web) == []


def test_export_without_csrf_is_refused(web: Web) -> None:
    with closing(login(web, "audrey")) as c:
        r = c.post("/export", data={"rec": [web.centre.ids["void"]]})
    assert r.status_code == 403 and "CSRF" in r.text and _exports(web) == []


def test_export_bundle_holds_only_the_granted_records(web: Web) -> None:
    soc_b_void = _ref(web, "R-9001", "pat")
    with closing(login(web, "pat")) as c:
        r = c.post("/export", data={"csrf": csrf_of(c), "rec": [web.centre.ids["void"], soc_b_void]})
    assert r.status_code == 200, r.text
    assert r.headers["content-disposition"].startswith('attachment; filename="evidence-')
    assert len(r.content) > 0
    (logged,) = _exports(web)
    assert logged["records"] == ["soc-b/branch-9/agent-1 0190a000-0000-7000-8000-000000000020"]
    assert logged["refused"] == 1

"""POST /v1/records over real HTTP into a real SQLite file: every status code, with its reason."""

from __future__ import annotations

import copy
import json
import random
import socket
from collections.abc import Callable
from typing import Any

import httpx
import orjson
import pytest
from prometheus_client import REGISTRY

from tests.api.conftest import TOKEN, Api, stored
from tests.api.test_records import VALID

Serve = Callable[..., Api]


def rec(kind: str = "weight", **env: Any) -> dict[str, Any]:
    return {"kind": kind, "data": copy.deepcopy(VALID[kind]), **env}


def check(r: httpx.Response, status: int, reason: str, index: int | None = None) -> None:
    assert r.status_code == status, r.text
    doc = r.json()
    assert reason in doc["reason"], doc
    assert doc.get("index") == index


@pytest.mark.parametrize("fast_path", [True, False], ids=["raw-asgi", "fastapi"])
def test_201_only_after_commit_and_ids_in_order(serve: Serve, fast_path: bool) -> None:
    api = serve(fast_path=fast_path)
    r = api.post({"records": [rec("sale", id="pos-3:R-1"), rec("weight"), rec("stock_move", src="erp")]})
    assert r.status_code == 201, r.text
    ids = r.json()["ids"]
    assert ids[0] == "pos-3:R-1" and len(set(ids)) == 3
    # read through a connection of our own: committed, not just queued
    assert stored(api.sink) == {ids[0]: "api", ids[1]: "api", ids[2]: "erp"}


def test_x_coop_source_names_the_default_src(serve: Serve) -> None:
    api = serve()
    r = api.post({"records": [rec(id="a")]}, x_coop_source="pos-3")
    assert r.status_code == 201
    assert stored(api.sink) == {"a": "api:pos-3"}
    check(api.post({"records": [rec()]}, x_coop_source="pos 3/../x"), 400, "X-Coop-Source must be")


def test_all_or_nothing_one_bad_record_in_100(serve: Serve) -> None:
    api = serve()
    rng = random.Random(7)
    records = [rec(rng.choice(["sale", "weight", "count", "scan"])) for _ in range(100)]
    del records[63]["data"][next(iter(records[63]["data"]))]
    missing = next(iter(VALID[records[63]["kind"]]))
    check(api.post({"records": records}), 422, f"records[63].data: missing {missing}", 63)
    assert api.count() == 0
    del records[63]
    assert api.post({"records": records}).status_code == 201
    assert api.count() == 99


def test_idempotent_repost_and_409_on_different_content(serve: Serve) -> None:
    api = serve()
    body = {"records": [rec("sale", id="R-1"), rec("weight", id="W-1")]}
    first = api.post(body)
    again = api.post(body)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json() == {"ids": ["R-1", "W-1"]}
    assert api.count() == 2
    changed = copy.deepcopy(body)
    changed["records"][1]["data"]["grams"] += 1
    check(api.post(changed), 409, "records[1]: id 'W-1' already exists with different content", 1)
    assert api.count() == 2


@pytest.mark.parametrize("fast_path", [True, False], ids=["raw-asgi", "fastapi"])
def test_401_missing_or_wrong_token_stores_nothing(serve: Serve, fast_path: bool) -> None:
    api = serve(fast_path=fast_path)
    for token in (None, "wrong", TOKEN + "x", TOKEN[:-1]):
        r = api.post({"records": [rec()]}, token=token)
        check(r, 401, "missing or wrong bearer token")
        assert r.headers["www-authenticate"] == "Bearer"
        assert TOKEN not in r.text
    r = api.client.post(f"{api.url}/v1/records", json={"records": [rec()]}, headers={"authorization": f"Basic {TOKEN}"})
    assert r.status_code == 401
    assert api.count() == 0


@pytest.mark.parametrize("fast_path", [True, False], ids=["raw-asgi", "fastapi"])
def test_400_bad_json_and_bad_shape(serve: Serve, fast_path: bool) -> None:
    api = serve(fast_path=fast_path)
    check(api.post(b'{"records": [}'), 400, "body is not valid JSON")
    check(api.post(b'{"records": [{"kind": "weight", "data": {"grams": NaN}}]}'), 400, "not valid JSON")
    check(api.post(b"\xff\xfe"), 400, "not valid JSON")
    check(api.post([rec()]), 400, 'body must be a JSON object {"records": [...]}')
    check(api.post({"records": rec()}), 400, "records must be a list")
    check(api.post({"records": []}), 400, "records is empty")
    check(api.post({"records": [rec()], "extra": 1}), 400, "unknown key 'extra' at top level")
    assert api.count() == 0


def test_415_wrong_content_type(serve: Serve) -> None:
    api = serve()
    body = orjson.dumps({"records": [rec()]})
    check(
        api.post(body, content_type="text/plain"),
        415,
        "Content-Type must be application/json (got text/plain)",
    )
    check(api.post(body, content_type="application/json; charset=latin-1"), 415, "must be application/json")
    r = api.client.post(f"{api.url}/v1/records", content=body, headers={"authorization": f"Bearer {TOKEN}"})
    check(r, 415, "(got none)")
    assert api.post(body, content_type="application/json; charset=UTF-8").status_code == 201


@pytest.mark.parametrize("fast_path", [True, False], ids=["raw-asgi", "fastapi"])
def test_413_oversize_body_and_too_many_records(serve: Serve, fast_path: bool) -> None:
    api = serve(fast_path=fast_path, max_body_bytes=2048, max_records_per_request=3)
    big = {"records": [rec("weight", **{"data": {"grams": 1, "scale": "s", "pad": "x" * 3000}})]}
    check(api.post(big), 413, "body over 2048 bytes ([api] max_body_bytes)")

    def chunks() -> Any:  # no Content-Length: the limit is enforced while reading
        yield b'{"records": ['
        for _ in range(100):
            yield b'{"kind": "weight", "data": {"grams": 1, "scale": "s"}},'
        yield b"]}"

    r = api.client.post(
        f"{api.url}/v1/records",
        content=chunks(),
        headers={"authorization": f"Bearer {TOKEN}", "content-type": "application/json"},
    )
    check(r, 413, "body over 2048 bytes")
    check(api.post({"records": [rec()] * 4}), 413, "4 records in one request; at most 3")
    assert api.count() == 0


def test_422_unknown_kind_missing_fields_and_media(serve: Serve) -> None:
    api = serve()
    check(
        api.post({"records": [rec(), {"kind": "refund", "data": {}}]}),
        422,
        "records[1].kind: unknown kind 'refund'; allowed: sale, stock_move",
        1,
    )
    bad = rec("sale")
    del bad["data"]["lines"][0]["gtin"]
    check(api.post({"records": [bad]}), 422, "records[0].data.lines[0]: missing gtin", 0)
    check(api.post({"records": [{"kind": ["sale"]}]}), 422, "records[0].kind: unknown kind ['sale']", 0)
    check(api.post({"records": [rec(), 5]}), 422, "records[1]: must be a map with kind and data", 1)
    media = {"kind": "media", "data": {"media": "m"}}
    check(api.post({"records": [rec(), media]}), 422, "records[1].kind: media records are made by the agent", 1)
    check(api.post({"records": [rec(at=1_700_000_000)]}), 422, "records[0].at: 1700000000 is before 2020", 0)
    assert api.count() == 0


def test_507_when_the_buffer_is_full_nothing_of_the_request_is_stored(serve: Serve) -> None:
    """The buffer's cap ([buffer] max_db_mb) stands in for a full disk; the lead's buffer tests
    cover a real SQLITE_FULL. Here: the API's answer and all-or-nothing."""
    api = serve(store_opts={"max_db_bytes": 1024 * 1024})
    pad = "y" * 3000
    answers = []
    for i in range(300):
        r = api.post({"records": [rec(data={"grams": i, "scale": "s", "pad": pad}) for _ in range(3)]})
        answers.append(r.status_code)
        if r.status_code == 507:
            assert "[buffer] max_db_mb" in r.json()["reason"] and "refused" in r.json()["reason"]
            break
    assert answers[0] == 201 and answers[-1] == 507
    assert api.count() == 3 * answers.count(201)


def test_503_when_the_buffer_is_not_running(serve: Serve) -> None:
    api = serve()
    api.sink.stop()
    check(api.post({"records": [rec()]}), 503, "the buffer is not running")


ODD = [None, True, -1, 2**63, 1.5, "", "x" * 300, [], {}, [1, "a"], {"k": [None]}, "6281007032285"]


def mutate(rng: random.Random, value: Any, depth: int = 0) -> Any:
    """Delete, retype or nest one spot of a valid record, at random (seeded)."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        roll = rng.random()
        if roll < 0.25:
            del out[key]
        elif roll < 0.5:
            out[key] = rng.choice(ODD)
        else:
            out[key] = mutate(rng, value[key], depth + 1)
        return out
    if isinstance(value, list) and value and rng.random() < 0.7:
        i = rng.randrange(len(value))
        return [*value[:i], mutate(rng, value[i], depth + 1), *value[i + 1 :]]
    return rng.choice(ODD)


def test_mutated_records_get_a_4xx_with_a_reason_never_a_500(serve: Serve) -> None:
    api = serve()
    rng = random.Random(20261129)
    seen: set[int] = set()
    for _ in range(150):
        kind = rng.choice(sorted(set(VALID) - {"media"}))  # media holds bytes, not JSON
        body = {"records": [rec("weight"), mutate(rng, rec(kind, id=f"m{rng.random()}"))]}
        r = api.post(body)
        assert r.status_code in (201, 400, 409, 422), r.text
        if r.status_code != 201:
            assert r.json()["reason"]
        seen.add(r.status_code)
    assert 422 in seen


def test_a_client_that_hangs_up_mid_body_stores_nothing_and_harms_no_one(serve: Serve) -> None:
    api = serve()
    host, port = api.url.removeprefix("http://").rsplit(":", 1)
    head = (
        f"POST /v1/records HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {TOKEN}\r\n"
        "Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n"
    )
    with socket.create_connection((host, int(port))) as s:
        s.sendall(head.encode() + b'{"records": [{"kind": "weight", "da')
    assert api.post({"records": [rec(id="after")]}).status_code == 201
    assert api.count() == 1


def test_requests_and_records_are_counted_for_prometheus(serve: Serve) -> None:
    api = serve()

    def value(name: str, **labels: str) -> float:
        return REGISTRY.get_sample_value(name, labels) or 0.0

    before = (
        value("coop_api_ingest_requests_total", code="201"),
        value("coop_api_ingest_requests_total", code="401"),
        value("coop_api_ingest_records_total"),
    )
    assert api.post({"records": [rec(), rec()]}).status_code == 201
    assert api.post({"records": [rec()]}, token="nope").status_code == 401
    after = (
        value("coop_api_ingest_requests_total", code="201"),
        value("coop_api_ingest_requests_total", code="401"),
        value("coop_api_ingest_records_total"),
    )
    assert [b - a for a, b in zip(before, after, strict=True)] == [1, 1, 2]


def test_json_limits_duplicate_keys_depth_and_utf8(serve: Serve) -> None:
    api = serve()
    sale = json.dumps(rec("sale", id="dup"))
    dup = sale.replace('"total": ', '"total": 1, "total": ', 1)
    assert dup != sale
    check(api.post(('{"records": [' + dup + ']}').encode()), 400, "key 'total' appears twice in one JSON object")
    check(api.post(b'{"records": [], "records": []}'), 400, "key 'records' appears twice")
    # a ':' inside a string is no duplicate (it takes the slower, exact check)
    fine = rec("device_event", id="colon")
    fine["data"]["detail"] = {"at": "12:30:00", "url": "http://x:1/"}
    assert api.post({"records": [fine]}).status_code == 201
    # Nesting: 32 levels in all are allowed; past that 400 (at 1,000 the CBOR encoder's
    # recursion failed: a 500 before the limit).
    def nested(levels: int) -> bytes:
        ev = rec("device_event", id=f"deep-{levels}")
        ev["data"]["detail"] = "X"
        doc = json.dumps({"records": [ev]})
        return doc.replace('"X"', "[" * levels + "]" * levels).encode()
    assert api.post(nested(28)).status_code == 201  # + the body, its list, the record and data: 32
    for levels in (29, 1000):
        check(api.post(nested(levels)), 400, "JSON nested deeper than 32 levels")
    check(api.post(b'{"records": [{"kind": "gap", "data": {"what": "\xff", "reason": "r"}}]}'), 400,
          "body is not valid JSON: str is not valid UTF-8")
    check(api.post(b'{"records": [{"kind": "gap", "data": {"what": "\\ud800", "reason": "r"}}]}'), 400,
          "body is not valid JSON")
    assert set(stored(api.sink)) == {"colon", "deep-28"}

"""wire.records: per-kind validation, envelope rules, ids and fingerprints."""

from __future__ import annotations

import copy
import uuid
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from core.interfaces import RecordInvalid
from wire.records import (
    ADAPTERS,
    AT_MIN_MS,
    KINDS,
    MAX_RECORD_BYTES,
    JsonRecords,
    _sale_ok,
    new_id,
    normalize_records,
)

NOW = 1_790_000_000_000
GTIN = "6281007032285"

VALID: dict[str, dict[str, Any]] = {
    "sale": {
        "receipt": "R-1",
        "till": "till-3",
        "total": 1825,
        "currency": "KWD",
        "lines": [
            {"gtin": GTIN, "qty": 2, "unit_price": 350, "amount": 700},
            {"gtin": "96385074", "weight_g": 1250, "unit_price": 900, "amount": 1125},
        ],
    },
    "stock_move": {
        "type": "receive",
        "gtin": GTIN,
        "qty": 12,
        "from": "supplier-9",
        "to": None,
        "doc": "INV-77",
    },
    "count": {"session": "S-1", "location": "aisle-4", "gtin": GTIN, "qty": 3.5},
    "count_session": {"session": "S-1", "state": "closed", "locations": ["aisle-4"], "totals": {"lines": 1}},
    "scan": {"raw": "]E06281007032285", "symbology": "ean13", "gtin": GTIN},
    "weight": {"grams": 1250, "scale": "dock-1"},
    "media": {
        "media": "clip-1",
        "camera": "door",
        "type": "video/mp4",
        "start": NOW - 5000,
        "end": NOW,
        "size": 1000,
        "sha256": b"\x01" * 32,
        "chunk": 131072,
        "chunks": 1,
        "reason": {"rule": "tamper"},
    },
    "device_event": {"device": "scale:dock-1", "event": "online", "detail": {"port": "/dev/ttyUSB0"}},
    "gap": {"what": "media", "reason": "disk pressure"},
}


def one(kind: str, data: dict[str, Any] | None = None, **env: Any) -> dict[str, Any]:
    return {"kind": kind, "data": copy.deepcopy(VALID[kind]) if data is None else data, **env}


def reason(records: list[Any], **kw: Any) -> str:
    with pytest.raises(RecordInvalid) as info:
        normalize_records(records, now_ms=NOW, **kw)
    return info.value.reason


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_accepts_its_spec_example_and_keeps_extra_keys(kind: str) -> None:
    data = copy.deepcopy(VALID[kind])
    data["vendor_note"] = {"anything": [1, "two"]}
    [rec] = normalize_records([one(kind, data)], "scale:dock-1", now_ms=NOW)
    assert rec.kind == kind and rec.data == data and rec.src == "scale:dock-1" and rec.at == NOW
    assert not rec.id_given and uuid.UUID(rec.id).version == 7


@pytest.mark.parametrize(
    ("kind", "field", "where"),
    [
        ("sale", "receipt", "data"),
        ("sale", "lines", "data"),
        ("sale", "currency", "data"),
        ("sale", "total", "data"),
        ("stock_move", "type", "data"),
        ("stock_move", "doc", "data"),
        ("stock_move", "from", "data"),
        ("count", "session", "data"),
        ("count", "location", "data"),
        ("count_session", "state", "data"),
        ("scan", "raw", "data"),
        ("scan", "symbology", "data"),
        ("weight", "grams", "data"),
        ("weight", "scale", "data"),
        ("media", "sha256", "data"),
        ("device_event", "event", "data"),
        ("gap", "reason", "data"),
    ],
)
def test_missing_field_is_named(kind: str, field: str, where: str) -> None:
    rec = one(kind)
    del rec["data"][field]
    assert reason([one("weight"), rec]) == f"records[1].{where}: missing {field}"


def test_errors_name_the_nested_field() -> None:
    sale = one("sale")
    del sale["data"]["lines"][1]["gtin"]
    assert reason([sale]) == "records[0].data.lines[1]: missing gtin"
    sale = one("sale")
    del sale["data"]["lines"][0]["qty"]
    assert reason([sale]) == "records[0].data.lines[0]: needs qty or weight_g"
    sale = one("sale")
    sale["data"]["lines"][0]["gtin"] = "6281007032286"
    assert "records[0].data.lines[0].gtin: not a valid GTIN" in reason([sale])


@pytest.mark.parametrize(
    ("value", "words"),
    [("1825", "must be an integer"), (18.25, "must be an integer"), (True, "must be an integer")],
)
def test_money_is_integer_fils(value: Any, words: str) -> None:
    sale = one("sale")
    sale["data"]["total"] = value
    assert reason([sale]).startswith(f"records[0].data.total: {words}")


def test_closed_count_session_needs_totals_and_stock_move_type_is_an_enum() -> None:
    assert (
        reason([one("count_session", {"session": "S", "state": "closed", "locations": []})])
        == "records[0].data: a closed session needs totals"
    )
    bad = one("stock_move")
    bad["data"]["type"] = "steal"
    assert "records[0].data.type: input should be 'receive'" in reason([bad])


def test_envelope_rules() -> None:
    assert reason([{"kind": "nope", "data": {}}]).startswith("records[0].kind: unknown kind 'nope'; allowed: sale,")
    assert reason([{"data": {}}]).startswith("records[0].kind: missing kind")
    assert reason([{"kind": ["sale"], "data": {}}]).startswith("records[0].kind: unknown kind ['sale']")
    assert reason([{"kind": "weight"}]) == "records[0].data: missing data"
    assert reason([{"kind": "weight", "data": [1]}]) == "records[0].data: must be a map"
    assert reason([one("weight", ts=1)]).startswith("records[0]: unknown key 'ts'")
    assert reason(["weight"]) == "records[0]: must be a map with kind and data"
    assert reason([one("media")], kinds=("weight",)).startswith(
        "records[0].kind: unknown kind 'media'; allowed: weight"
    )


def test_at_is_epoch_ms_within_bounds() -> None:
    assert "before 2020-01-01" in reason([one("weight", at=1_700_000_000)])  # seconds, not ms
    assert "more than a day ahead" in reason([one("weight", at=NOW + 86_400_001)])
    assert "must be an integer" in reason([one("weight", at=1.7e12)])
    assert "must be an integer" in reason([one("weight", at=True)])
    [ok] = normalize_records([one("weight", at=AT_MIN_MS)], now_ms=NOW)
    assert ok.at == AT_MIN_MS


def test_id_and_src_rules() -> None:
    assert "1 to 128 printable" in reason([one("weight", id="")])
    assert "1 to 128 printable" in reason([one("weight", id="x" * 129)])
    assert "1 to 128 printable" in reason([one("weight", id="a\nb")])
    assert "1 to 128 printable" in reason([one("weight", id=7)])
    assert (
        reason([one("weight", id="A"), one("weight", id="A")])
        == "records[1].id: 'A' is also records[0].id; ids are unique"
    )
    assert "1 to 64 printable" in reason([one("weight", src="")])
    [n] = normalize_records([one("weight", id=None, at=None, src=None)], "dflt", now_ms=NOW)
    assert not n.id_given and n.at == NOW and n.src == "dflt"  # null is "fill it in", for all three
    [r] = normalize_records([one("weight", id="01J9ZQ3V4X5Y6Z7A8B9C0D1E2F", src="pos")], now_ms=NOW)
    assert r.id == "01J9ZQ3V4X5Y6Z7A8B9C0D1E2F" and r.id_given and r.src == "pos"


def test_values_must_be_cbor_friendly() -> None:
    assert (
        reason([one("weight", {"grams": 1, "scale": "s", "x": float("nan")})])
        == "records[0].data.x: must be a finite number (got nan)"
    )
    assert "inf" in reason([one("weight", {"grams": 1, "scale": "s", "x": [float("inf")]})])
    assert "map keys must be text" in reason([one("weight", {"grams": 1, "scale": "s", "x": {1: 2}})])
    assert "set values cannot be sent" in reason([one("weight", {"grams": 1, "scale": "s", "x": {1}})])
    assert "64-bit" in reason([one("weight", {"grams": 1, "scale": "s", "x": 2**70})])
    assert "bytes encoded" in reason([one("weight", {"grams": 1, "scale": "s", "x": "y" * MAX_RECORD_BYTES})])


def test_json_records_skip_the_cbor_check_and_give_the_same_result() -> None:
    """The API's records come from orjson, which cannot produce NaN, bytes or non-text keys;
    the JsonRecords type carries that promise through the sink, so the check is skipped
    (pinned here with a value JSON could never hold)."""
    plain = [one("sale", id="S"), one("weight", id="W")]
    assert normalize_records(JsonRecords(plain), now_ms=NOW) == normalize_records(plain, now_ms=NOW)
    nan = [one("weight", {"grams": 1, "scale": "s", "x": float("nan")})]
    assert "finite" in reason(nan)
    assert len(normalize_records(JsonRecords(nan), now_ms=NOW)) == 1


def test_fingerprint_matches_equal_content_and_ignores_a_filled_at() -> None:
    a = normalize_records([one("sale", id="X")], "api", now_ms=NOW)[0]
    b = normalize_records([one("sale", id="X")], "api", now_ms=NOW + 5000)[0]
    assert a.fingerprint == b.fingerprint and a.at != b.at
    changed = one("sale", id="X")
    changed["data"]["total"] += 1
    assert normalize_records([changed], "api", now_ms=NOW)[0].fingerprint != a.fingerprint
    assert normalize_records([one("sale", id="X")], "api:pos-2", now_ms=NOW)[0].fingerprint != a.fingerprint
    assert normalize_records([one("sale", id="X", at=NOW)], "api", now_ms=NOW)[0].fingerprint != a.fingerprint
    # Key order does not matter; bytes (media) take the CBOR path and stay deterministic.
    reordered = one("sale", dict(reversed(list(VALID["sale"].items()))), id="X")
    assert normalize_records([reordered], "api", now_ms=NOW)[0].fingerprint == a.fingerprint
    m1, m2 = (normalize_records([one("media", id="M")], now_ms=NOW)[0] for _ in range(2))
    assert m1.fingerprint == m2.fingerprint


def test_ids_made_for_a_request_are_distinct_uuidv7_and_given_ids_are_kept() -> None:
    records = [one("weight") for _ in range(500)]
    records[7]["id"] = "mine"
    out = normalize_records(records, now_ms=NOW)
    made = [r.id for r in out if not r.id_given]
    assert out[7].id == "mine" and len(set(made)) == len(made) == 499
    for s in made:
        u = uuid.UUID(s)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and u.int >> 80 == NOW and str(u) == s


def test_new_id_is_rfc9562_uuidv7_with_the_time() -> None:
    ids = {new_id(NOW) for _ in range(2000)}
    assert len(ids) == 2000
    for s in list(ids)[:200]:
        u = uuid.UUID(s)
        assert u.version == 7 and u.variant == uuid.RFC_4122 and u.int >> 80 == NOW and str(u) == s


json_leaf = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats()
    | st.text(max_size=20)
    | st.binary(max_size=8)
    | st.sampled_from([GTIN, "KWD", "open", "receive"])
)
json_value = st.recursive(
    json_leaf,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8) | st.integers(0, 3), inner, max_size=5)
    ),
    max_leaves=20,
)
record = (
    st.fixed_dictionaries(
        {},
        optional={
            "kind": st.sampled_from(KINDS) | json_value,
            "data": json_value | st.sampled_from(list(VALID.values())),
            "id": json_leaf,
            "at": json_leaf | st.just(NOW),
            "src": json_leaf,
            "extra": json_leaf,
        },
    )
    | json_value
)


@pytest.mark.slow
@settings(
    derandomize=True,
    database=None,
    max_examples=400,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.lists(record, max_size=4))
def test_random_input_only_ever_raises_record_invalid(records: list[Any]) -> None:
    try:
        out = normalize_records(records, now_ms=NOW)
    except RecordInvalid as exc:
        assert exc.reason.startswith("records[") and exc.index is not None
    else:
        assert len(out) == len(records)


# ---------------------------------------------------------------- the sale fast path

_odd = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.sampled_from([10**400, 2**64, -(2**64), 2**64 - 1])
    | st.floats()
    | st.text(max_size=4)
    | st.sampled_from(["", "x" * 256, "x" * 257, "\U0001f600" * 256, "KWD\n", "kwd", "ＫＷＤ", "KW", "KWDX"])
    | st.lists(st.integers(), max_size=2)
    | st.dictionaries(st.text(max_size=2) | st.integers(0, 2), st.integers(), max_size=2)
)
_gtins = st.sampled_from([GTIN, "96385074", "6281007032286", "628100703228", "０" * 13, "x" * 13, " " + GTIN])
_valid_line = st.fixed_dictionaries(
    {"gtin": st.sampled_from([GTIN, "96385074"]), "unit_price": st.integers(0, 10**6), "amount": st.integers()},
    optional={"qty": st.integers(-5, 5) | st.floats(allow_nan=False, allow_infinity=False), "weight_g": st.integers()},
).filter(lambda line: "qty" in line or "weight_g" in line)
_valid_sale = st.fixed_dictionaries(
    {
        "receipt": st.text(min_size=1, max_size=8),
        "till": st.text(min_size=1, max_size=8),
        "lines": st.lists(_valid_line, min_size=1, max_size=3),
        "total": st.integers(),
        "currency": st.sampled_from(["KWD", "USD"]),
    },
    optional={"void": st.booleans(), "refund": st.booleans()},
)
_currencies = st.sampled_from(["KWD\n", "kwd", "ＫＷＤ", "KW", "KWDX", "K1D", "", "ÄÖÜ"])
# Unknown keys are allowed in a sale and its lines, but only text ones (pydantic: "Keys should be strings").
_SALE_KEYS: list[Any] = ["receipt", "till", "lines", "total", "currency", "void", "refund", "vendor", 1]
_LINE_KEYS: list[Any] = ["gtin", "unit_price", "amount", "qty", "weight_g", "note", 1]
_NEAR_MISSES = {"gtin": _gtins, "currency": _currencies}  # right type, wrong value


@st.composite
def _sales(draw: st.DrawFn) -> dict[str, Any]:
    """A valid sale with up to two faults: a key removed, or set to an odd value (wrong type,
    out of range, a bad GTIN), or an unknown key added; in the sale or in one of its lines."""
    sale: dict[str, Any] = draw(_valid_sale)
    for _ in range(draw(st.integers(0, 2))):
        lines: Any = sale.get("lines")
        in_line = type(lines) is list and lines and draw(st.booleans())
        if in_line and draw(st.integers(0, 5)) == 0:
            lines[draw(st.integers(0, len(lines) - 1))] = draw(_odd)
            continue
        target = draw(st.sampled_from(lines)) if in_line else sale
        if type(target) is not dict:
            continue
        key = draw(st.sampled_from(_LINE_KEYS if in_line else _SALE_KEYS))
        if key in target and draw(st.booleans()):
            del target[key]
        else:
            near = _NEAR_MISSES.get(key)
            target[key] = draw(near if near is not None and draw(st.booleans()) else _odd)
    return sale


@settings(derandomize=True, database=None, max_examples=1500, deadline=None)
@given(_sales())
def test_sale_fast_path_accepts_only_what_the_adapter_accepts(data: dict[str, Any]) -> None:
    """The fast path may send anything to pydantic, but must never pass what pydantic refuses:
    a refused record must read the same, and a bad one must not become durable."""
    if _sale_ok(data):
        ADAPTERS["sale"].validate_python(data)


@settings(derandomize=True, database=None, max_examples=300, deadline=None)
@given(_sales())
def test_json_sales_give_what_the_adapter_path_gives(data: dict[str, Any]) -> None:
    """End to end: a JsonRecords sale (fast path) and the same sale as a plain list (adapter
    only) give equal records or the same message."""
    try:
        data = orjson.loads(orjson.dumps(data))
    except (TypeError, orjson.JSONEncodeError):
        return  # not JSON (integers beyond 64 bits): the API can never hand it over
    recs = [{"kind": "sale", "data": data, "id": "S"}]

    def run(records: list[Any]) -> Any:
        try:
            return normalize_records(records, "api", now_ms=NOW)
        except RecordInvalid as exc:
            return exc.reason

    assert run(JsonRecords(copy.deepcopy(recs))) == run(copy.deepcopy(recs))


def test_sale_fast_path_takes_the_usual_sale() -> None:
    """Else the tests above pass for nothing: the spec's sale and the benchmark's take it."""
    assert _sale_ok(copy.deepcopy(VALID["sale"]))
    weighed = {"receipt": "R", "till": "t", "total": 1, "currency": "KWD", "void": False,
               "lines": [{"gtin": GTIN, "weight_g": 250, "unit_price": 4, "amount": 1},
                         {"gtin": GTIN, "qty": 0.5, "unit_price": 4, "amount": 2}]}
    assert _sale_ok(weighed)


_ABSENT_KEY = object()
_ODD_VALUES: list[Any] = [
    None, True, False, 0, -1, 2**64, 10**400, 1.5, -0.0, float("nan"), float("inf"), "", "x" * 257,
    "\U0001f600" * 256, "KWD\n", "kwd", "KwD", "ＫＷＤ", "K1D", "ÄÖÜ", "KWDX", "6281007032286", "０" * 13,
    " " + GTIN, [], [1], [{}], {}, {"a": 1}, {1: 2},
]


def test_sale_fast_path_refuses_every_single_fault_the_adapter_refuses() -> None:
    """Each key of the spec's sale and of its first line, in turn removed or set to each odd value
    (and unknown keys, text or not, added): the fast path passes none the adapter refuses."""
    faults = 0
    for in_line in (False, True):
        for key in _LINE_KEYS if in_line else _SALE_KEYS:
            for value in [_ABSENT_KEY, *_ODD_VALUES]:
                data = copy.deepcopy(VALID["sale"])
                target = data["lines"][0] if in_line else data
                if value is _ABSENT_KEY:
                    target.pop(key, None)
                else:
                    target[key] = value
                try:
                    ADAPTERS["sale"].validate_python(data)
                except ValidationError:
                    faults += 1
                    assert not _sale_ok(data), (key, value)
    assert faults > 250  # the loop did try faults


"""The fast determinism check must agree exactly with re-encoding (RFC 8949 4.2.1) on any payload."""

from __future__ import annotations

from typing import Any

import cbor2
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.cose import dumps_deterministic
from wire.deterministic import is_deterministic

keys = st.one_of(
    st.text(max_size=6),
    st.sampled_from(["v", "at", "id", "src", "data", "kind", "é", "zz"]),
    st.integers(-3, 3),
)
leaves = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**70), 2**70),
    st.binary(max_size=8),
    st.text(max_size=8),
    st.floats(allow_nan=False, width=64),
)
values = st.recursive(
    leaves,
    lambda inner: st.one_of(st.lists(inner, max_size=4), st.dictionaries(keys, inner, max_size=5)),
    max_leaves=20,
)


def encodings(value: Any) -> list[bytes]:
    """The deterministic encoding and some that are not: plain order, and keys reversed."""
    out = [dumps_deterministic(value), cbor2.dumps(value)]

    def rev(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: rev(v[k]) for k in reversed(list(v))}
        if isinstance(v, list):
            return [rev(x) for x in v]
        return v

    out.append(cbor2.dumps(rev(value)))
    return out


@settings(max_examples=150, deadline=None, derandomize=True)
@given(values)
def test_fast_check_agrees_with_reencoding(value: Any) -> None:
    for raw in encodings(value):
        decoded = cbor2.loads(raw)
        assert is_deterministic(decoded, raw) == (dumps_deterministic(decoded) == raw)


def test_known_non_deterministic_forms_are_caught() -> None:
    assert is_deterministic({"a": 1, "bb": 2}, bytes.fromhex("a2616101626262" + "02"))
    assert not is_deterministic({"bb": 2, "a": 1}, bytes.fromhex("a2626262026161" + "01"))  # longer key first
    assert not is_deterministic({"a": 1.5}, bytes.fromhex("a16161fb3ff8000000000000"))  # float64 where f16 fits
    assert is_deterministic({"a": 1.5}, bytes.fromhex("a16161f93e00"))
    assert not is_deterministic({"a": 1}, bytes.fromhex("a161611801"))  # 1 in a two-byte head
    assert not is_deterministic([1], bytes.fromhex("9f01ff"))  # indefinite length

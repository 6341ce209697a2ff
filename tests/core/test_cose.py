"""COSE_Sign1 verification refuses what it must; deterministic encoding is exact."""

from __future__ import annotations

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.cose import (
    CoseError,
    _dumps_cbor2,
    dumps_deterministic,
    kid_for,
    protected_header,
    sign1,
    verify1,
)


def keys(k: Ed25519PrivateKey) -> dict[bytes, object]:
    return {kid_for(k.public_key()): k.public_key()}


def test_round_trip_and_alg_minus_19_accepted() -> None:
    k = Ed25519PrivateKey.generate()
    msg = sign1(dumps_deterministic({"v": 1}), k)
    assert verify1(msg, keys(k)).payload == {"v": 1}  # type: ignore[arg-type]
    # A receiver may accept -19 (RFC 9864's name for the same algorithm): so do we.
    prot = dumps_deterministic({1: -19, 4: kid_for(k.public_key())})
    sig = k.sign(cbor2.dumps(["Signature1", prot, b"", b"\xa0"], canonical=True))
    m19 = cbor2.dumps(cbor2.CBORTag(18, [prot, {}, b"\xa0", sig]))
    assert verify1(m19, keys(k)).alg == -19  # type: ignore[arg-type]


@pytest.mark.parametrize("mutate,reason", [
    (lambda arr: [arr[0], arr[1], arr[2] + b"\x00", arr[3]], "bad signature"),
    (lambda arr: [dumps_deterministic({1: -7, 4: cbor2.loads(arr[0])[4]}), arr[1], arr[2], arr[3]],
     "unsupported alg"),
    (lambda arr: [dumps_deterministic({1: -8}), {4: cbor2.loads(arr[0])[4]}, arr[2], arr[3]], "no kid"),
    (lambda arr: arr[:3], "array of 4"),
])
def test_tampered_messages_are_refused(mutate: object, reason: str) -> None:
    k = Ed25519PrivateKey.generate()
    arr = list(cbor2.loads(sign1(b"\xa0", k)).value)
    bad = cbor2.dumps(cbor2.CBORTag(18, mutate(arr)))  # type: ignore[operator]
    with pytest.raises(CoseError, match=reason):
        verify1(bad, keys(k))  # type: ignore[arg-type]


def test_untagged_and_unknown_key_refused() -> None:
    k = Ed25519PrivateKey.generate()
    msg = sign1(b"\xa0", k)
    with pytest.raises(CoseError, match="tag 18"):
        verify1(cbor2.dumps(list(cbor2.loads(msg).value)), keys(k))  # type: ignore[arg-type]
    with pytest.raises(CoseError, match="unknown kid"):
        verify1(msg, keys(Ed25519PrivateKey.generate()))  # type: ignore[arg-type]


def test_protected_header_is_deterministic_map_of_alg_then_kid() -> None:
    kid = bytes(range(16))
    assert protected_header(kid) == b"\xa2\x01\x27\x04\x50" + kid


json_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.text(max_size=12),
              st.floats(allow_nan=False), st.binary(max_size=8)),
    lambda inner: st.one_of(st.lists(inner, max_size=5), st.tuples(inner, inner),
                            st.dictionaries(st.text(max_size=12), inner, max_size=6),
                            st.dictionaries(st.integers(-5, 5), inner, max_size=3)),
    max_leaves=30)


@settings(max_examples=500, deadline=None)
@given(json_like)
def test_fast_deterministic_encoding_equals_cbor2_canonical(value: object) -> None:
    """Both fast paths (libipld, and cached key order + cbor2's plain encoder) must give
    canonical mode's bytes, byte for byte, or the receiver refuses the batch and the chain
    stalls. The cbor2 path is checked on its own too: libipld takes most values first."""
    canonical = cbor2.dumps(value, canonical=True)
    assert dumps_deterministic(value) == canonical
    assert _dumps_cbor2(value) == canonical


# Byte strings libipld would write as tag 42 (a CIDv1 dag-cbor/sha2-256 prefix, a CIDv0), and
# integers whose raw bytes hold the marker bytes 0xfb and 0xd8 0x2a without any float or tag.
cid_like = st.binary(min_size=32, max_size=32).flatmap(
    lambda digest: st.sampled_from([b"\x01\x71\x12\x20" + digest, b"\x12\x20" + digest]))
marker_ints = st.sampled_from([0xFB, 0xD82A, 0xFBFB_FBFB, -0xD82A_0000, 0x1_A0FB_D82A_00, 2**64 - 1, -(2**64)])
record_like = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), marker_ints,
              st.text(max_size=12), st.binary(max_size=40), cid_like,
              st.sampled_from([0.0, -0.0, 1.5, 3.5, 1e300, 5e-324])),
    lambda inner: st.one_of(st.lists(inner, max_size=5),
                            st.dictionaries(st.text(max_size=12) | st.sampled_from(["qty", "gtin", "é", "zz", "a"]),
                                            inner, max_size=6)),
    max_leaves=30)


@settings(max_examples=500, deadline=None)
@given(record_like)
def test_libipld_path_equals_cbor2_canonical_on_record_shaped_values(value: object) -> None:
    """Values libipld accepts (text keys, 64-bit integers, lists): its DAG-CBOR output is used
    unless a marker byte says a float or a tag 42 may be in it; either way the bytes must be
    canonical mode's."""
    assert dumps_deterministic(value) == cbor2.dumps(value, canonical=True)


@pytest.mark.parametrize("value", [
    {"qty": 3.5}, [-0.0], 1e300,  # floats: DAG-CBOR writes 64 bits, canonical the shortest
    {"sha256": b"\x01\x71\x12\x20" + bytes(32)},  # a CID to libipld: tag 42 there
    b"\x12\x20" + bytes(range(32)),
    {"at": 0x1_A0FB_D82A_00, "s": "\u0600*"},  # marker bytes inside an integer; Arabic text (0xd8 lead)
    [0xFB, [{"q": 1.5}]], {"at": 0xD82A, "x": {"y": [b"\x12\x20" + bytes(32)]}},  # marker int and the real thing
    {"at": 0xFBFB, "b": b"x"}, [0xD82A, True, None, "s", {"k": [-1]}],
    {1: "x"}, (1, 2), 2**64, -(2**64) - 1,  # refused by libipld
])
def test_values_libipld_gets_wrong_or_refuses_come_out_canonical(value: object) -> None:
    assert dumps_deterministic(value) == cbor2.dumps(value, canonical=True)


def test_fast_path_orders_unicode_and_length_first_keys() -> None:
    v = {"é": 1, "zz": 2, "a": 3, "aa": [{"qty": 1, "gtin": "x", "amount": 2}], "b": True, "ü": None}
    assert dumps_deterministic(v) == cbor2.dumps(v, canonical=True)

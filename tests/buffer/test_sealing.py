"""Batch payloads spliced from stored record bytes are deterministic CBOR and verify per spec."""

from __future__ import annotations

import hashlib

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from buffer.sealing import ZERO_HASH, array_header, batch_payload, seal
from wire.cose import Signer, dumps_deterministic, verify1

DEV = "coop-a/branch-1/agent-1"
text = st.text(max_size=20)
scalars = st.one_of(st.integers(-(2**63), 2**64 - 1), text, st.booleans(), st.none(), st.binary(max_size=16))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=4),
                                                      st.dictionaries(text, inner, max_size=4)), max_leaves=12)


def body(i: int, data: object) -> bytes:
    return dumps_deterministic({"id": f"r{i}", "kind": "scan", "at": 1764400000000 + i, "src": "scanner:dock",
                                "data": data})


@pytest.mark.parametrize("n", [1, 23, 24, 255, 256, 65535, 65536, 70000])
def test_array_header_is_the_shortest_form_at_every_boundary(n: int) -> None:
    assert array_header(n) == cbor2.dumps([None] * n, canonical=True)[: len(array_header(n))]


@pytest.mark.parametrize("n", [1, 23, 24, 255, 256, 70000])
def test_spliced_payload_equals_its_deterministic_reencoding(n: int) -> None:
    bodies = [body(i, {"raw": "0950600013435", "b": 1.5}) for i in range(n)]
    p = batch_payload(DEV, 7, ZERO_HASH, 123, bodies)
    decoded = cbor2.loads(p)
    assert dumps_deterministic(decoded) == p
    assert list(decoded) == ["v", "dev", "seq", "prev", "sealed", "records"]
    assert len(decoded["records"]) == n


@settings(max_examples=200, deadline=None)
@given(st.lists(values, min_size=1, max_size=5))
def test_any_record_data_splices_deterministically(datas: list[object]) -> None:
    bodies = [body(i, d) for i, d in enumerate(datas)]
    p = batch_payload(DEV, 1, ZERO_HASH, 1, bodies)
    assert dumps_deterministic(cbor2.loads(p)) == p


def test_sealed_batch_is_cose_sign1_as_the_spec_says() -> None:
    key = Ed25519PrivateKey.generate()
    signer = Signer(key)
    cose, digest = seal(signer, DEV, 1, ZERO_HASH, 1764400000000, [body(0, {"raw": "x"})])
    assert digest == hashlib.sha256(cose).digest()
    tag = cbor2.loads(cose)
    assert tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    assert cbor2.loads(protected) == {1: -8, 4: signer.kid} and dict(unprotected) == {}
    assert protected == bytes.fromhex("a2012704") + b"\x50" + signer.kid  # {1: -8, 4: h'kid'}, deterministic
    raw = key.public_key().public_bytes_raw()
    assert signer.kid == hashlib.sha256(raw).digest()[:16]
    assert len(signature) == 64
    v = verify1(cose, {signer.kid: key.public_key()})
    assert v.payload["seq"] == 1 and v.payload["prev"] == ZERO_HASH and v.payload["dev"] == DEV

"""Property tests of the agent's CentralVerifier: every central message type (seq ack, media
ack, command), hostile and broken in every way we could think of.

The one property: the verifier returns a message equal to what the centre signed, or raises
Refused (with a code and a bounded reason); never another exception, never slowly. Seeded
(derandomize) so CI sees the same examples every run.

Bugs these found, pinned here: a protected header whose alg was a CBOR bignum (tag 2 over
1,800 bytes) made verify1 raise ValueError from repr() (Python's 4,300-digit int/str limit)
before the signature was checked, so any publisher on P/ack could raise out of the uplink's
on_message; and bytes after a valid COSE_Sign1 were ignored (cbor2.loads reads one item).
"""

from __future__ import annotations

import struct
import time
from collections.abc import Callable
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from wire.cose import ALG_ED25519, COSE_SIGN1_TAG, SHOW_MAX, dumps_deterministic, kid_for, sign1
from wire.messages import CentralVerifier, MediaAck, Refused, SeqAck

DEV = "coop-a/branch-1/agent-1"
CENTRE = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
ROGUE = Ed25519PrivateKey.from_private_bytes(bytes(range(1, 33)))
NOW = 1_800_000_000_000
SKEW = 300_000
MAX_BYTES = 4096
VERIFIER = CentralVerifier(CENTRE.public_key(), DEV, max_bytes=MAX_BYTES)
SLOW_S = 1.0  # one verification of a message of at most a few KB; a hang fails here

FUZZ = settings(max_examples=80, deadline=None, derandomize=True, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

KINDS: dict[str, Callable[[bytes], Any]] = {
    "ack": VERIFIER.ack,
    "command": lambda m: VERIFIER.command(m, NOW, SKEW),
}


def payloads() -> dict[str, dict[str, Any]]:
    """One valid payload of each central message type."""
    return {
        "seq_ack": {"v": 1, "dev": DEV, "seq": 7},
        "media_ack": {"v": 1, "dev": DEV, "media": "0190a1b2c3d4e5f60718293a4b5c6d7e", "missing": [0, 3]},
        "command": {"v": 1, "dev": DEV, "id": "c-1", "cmd": "resend", "args": {"from_seq": 2}, "at": NOW},
    }


def kind_of(name: str) -> str:
    return "command" if name == "command" else "ack"


_DEFAULT: Any = object()


def cose(payload: bytes, key: Ed25519PrivateKey = CENTRE, protected: Any = _DEFAULT, unprotected: Any = _DEFAULT,
         tag: int = COSE_SIGN1_TAG) -> bytes:
    """A COSE_Sign1 over raw payload bytes; protected may be any value (encoded here)."""
    if protected is _DEFAULT:
        prot = dumps_deterministic({1: -8, 4: kid_for(key.public_key())})
    else:
        prot = cbor2.dumps(protected)
    sig = key.sign(cbor2.dumps(["Signature1", prot, b"", payload], canonical=True))
    return cbor2.dumps(cbor2.CBORTag(tag, [prot, {} if unprotected is _DEFAULT else unprotected, payload, sig]))


def expected(payload: Any, name: str) -> Any:
    """What the verifier should return for a centre-signed, deterministic payload, or None if
    the payload breaks a rule (then Refused is the only right answer)."""
    if not isinstance(payload, dict) or type(payload.get("v")) is not int or payload.get("v") != 1 \
            or payload.get("dev") != DEV:
        return None
    if name != "command":
        if "seq" in payload:
            s = payload["seq"]
            return SeqAck(s) if type(s) is int and s >= 0 else None
        media, missing = payload.get("media"), payload.get("missing")
        if isinstance(media, str) and isinstance(missing, list) and all(type(i) is int and i >= 0 for i in missing):
            return MediaAck(media, tuple(missing))
        return None
    cid, cmd, args, at = payload.get("id"), payload.get("cmd"), payload.get("args", {}), payload.get("at")
    ok = (isinstance(cid, str) and 1 <= len(cid) <= 128 and isinstance(cmd, str) and 1 <= len(cmd) <= 64
          and isinstance(args, dict) and type(at) is int and abs(NOW - at) <= SKEW)
    return (cid, cmd, args, at) if ok else None


def check(kind: str, message: bytes) -> Any:
    """Run the verifier: a result, or Refused with a code and a bounded reason; nothing else."""
    t0 = time.monotonic()
    try:
        got = KINDS[kind](message)
    except Refused as exc:
        got = exc
        assert exc.code and " " not in exc.code
        assert len(str(exc)) <= 4 * SHOW_MAX + 200, str(exc)[:300]
    assert time.monotonic() - t0 < SLOW_S
    if kind == "command" and not isinstance(got, Refused):
        return (got.id, got.cmd, got.args, got.at)
    return got


# -- CBOR values, hostile ones included -------------------------------------------------------

scalars = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**64), 2**64 - 1), st.integers(), st.floats(),
    st.text(max_size=20), st.binary(max_size=20),
    st.sampled_from([2**64, -(2**64) - 1, 10**1400, 1.0, -8.0, True]),  # bignums, 1.0 == True == 1
    st.builds(cbor2.CBORTag, st.sampled_from([0, 1, 2, 3, 24, 28, 29, 32, 258, 55799, 2**32]),
              st.one_of(st.integers(0, 5), st.text(max_size=5), st.binary(max_size=5))),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(st.lists(inner, max_size=4),
                            st.dictionaries(st.one_of(st.text(max_size=6), st.integers(-3, 3)), inner, max_size=4)),
    max_leaves=12,
)


def encode_safely(value: Any) -> bytes | None:
    try:
        return cbor2.dumps(value)
    except Exception:
        return None


# -- non-deterministic encodings, written by hand -----------------------------------------------

def _head(major: int, n: int, width: int) -> bytes:
    """A CBOR head; width 0 is the shortest form, 1/2/4/8 force that many argument bytes."""
    if width == 0:
        width = 0 if n < 24 else 1 if n < 2**8 else 2 if n < 2**16 else 4 if n < 2**32 else 8
    if width == 0:
        return bytes([major << 5 | n])
    ai = {1: 24, 2: 25, 4: 26, 8: 27}[width]
    return bytes([major << 5 | ai]) + n.to_bytes(width, "big")


def encode_variant(value: Any, draw: Callable[[st.SearchStrategy[Any]], Any]) -> bytes:
    """Encode ints, text, lists and maps, each node drawing its own form: a wider head than
    needed, an indefinite length, a duplicated map entry, keys out of order."""
    widths = st.sampled_from([0, 0, 0, 1, 2, 4, 8])
    if type(value) is int and -(2**64) <= value < 2**64:
        major, n = (0, value) if value >= 0 else (1, -1 - value)
        w = draw(widths)
        return _head(major, n, max(w, 0) if n < 2**(8 * max(w, 1)) else 0)
    if isinstance(value, str):
        raw = value.encode()
        if draw(st.booleans()) and raw:  # indefinite-length text in two chunks
            return b"\x7f" + _head(3, 1, 0) + raw[:1] + _head(3, len(raw) - 1, 0) + raw[1:] + b"\xff"
        return _head(3, len(raw), draw(widths)) + raw
    if isinstance(value, list):
        items = b"".join(encode_variant(v, draw) for v in value)
        return (b"\x9f" + items + b"\xff") if draw(st.booleans()) else _head(4, len(value), draw(widths)) + items
    if isinstance(value, dict):
        pairs = [(encode_variant(k, draw), encode_variant(v, draw)) for k, v in value.items()]
        if pairs and draw(st.booleans()):
            pairs.reverse()
        if pairs and draw(st.booleans()):
            pairs.append((pairs[0][0], encode_variant(draw(values), draw)))  # duplicate key
        body = b"".join(k + v for k, v in pairs)
        return (b"\xbf" + body + b"\xff") if draw(st.booleans()) else _head(5, len(pairs), draw(widths)) + body
    return cbor2.dumps(value)


# -- the properties ---------------------------------------------------------------------------

@pytest.mark.parametrize("kind", KINDS)
@FUZZ
@given(message=st.binary(max_size=600))
def test_random_bytes_are_refused(kind: str, message: bytes) -> None:
    assert isinstance(check(kind, message), Refused)


@pytest.mark.parametrize("name", list(payloads()))
@FUZZ
@given(data=st.data())
def test_one_flipped_byte_anywhere(name: str, data: st.DataObject) -> None:
    payload = payloads()[name]
    message = cose(dumps_deterministic(payload))
    assert check(kind_of(name), message) == expected(payload, name)  # the unflipped one passes
    i = data.draw(st.integers(0, len(message) - 1), label="index")
    flip = data.draw(st.integers(1, 255), label="xor")
    bad = message[:i] + bytes([message[i] ^ flip]) + message[i + 1:]
    got = check(kind_of(name), bad)
    assert isinstance(got, Refused) or got == expected(payload, name)


@pytest.mark.parametrize("name", list(payloads()))
@FUZZ
@given(data=st.data())
def test_payload_mutated_at_every_level(name: str, data: st.DataObject) -> None:
    """Signed by the centre, so only the payload's own rules can refuse it: keys dropped,
    added, values replaced by anything (huge ints, tags, deep nesting) at the top or one
    level down (args, missing)."""
    payload: dict[str, Any] = dict(payloads()[name])
    for _ in range(data.draw(st.integers(1, 3), label="mutations")):
        target = payload
        nested = [k for k, v in payload.items() if isinstance(v, (dict, list)) and v]
        if nested and data.draw(st.booleans(), label="one level down"):
            key = data.draw(st.sampled_from(nested))
            inner = payload[key]
            if isinstance(inner, list):
                inner = list(inner)
                inner[data.draw(st.integers(0, len(inner) - 1))] = data.draw(values)
                payload[key] = inner
                continue
            target = payload[key] = dict(inner)
        op = data.draw(st.sampled_from(["drop", "add", "replace"]), label="op")
        if op == "drop" and target:
            del target[data.draw(st.sampled_from(sorted(target, key=repr)))]
        elif op == "add" or not target:
            target[data.draw(st.one_of(st.text(max_size=6), st.integers(-3, 3)))] = data.draw(values)
        else:
            target[data.draw(st.sampled_from(sorted(target, key=repr)))] = data.draw(values)
    raw = encode_safely(payload)
    if raw is None:
        return
    got = check(kind_of(name), cose(raw))
    try:
        deterministic = dumps_deterministic(payload) == raw
    except Exception:
        deterministic = False
    if not deterministic:
        assert isinstance(got, Refused), (payload, got)
    elif isinstance(got, Refused):
        try:
            decoded = cbor2.loads(raw)
        except Exception:  # a tag whose content cbor2 refuses (tag 0 over an int): refused is right
            return
        assert expected(decoded, name) is None, (payload, got)
    else:
        assert got == expected(cbor2.loads(raw), name)


@pytest.mark.parametrize("name", list(payloads()))
@FUZZ
@given(data=st.data())
def test_non_deterministic_encodings_are_refused(name: str, data: st.DataObject) -> None:
    """Indefinite lengths, wide heads, keys out of order, duplicate keys: the centre signed
    them, but the spec says deterministic, and a duplicate key reads differently elsewhere."""
    payload = payloads()[name]
    raw = encode_variant(payload, data.draw)
    got = check(kind_of(name), cose(raw))
    if raw == dumps_deterministic(payload):
        assert got == expected(payload, name)
    else:
        assert isinstance(got, Refused) and got.code == "payload", got


@pytest.mark.parametrize("name", list(payloads()))
@FUZZ
@given(protected=values, unprotected=values, tag=st.sampled_from([COSE_SIGN1_TAG, 17, 98, 0, 55799]))
def test_headers_and_envelope_mutated(name: str, protected: Any, unprotected: Any, tag: int) -> None:
    """Any protected header (wrong alg, missing or wrong kid, not a map), any unprotected
    header, other tags: validly signed over whatever protected bytes result."""
    payload = payloads()[name]
    if encode_safely(protected) is None or encode_safely(unprotected) is None:
        return
    got = check(kind_of(name), cose(dumps_deterministic(payload), protected=protected,
                                    unprotected=unprotected, tag=tag))
    ok = (tag == COSE_SIGN1_TAG and isinstance(protected, dict) and isinstance(unprotected, dict)
          and type(protected.get(1)) is int and protected.get(1) in (-8, ALG_ED25519)
          and protected.get(4) == kid_for(CENTRE.public_key()))
    assert got == expected(payload, name) if ok else isinstance(got, Refused)


@pytest.mark.parametrize("name", list(payloads()))
def test_alg_kid_and_key_refusals_name_their_code(name: str) -> None:
    raw = dumps_deterministic(payloads()[name])
    kid = kid_for(CENTRE.public_key())
    cases = {
        "alg": [cose(raw, protected={1: -7, 4: kid}), cose(raw, protected={1: "EdDSA", 4: kid}),
                cose(raw, protected={1: -8.0, 4: kid}), cose(raw, protected={4: kid}),
                cose(raw, protected={1: cbor2.CBORTag(2, b"\xff" * 2000), 4: kid})],  # the ValueError bug
        "kid": [cose(raw, protected={1: -8}), cose(raw, protected={1: -8, 4: b"\x00" * 16}),
                cose(raw, protected={1: -8, 4: "text kid"}), cose(raw, key=ROGUE),
                cose(raw, protected={1: -8, 4: b"k" * 3000})],
        "signature": [cose(raw, key=ROGUE, protected={1: -8, 4: kid})],
        "oversize": [cose(dumps_deterministic({**payloads()[name], "pad": "x" * MAX_BYTES}))],
        "malformed": [cose(raw) + b"\x00", b"", b"\xd2", b"\xd2\x84", sign1(raw, CENTRE)[:-1],
                      b"\x9f" * 3000, b"\x81" * 3000 + b"\x00"],
    }
    for code, messages in cases.items():
        for m in messages:
            got = check(kind_of(name), m)
            assert isinstance(got, Refused) and got.code == code, (code, m[:40], got)


def test_deep_nesting_and_huge_lengths_in_a_signed_payload_are_refused() -> None:
    deep = b"\x81" * 2000 + b"\x01"
    huge_len = b"\x9b" + struct.pack(">Q", 2**40)
    shared = bytes.fromhex("d81ca1617681d81d00")  # {"v": [<itself>]} through value sharing (tag 28/29)
    for raw in (deep, huge_len, shared, b"\xa1\x61v" + b"\xc2\x59\x07\xd0" + b"\xff" * 2000):
        for kind in KINDS:
            got = check(kind, cose(raw))
            assert isinstance(got, Refused) and got.code in ("payload", "fields", "version"), got

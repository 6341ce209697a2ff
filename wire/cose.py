"""COSE_Sign1 (RFC 9052) with EdDSA over Ed25519, as uplink-v1 fixes it.

Written on cbor2 + cryptography rather than pycose because pycose 1.1 does not decode
with cbor2 6.x, and the subset the spec needs (one signer, empty unprotected header,
empty external AAD) is small enough to read in one sitting against RFC 9052 section 4.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from libipld import encode_dag_cbor

COSE_SIGN1_TAG = 18
HDR_ALG = 1
HDR_KID = 4
ALG_EDDSA = -8
ALG_ED25519 = -19  # RFC 9864 name for the same algorithm; accepted on verify, never sent


class CoseError(ValueError):
    """A message that is not a valid, correctly signed COSE_Sign1 for the expected key.

    `code` names the kind of fault in a word (malformed, alg, kid, signature, payload), so a
    caller can count and rate-limit refusals by kind while str() varies with the input.
    """

    def __init__(self, message: str, code: str = "malformed"):
        super().__init__(message)
        self.code = code


SHOW_MAX = 80  # characters of a refused value shown in a reason


def show(value: Any) -> str:
    """repr() of a value from a message, bounded: reasons end up in records and logs, and the
    value is the sender's choice. repr() of an int over 4,300 digits raises ValueError
    (Python 3.11's int/str limit), and a CBOR bignum (tag 2) makes one from 1.8 KB."""
    if type(value) is int and value.bit_length() > 64:
        return f"<integer of {value.bit_length()} bits>"
    try:
        text = repr(value)
    except Exception:  # a huge int deep inside a container
        return f"<{type(value).__name__}>"
    return clip(text)


def clip(text: str) -> str:
    """text, cut to SHOW_MAX characters (it came from the sender, or from its input)."""
    return text if len(text) <= SHOW_MAX else text[:SHOW_MAX] + f"... ({len(text)} characters)"


def loads_exact(data: bytes) -> Any:
    """Decode exactly one CBOR data item; bytes left after it make the input malformed.

    cbor2.loads stops after the first item and ignores the rest, so `valid || garbage`
    would pass for `valid` (RFC 8949 section 5.1: a CBOR message is one well-formed item).
    """
    fp = io.BytesIO(data)
    value = cbor2.CBORDecoder(fp).decode()
    if fp.tell() != len(data):
        raise ValueError(f"{len(data) - fp.tell()} bytes after the end of the data item")
    return value


def kid_for(public_key: Ed25519PublicKey) -> bytes:
    """The spec's kid: the first 16 bytes of SHA-256 over the raw 32-byte public key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:16]


class _NeedsCanonical(Exception):
    """A value the fast path does not prove (float, non-text key, bignum, other types)."""


_INT_LIMIT = 2**64  # beyond: bignum tags; leave those to cbor2's canonical mode
_SCALARS = frozenset((str, bool, bytes, type(None)))
_KEY_ORDER: dict[tuple[Any, ...], tuple[str, ...]] = {}
_KEY_ORDER_MAX = 4096


def _key_order(keys: tuple[Any, ...]) -> tuple[str, ...]:
    """Deterministic order of a map's text keys: bytewise over their encodings, which for text
    is shorter UTF-8 first, then bytewise. Records of one kind repeat the same key tuples, so
    each is sorted once (bounded cache)."""
    order = _KEY_ORDER.get(keys)
    if order is None:
        if any(type(k) is not str for k in keys):
            raise _NeedsCanonical
        order = tuple(sorted(keys, key=lambda k: (len(k.encode()), k.encode())))
        if len(_KEY_ORDER) >= _KEY_ORDER_MAX:
            _KEY_ORDER.clear()
        _KEY_ORDER[keys] = order
    return order


def _sorted_map(obj: dict[Any, Any]) -> dict[str, Any]:
    out = {}
    for k in _key_order(tuple(obj)):
        out[k] = _checked(obj[k])
    return out


def _sorted_list(obj: list[Any] | tuple[Any, ...]) -> list[Any]:
    return [_checked(v) for v in obj]


def _checked(v: Any) -> Any:
    tv = type(v)
    if tv in _SCALARS:
        return v
    if tv is int:
        if -_INT_LIMIT < v < _INT_LIMIT:
            return v
        raise _NeedsCanonical
    if tv is dict:
        return _sorted_map(v)
    if tv is list or tv is tuple:
        return _sorted_list(v)
    raise _NeedsCanonical


# In libipld's output these bytes mark what may differ from the deterministic encoding: 0xfb
# heads a float64 (DAG-CBOR writes every float in 64 bits; RFC 8949 wants the shortest exact
# width) and 0xd8 0x2a heads tag 42, which libipld writes for byte strings that parse as an
# IPLD CID. UTF-8 text never contains either, so only integers' and byte strings' raw bytes
# can match by chance (two records in a hundred here); _no_float_or_bytes clears those.
# Ints, not bytes, on the left of `in`: that is a memchr (30 ns), where a bytes needle costs
# 230 ns (CPython first tries it as an int and clears the TypeError).
_FLOAT64 = 0xFB
_TAG = 0xD8
_TAG42 = b"\xd8\x2a"


def dumps_deterministic(obj: Any) -> bytes:
    """RFC 8949 section 4.2.1 core deterministic encoding.

    cbor2's canonical mode does it for any value, but it was 42% of the ingest path's CPU
    (it encodes every map key apart to sort it). Three paths, fastest first:

    1. libipld's DAG-CBOR encoder (Rust, 1.2 us for a sale record against 9.5 us for path 2).
       DAG-CBOR is a profile of the same rules: shortest heads, definite lengths, text-keyed
       maps sorted by key length then bytes (which is bytewise over the encoded keys). It
       differs only on floats (always 64 bits) and byte strings shaped like CIDs (tag 42):
       output with either marker byte goes on to path 2, unless the value holds neither
       floats nor bytes. What libipld refuses (non-text keys, integers beyond 64 bits,
       tuples, NaN, other types) goes on too.
    2. Rebuild each map in its cached deterministic key order and use cbor2's plain encoder
       (shortest heads, definite lengths, insertion order); about half canonical mode's cost.
    3. Floats (shortest-form rule), non-text keys, bignums and other types: canonical mode.

    tests/core/test_cose.py holds all three byte-equal to canonical mode.
    """
    try:
        out: bytes = encode_dag_cbor(obj)
    except Exception:  # anything libipld refuses is for the exact paths to judge, and to raise
        return _dumps_cbor2(obj)
    if _FLOAT64 not in out and (_TAG not in out or _TAG42 not in out) or _no_float_or_bytes(obj):
        return out
    return _dumps_cbor2(obj)


# Exact types whose DAG-CBOR encoding is the deterministic one, without and with children.
_LEAVES = frozenset((str, int, bool, type(None)))
_TREE = _LEAVES | {dict, list}


def _no_float_or_bytes(obj: Any) -> bool:
    """Whether obj holds neither a float nor a byte string (nor any other type): then a marker
    byte in libipld's output came from an integer's or a length's raw bytes, and the output is
    exact. 1.5 us for a sale record against 9 us for path 2; the type tests run in C."""
    values = obj.values() if type(obj) is dict else obj if type(obj) is list else (obj,)
    if _LEAVES.issuperset(map(type, values)):
        return True
    if not _TREE.issuperset(map(type, values)):
        return False
    return all(_no_float_or_bytes(v) for v in values if type(v) is dict or type(v) is list)


def _dumps_cbor2(obj: Any) -> bytes:
    """Paths 2 and 3 of dumps_deterministic (no libipld): exact for every value cbor2 encodes."""
    try:
        return cbor2.dumps(_checked(obj))
    except _NeedsCanonical:
        return cbor2.dumps(obj, canonical=True)


def _sig_structure(protected: bytes, payload: bytes) -> bytes:
    # RFC 9052 section 4.4: ["Signature1", body_protected, external_aad, payload]
    return cbor2.dumps(["Signature1", protected, b"", payload], canonical=True)


def protected_header(kid: bytes) -> bytes:
    return dumps_deterministic({HDR_ALG: ALG_EDDSA, HDR_KID: kid})


def sign1(payload: bytes, key: Ed25519PrivateKey, kid: bytes | None = None,
          protected: bytes | None = None) -> bytes:
    """Sign already-encoded payload bytes; returns the tagged COSE_Sign1 bytes.

    `protected` lets a hot path reuse the encoded header; it must be protected_header(kid).
    """
    if protected is None:
        protected = protected_header(kid if kid is not None else kid_for(key.public_key()))
    signature = key.sign(_sig_structure(protected, payload))
    # Array items are byte strings and an empty map: deterministic by construction.
    return cbor2.dumps(cbor2.CBORTag(COSE_SIGN1_TAG, [protected, {}, payload, signature]), canonical=True)


class Signer:
    """One private key with its kid and encoded protected header, made once: the device's key
    (batches, status) and the centre's (acks, commands) sign through the same code."""

    def __init__(self, key: Ed25519PrivateKey):
        self.key = key
        self.kid = kid_for(key.public_key())
        self.protected = protected_header(self.kid)

    def sign(self, payload: bytes) -> bytes:
        """Sign already-encoded payload bytes (the buffer splices its batches by hand)."""
        return sign1(payload, self.key, protected=self.protected)

    def sign_map(self, payload: Mapping[str, Any]) -> bytes:
        """Encode a payload map deterministically, then sign it."""
        return self.sign(dumps_deterministic(dict(payload)))


@dataclass(frozen=True)
class Verified:
    kid: bytes
    alg: int
    payload_bytes: bytes
    payload: Any


def decode_unverified(message: bytes) -> tuple[bytes, Mapping[int, Any], bytes, bytes]:
    """Split a COSE_Sign1 into (protected bytes, protected map, payload, signature)."""
    try:
        obj = loads_exact(message)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise CoseError(f"not CBOR: {clip(str(exc))}") from exc
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise CoseError("not a tagged COSE_Sign1 (CBOR tag 18)")
    arr = obj.value
    if not isinstance(arr, (list, tuple)) or len(arr) != 4:  # cbor2 6 decodes tag content as a tuple
        raise CoseError("COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = arr
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise CoseError("protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):  # dict, or cbor2 6's frozendict
        raise CoseError("unprotected header must be a map")
    try:
        prot_map = loads_exact(protected) if protected else {}
    except Exception as exc:
        raise CoseError(f"protected header is not CBOR: {clip(str(exc))}") from exc
    if not isinstance(prot_map, Mapping):
        raise CoseError("protected header must be a map")
    return protected, prot_map, payload, signature


def verify1(message: bytes, keys: dict[bytes, Ed25519PublicKey]) -> Verified:
    """Verify against the key whose kid the protected header names; decode the payload.

    `keys` maps kid -> public key. The kid and alg are read from the protected header
    only (an unprotected kid is not covered by the signature, so it is never trusted).
    """
    protected, prot_map, payload, signature = decode_unverified(message)
    alg = prot_map.get(HDR_ALG)
    if type(alg) is not int or alg not in (ALG_EDDSA, ALG_ED25519):  # -8.0 == -8 in Python
        raise CoseError(f"unsupported alg {show(alg)}; expected EdDSA (-8) or Ed25519 (-19)", "alg")
    kid = prot_map.get(HDR_KID)
    if not isinstance(kid, bytes):
        raise CoseError("protected header has no kid", "kid")
    key = keys.get(kid)
    if key is None:
        raise CoseError(f"unknown kid {clip(kid.hex())}", "kid")
    try:
        key.verify(signature, _sig_structure(protected, payload))
    except InvalidSignature as exc:
        raise CoseError("bad signature", "signature") from exc
    try:
        decoded = loads_exact(payload)
    except Exception as exc:
        raise CoseError(f"payload is not CBOR: {clip(str(exc))}", "payload") from exc
    return Verified(kid=kid, alg=alg, payload_bytes=payload, payload=decoded)

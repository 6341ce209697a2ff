"""Batch payloads built from records' stored CBOR bytes, then signed as COSE_Sign1.

Each record body is stored at ingest in deterministic CBOR, so sealing splices the bodies
into the batch map instead of decoding and re-encoding 500 records a batch: the batch is
still deterministic (RFC 8949 4.2.1) because its keys are emitted in the fixed order that
the rule gives for them and every nested item is already deterministic.
"""

from __future__ import annotations

import hashlib
import struct

from wire.batches import ZERO_HASH as ZERO_HASH
from wire.cose import Signer, dumps_deterministic

# Deterministic key order = bytewise order of the encoded keys: shorter text first (the
# length is in the initial byte), then lexicographic: v, dev, seq, prev, sealed, records.
_K_V = dumps_deterministic("v")
_K_DEV = dumps_deterministic("dev")
_K_SEQ = dumps_deterministic("seq")
_K_PREV = dumps_deterministic("prev")
_K_SEALED = dumps_deterministic("sealed")
_K_RECORDS = dumps_deterministic("records")
assert sorted([_K_V, _K_DEV, _K_SEQ, _K_PREV, _K_SEALED, _K_RECORDS]) == [
    _K_V, _K_DEV, _K_SEQ, _K_PREV, _K_SEALED, _K_RECORDS]

# COSE_Sign1 overhead around the payload: tag, array header, protected (~27 B), empty map,
# payload bstr header (<= 5 B), signature bstr (66 B). 128 B leaves room to spare.
COSE_OVERHEAD = 128


def array_header(n: int) -> bytes:
    """CBOR major type 4 header in its shortest form (deterministic encoding requires it)."""
    if n < 24:
        return bytes([0x80 | n])
    if n < 0x100:
        return bytes([0x98, n])
    if n < 0x10000:
        return b"\x99" + struct.pack(">H", n)
    return b"\x9a" + struct.pack(">I", n)


def batch_header_size(dev: str) -> int:
    """Upper bound of the payload bytes that are not record bodies."""
    return len(_K_V) + 1 + len(_K_DEV) + len(dumps_deterministic(dev)) + len(_K_SEQ) + 9 + len(_K_PREV) + 34 \
        + len(_K_SEALED) + 9 + len(_K_RECORDS) + 5 + 1


def batch_payload(dev: str, seq: int, prev: bytes, sealed_ms: int, bodies: list[bytes]) -> bytes:
    if not bodies:
        raise ValueError("a batch holds at least one record")
    return b"".join([
        b"\xa6",
        _K_V, dumps_deterministic(1),
        _K_DEV, dumps_deterministic(dev),
        _K_SEQ, dumps_deterministic(seq),
        _K_PREV, dumps_deterministic(prev),
        _K_SEALED, dumps_deterministic(sealed_ms),
        _K_RECORDS, array_header(len(bodies)), *bodies,
    ])


def seal(signer: Signer, dev: str, seq: int, prev: bytes, sealed_ms: int, bodies: list[bytes]) -> tuple[bytes, bytes]:
    """Return (COSE bytes, SHA-256 of them: the next batch's prev)."""
    cose = signer.sign(batch_payload(dev, seq, prev, sealed_ms, bodies))
    return cose, hashlib.sha256(cose).digest()

"""Open one inbound COSE_Sign1 (uplink-v1 "Signed messages"): structure, kid, alg, signature, in one decode.

wire.cose.verify1 is the agent's general verifier; the receiver also has to refuse a
non-empty unprotected header and tell an unknown kid from a bad signature, which took it
three decodes of the whole ~100 KB message through verify1 and a header peek. This does
the same checks, in the same order, on one decode, and leaves the payload bytes undecoded
for the caller (which needs them for the determinism check anyway).
"""

from __future__ import annotations

from collections.abc import Mapping

import cbor2
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.cose import ALG_ED25519, ALG_EDDSA, COSE_SIGN1_TAG, HDR_ALG, HDR_KID


class OpenError(ValueError):
    """Why a message was refused: `code` is the rejection code (bad_cose, unknown_kid, bad_signature)."""

    def __init__(self, code: str, reason: str):
        self.code = code
        self.reason = reason
        super().__init__(f"{code}: {reason}")


def open_sign1(message: bytes, keys: Mapping[bytes, Ed25519PublicKey]) -> tuple[bytes, bytes]:
    """(kid, payload bytes) of a COSE_Sign1 signed by one of `keys` (kid -> key); raises OpenError.

    The kid and alg are read from the protected header only: an unprotected one is not
    covered by the signature, and uplink-v1 requires the unprotected header to be empty.
    """
    try:
        obj = cbor2.loads(message)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise OpenError("bad_cose", f"not CBOR: {exc}") from None
    if not isinstance(obj, cbor2.CBORTag) or obj.tag != COSE_SIGN1_TAG:
        raise OpenError("bad_cose", "not a tagged COSE_Sign1 (CBOR tag 18)")
    arr = obj.value
    if not isinstance(arr, (list, tuple)) or len(arr) != 4:  # cbor2 6 decodes tag content as a tuple
        raise OpenError("bad_cose", "COSE_Sign1 must be an array of 4 items")
    protected, unprotected, payload, signature = arr
    if not isinstance(protected, bytes) or not isinstance(payload, bytes) or not isinstance(signature, bytes):
        raise OpenError("bad_cose", "protected header, payload and signature must be byte strings")
    if not isinstance(unprotected, Mapping):  # dict, or cbor2 6's frozendict
        raise OpenError("bad_cose", "unprotected header must be a map")
    try:
        prot = cbor2.loads(protected) if protected else {}
    except Exception as exc:
        raise OpenError("bad_cose", f"protected header is not CBOR: {exc}") from None
    if not isinstance(prot, Mapping):
        raise OpenError("bad_cose", "protected header must be a map")
    if unprotected:
        raise OpenError("bad_cose", "unprotected header must be empty (uplink-v1)")
    kid = prot.get(HDR_KID)
    if not isinstance(kid, bytes):
        raise OpenError("bad_cose", "protected header has no kid")
    key = keys.get(kid)
    if key is None:
        raise OpenError("unknown_kid", f"kid {kid.hex()} is not registered for this device")
    alg = prot.get(HDR_ALG)
    if alg not in (ALG_EDDSA, ALG_ED25519):
        raise OpenError("bad_cose", f"unsupported alg {alg!r}; expected EdDSA (-8) or Ed25519 (-19)")
    # RFC 9052 section 4.4: Sig_structure = ["Signature1", body_protected, external_aad (empty), payload]
    to_verify = cbor2.dumps(["Signature1", protected, b"", payload])
    try:
        key.verify(signature, to_verify)
    except InvalidSignature:
        raise OpenError("bad_signature", "bad signature") from None
    return kid, payload

"""Verify COSE_Sign1 messages with an INDEPENDENT implementation: pycose (PyPI `cose`), not wire.cose.

Run by the interpreter of .venv-interop (pycose 0.9 needs cbor2 < 6, which the project's
venv does not have), never imported by the tests. stdin: a JSON list of
{"cose": hex, "key": hex of the raw 32-byte Ed25519 public key}; stdout: a JSON list of
{"ok": bool, "alg": str, "kid": hex, "payload": hex, "error": str}.
"""

import json
import sys

from cose.keys import OKPKey
from cose.keys.curves import Ed25519
from cose.messages import CoseMessage, Sign1Message


def check(item):
    try:
        msg = CoseMessage.decode(bytes.fromhex(item["cose"]))
        if not isinstance(msg, Sign1Message):
            return {"ok": False, "error": f"not a Sign1Message: {type(msg).__name__}"}
        msg.key = OKPKey(crv=Ed25519, x=bytes.fromhex(item["key"]))
        alg = [v for k, v in msg.phdr.items() if getattr(k, "identifier", None) == 1]
        kid = [v for k, v in msg.phdr.items() if getattr(k, "identifier", None) == 4]
        return {
            "ok": bool(msg.verify_signature()),
            "alg": getattr(alg[0], "fullname", str(alg[0])) if alg else "",
            "kid": kid[0].hex() if kid else "",
            "payload": msg.payload.hex(),
            "uhdr": len(msg.uhdr),
        }
    except Exception as exc:  # report, do not crash: the test asserts on it
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}


json.dump([check(i) for i in json.load(sys.stdin)], sys.stdout)

"""Check an evidence bundle with an INDEPENDENT implementation: pycose (PyPI `cose`) and the
standard library's zipfile, following docs/evidence-bundle-v1.md only; nothing of this project.

Run by the interpreter of .venv-interop (pycose 0.9 needs cbor2 < 6), never imported by the
tests. argv[1]: the bundle. stdout: JSON {"manifest": bool, "exporter_kid": hex, "parts_ok":
bool, "batches": {path: bool}, "links": [[dev, seq, bool]], "clips": {path: bool}, "errors": [...]}.
"""

import hashlib
import json
import sys
import zipfile

import cbor2
from cose.keys import OKPKey
from cose.keys.curves import Ed25519
from cose.messages import CoseMessage, Sign1Message
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key


def raw_key(pem):
    return load_pem_public_key(pem).public_bytes(Encoding.Raw, PublicFormat.Raw)


def pycose_verify(cose, raw):
    """(ok, kid, payload bytes) by pycose: decode the tagged COSE_Sign1, verify with the OKP key."""
    msg = CoseMessage.decode(cose)
    assert isinstance(msg, Sign1Message), type(msg).__name__
    msg.key = OKPKey(crv=Ed25519, x=raw)
    kid = [v for k, v in msg.phdr.items() if getattr(k, "identifier", None) == 4]
    return bool(msg.verify_signature()), (kid[0] if kid else b""), msg.payload


def main(path):
    out = {"batches": {}, "links": [], "clips": {}, "errors": []}
    z = zipfile.ZipFile(path)
    exporter = raw_key(z.read("exporter.pem"))
    ok, kid, payload = pycose_verify(z.read("manifest.cose"), exporter)
    out["manifest"], out["exporter_kid"] = ok, kid.hex()
    m = cbor2.loads(payload)
    parts = {p["path"]: p for p in m["parts"]}
    out["parts_ok"] = set(parts) == set(z.namelist()) - {"manifest.cose"} and all(
        hashlib.sha256(z.read(p)).digest() == e["sha256"] and len(z.read(p)) == e["size"] for p, e in parts.items()
    )
    for d in m["devices"]:
        keys = {k["kid"]: raw_key(z.read(k["path"])) for k in d["keys"]}
        first, hashes = d["chain"]["first"], d["chain"]["hashes"]
        records = {}
        for seq in d["batches"]:
            p = f"devices/{d['dev']}/batches/{seq}.cose"
            cose = z.read(p)
            kid = cbor2.loads(cbor2.loads(cose).value[0])[4]
            if kid not in keys:
                out["batches"][p] = False
                out["errors"].append(f"{p}: kid {kid.hex()} not among the device's keys")
                continue
            ok, _, payload = pycose_verify(cose, keys[kid])
            batch = cbor2.loads(payload)
            out["batches"][p] = ok and batch["seq"] == seq and batch["dev"] == d["dev"] and \
                hashlib.sha256(cose).digest() == hashes[seq - first]
            if seq > first:
                out["links"].append([d["dev"], seq, batch["prev"] == hashes[seq - first - 1]])
            for r in batch["records"]:
                records[r["id"]] = r
        for e in d["media"]:
            if "path" in e:
                data = records[e["record"]]["data"]
                out["clips"][e["path"]] = hashlib.sha256(z.read(e["path"])).digest() == data["sha256"]
    json.dump(out, sys.stdout)


main(sys.argv[1])

"""What the receiver stores and sends verifies with code that is not ours (uplink-v1: "verifiable with
off-the-shelf libraries"): pycose in its own venv, and RFC 9052's Sig_structure written out here."""

from __future__ import annotations

import hashlib
import json
import subprocess
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

INTEROP_PY = Path(__file__).resolve().parents[2] / ".venv-interop" / "bin" / "python"
SCRIPT = Path(__file__).with_name("interop_verify.py")


def raw(pub: Ed25519PublicKey) -> bytes:
    return pub.public_bytes(Encoding.Raw, PublicFormat.Raw)


def rfc9052_verify(message: bytes, pub: Ed25519PublicKey) -> Any:
    """COSE_Sign1 verification per RFC 9052 sections 4.2 and 4.4, with cbor2 + cryptography only."""
    tag = cbor2.loads(message)
    assert isinstance(tag, cbor2.CBORTag) and tag.tag == 18
    protected, unprotected, payload, signature = tag.value
    assert dict(unprotected) == {}
    header = cbor2.loads(protected)
    assert header[1] == -8  # EdDSA
    assert header[4] == hashlib.sha256(raw(pub)).digest()[:16]  # the spec's kid
    to_be_signed = cbor2.dumps(["Signature1", protected, b"", payload])
    pub.verify(signature, to_be_signed)  # raises InvalidSignature
    return cbor2.loads(payload)


def chain_and_ack(receiver: Receiver, agent: AgentSide, dev: DeviceSim) -> tuple[list[bytes], list[bytes]]:
    central = receiver.signer.key.public_key()
    for _ in range(3):
        agent.publish("batch", dev.dev, dev.next_batch(2))
    agent.wait_ack(central, dev.dev, 3)
    receiver.send_command(dev.dev, "ping", {})
    wait_for(lambda: agent.decoded(central, "cmd"), what="the ping")
    with ReceiverStore(receiver.config.receiver) as s:
        stored = [b for _, b in s.batch_bytes(dev.dev)]
    sent = [p for t, p in agent.messages if t.endswith("/ack") or t.endswith("/cmd")]
    return stored, sent


def test_stored_chain_and_central_messages_verify_per_rfc9052(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    stored, sent = chain_and_ack(receiver, agent, dev)
    prev = b"\x00" * 32
    for seq, cose in enumerate(stored, start=1):
        p = rfc9052_verify(cose, dev.key.public_key())
        assert p["seq"] == seq and p["prev"] == prev and p["dev"] == dev.dev
        prev = hashlib.sha256(cose).digest()
    for cose in sent:
        assert rfc9052_verify(cose, receiver.signer.key.public_key())["dev"] == dev.dev


def test_stored_chain_and_central_messages_verify_with_pycose(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    if not INTEROP_PY.exists():
        pytest.skip(f"{INTEROP_PY} missing: run `make interop-venv` (pycose needs cbor2<6, so it has its own venv)")
    dev = devices[0]
    stored, sent = chain_and_ack(receiver, agent, dev)
    central = receiver.signer.key.public_key()
    items = [{"cose": c.hex(), "key": raw(dev.key.public_key()).hex()} for c in stored]
    items += [{"cose": c.hex(), "key": raw(central).hex()} for c in sent]
    items.append({"cose": sent[0].hex(), "key": raw(dev.key.public_key()).hex()})  # wrong key: must fail
    out = subprocess.run(
        [str(INTEROP_PY), str(SCRIPT)],
        input=json.dumps(items),
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    results = json.loads(out.stdout)
    assert [r["ok"] for r in results] == [True] * (len(items) - 1) + [False], results
    for r, c in zip(results[:-1], stored + sent, strict=False):
        assert r["alg"] == "EDDSA" and r["uhdr"] == 0
        assert bytes.fromhex(r["payload"]) == cbor2.loads(c).value[2]
    assert results[0]["kid"] == hashlib.sha256(raw(dev.key.public_key())).digest()[:16].hex()

"""Everything the spec says must not be believed is refused, recorded with its reason, and never stored."""

from __future__ import annotations

import logging

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim
from wire.cose import kid_for, protected_header, sign1

STORES = ("sqlite", "postgresql")  # conftest: each test runs against both stores


def rejected(rx: Receiver, dev: str, n: int = 1) -> list[dict[str, object]]:
    def get() -> list[dict[str, object]] | None:
        with ReceiverStore(rx.config.receiver) as s:
            r = s.rejections(dev)
        return r if len(r) >= n else None

    return wait_for(get, what=f"{n} rejections of {dev}")


def assert_nothing_stored(rx: Receiver, dev: str) -> None:
    with ReceiverStore(rx.config.receiver) as s:
        assert s.record_count(dev) == 0 and s.records(dev) == [] and s.batch_bytes(dev) == []


def test_forged_signature_is_rejected(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], caplog: pytest.LogCaptureFixture
) -> None:
    dev = devices[0]
    intruder = Ed25519PrivateKey.generate()
    # Signed by another key but claiming the device's kid: the signature cannot verify.
    payload = cbor2.dumps(dev.payload([dev.record()], 1, b"\x00" * 32), canonical=True)
    cose = sign1(payload, intruder, protected=protected_header(kid_for(dev.key.public_key())))
    with caplog.at_level(logging.WARNING, logger="receiver.writer"):
        agent.publish("batch", dev.dev, cose)
        r = rejected(receiver, dev.dev)
    assert r[0]["code"] == "bad_signature" and r[0]["seq"] is None
    assert "bad_signature" in caplog.text
    assert_nothing_stored(receiver, dev.dev)


def test_unknown_kid_is_rejected(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    agent.publish(
        "batch",
        dev.dev,
        dev.sign(dev.payload([dev.record()], 1, b"\x00" * 32), key=Ed25519PrivateKey.generate()),
    )
    assert rejected(receiver, dev.dev)[0]["code"] == "unknown_kid"
    assert_nothing_stored(receiver, dev.dev)


def test_another_devices_key_is_an_unknown_kid_here(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """Device B's valid key must not vouch for a batch on device A's topic."""
    a, b = devices
    agent.publish("batch", a.dev, a.sign(a.payload([a.record()], 1, b"\x00" * 32), key=b.key))
    assert rejected(receiver, a.dev)[0]["code"] == "unknown_kid"


def test_dev_mismatch_is_rejected(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    a, b = devices
    # Correctly signed by A, but names B inside while published on A's topic.
    agent.publish("batch", a.dev, a.sign(a.payload([a.record()], 1, b"\x00" * 32, dev=b.dev)))
    r = rejected(receiver, a.dev)
    assert r[0]["code"] == "dev_mismatch" and b.dev in str(r[0]["reason"])
    assert_nothing_stored(receiver, a.dev)
    assert_nothing_stored(receiver, b.dev)


def test_non_deterministic_payload_is_rejected(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    p = dev.payload([dev.record()], 1, b"\x00" * 32)
    shuffled = dict(reversed(list(p.items())))  # same content, keys not in deterministic order
    raw = cbor2.dumps(shuffled)
    assert raw != cbor2.dumps(p, canonical=True)
    agent.publish("batch", dev.dev, dev.sign(raw))
    assert rejected(receiver, dev.dev)[0]["code"] == "not_deterministic"
    # A non-shortest integer encoding is not deterministic either: 1 as a 2-byte uint (0x18 0x01).
    canonical = cbor2.dumps(p, canonical=True)
    long_v = canonical.replace(b"\x61v\x01", b"\x61v\x18\x01", 1)
    assert cbor2.loads(long_v) == p
    agent.publish("batch", dev.dev, dev.sign(long_v))
    assert rejected(receiver, dev.dev, 2)[1]["code"] == "not_deterministic"
    assert_nothing_stored(receiver, dev.dev)


@pytest.mark.parametrize(
    ("override", "code"),
    [
        ({"v": 2}, "bad_payload"),
        ({"seq": 0}, "bad_payload"),
        ({"records": []}, "bad_payload"),
        ({"prev": b"\x01" * 32}, "chain_break"),
        ({"records": [{"id": "x", "kind": "teleport", "at": 1, "src": "a", "data": {}}]}, "bad_record"),
        ({"records": [{"id": "x", "kind": "sale", "at": "yesterday", "src": "a", "data": {}}]}, "bad_record"),
        ({"records": [{"id": "x", "kind": "sale", "at": 1, "src": "a", "data": {}, "note": "n"}]}, "bad_record"),
        ({"records": [{"id": "x", "kind": "sale", "at": 1, "src": "a"}]}, "bad_record"),
        ({"extra": 1}, "bad_payload"),
        (
            {
                "records": [
                    {
                        "id": "m",
                        "kind": "media",
                        "at": 1,
                        "src": "cam",
                        "data": {
                            "media": "m1",
                            "camera": "dock",
                            "type": "video/mp4",
                            "start": 1,
                            "end": 2,
                            "size": 10,
                            "sha256": b"x" * 31,
                            "chunk": 10,
                            "chunks": 1,
                            "reason": {},
                        },
                    }
                ]
            },
            "bad_record",
        ),
    ],
)
def test_malformed_payloads_are_rejected(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], override: dict[str, object], code: str
) -> None:
    dev = devices[0]
    p = dev.payload([dev.record()], 1, b"\x00" * 32)
    p.update(override)
    agent.publish("batch", dev.dev, dev.sign(p))
    assert rejected(receiver, dev.dev)[0]["code"] == code
    assert_nothing_stored(receiver, dev.dev)


def test_unregistered_device_is_rejected(receiver: Receiver, agent: AgentSide) -> None:
    stranger = DeviceSim("soc-x/branch-9/rogue")
    agent.publish("batch", stranger.dev, stranger.next_batch(1))
    assert rejected(receiver, stranger.dev)[0]["code"] == "unknown_device"
    with ReceiverStore(receiver.config.receiver) as s:
        assert stranger.dev not in s.devices()
        assert s.rejecting_senders() == [stranger.dev]
        assert s.device_state(stranger.dev) == {"dev": stranger.dev, "known": False, "rejections": 1}


def test_not_cose_is_rejected_and_does_not_block_the_next(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    agent.publish("batch", dev.dev, b"\xff not cbor")
    agent.publish("batch", dev.dev, dev.next_batch(1))
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 1)
    assert rejected(receiver, dev.dev)[0]["code"] == "bad_cose"


def test_status_is_verified_and_kept_a_bad_one_is_a_rejection(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    agent.publish("status", dev.dev, dev.status("online", acked_seq=7), retain=True)

    def last() -> dict[str, object] | None:
        with ReceiverStore(receiver.config.receiver) as s:
            return s.device_state(dev.dev).get("last_status")  # type: ignore[no-any-return]

    st = wait_for(last, what="the stored status")
    assert st["state"] == "online" and st["acked_seq"] == 7
    forged = dev.sign({"v": 1, "dev": dev.dev, "at": 1, "state": "offline"}, key=Ed25519PrivateKey.generate())
    agent.publish("status", dev.dev, forged, retain=True)
    assert rejected(receiver, dev.dev)[0]["code"] == "unknown_kid"
    assert last()["state"] == "online"  # type: ignore[index]
    agent.publish("status", dev.dev, dev.status("sleeping"), retain=True)
    assert rejected(receiver, dev.dev, 2)[1]["code"] == "bad_status"
    agent.publish("status", dev.dev, b"", retain=True)  # clearing the retained copy is not an error
    agent.publish("status", dev.dev, dev.status("offline"), retain=True)
    wait_for(lambda: (last() or {}).get("state") == "offline", what="the offline status")
    with ReceiverStore(receiver.config.receiver) as s:
        assert len(s.rejections(dev.dev)) == 2


def test_rejection_log_never_holds_key_material(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], caplog: pytest.LogCaptureFixture
) -> None:
    from cryptography.hazmat.primitives import serialization

    dev = devices[0]
    with caplog.at_level(logging.DEBUG):
        agent.publish(
            "batch",
            dev.dev,
            dev.sign(dev.payload([dev.record()], 1, b"\x00" * 32), key=Ed25519PrivateKey.generate()),
        )
        rejected(receiver, dev.dev)
    central_pem = receiver.signer.key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    body = central_pem.splitlines()[1]
    assert body not in caplog.text and "PRIVATE KEY" not in caplog.text

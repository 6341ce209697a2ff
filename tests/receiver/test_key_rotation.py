"""The device registry at the centre: rotation as a chained event, revocation, `coop-receiver device`.

Batches are real uplink-v1 batches signed by DeviceSim; the rotation record is the one the
agent's `coopagent keys rotate` seals (agent/keyrotation.py): a device_event key_rotated
with new_kid and new_key, the last record the old key signs.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver.cli import cli
from receiver.config import load_receiver_config
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim
from wire.cose import kid_for
from wire.keys import public_pem, public_raw

STORES = ("sqlite", "postgresql")


def rotation_record(dev: DeviceSim, new: Ed25519PrivateKey, **over: Any) -> dict[str, Any]:
    pub = new.public_key()
    data: dict[str, Any] = {
        "device": "agent",
        "event": "key_rotated",
        "detail": "test",
        "new_kid": kid_for(pub),
        "new_key": public_raw(pub),
    }
    data.update(over)
    return dev.record("device_event", data)


def signed_batch(dev: DeviceSim, key: Ed25519PrivateKey, records: list[dict[str, Any]] | None = None) -> bytes:
    """The next batch of dev's chain, signed with `key` (dev.next_batch signs with dev.key)."""
    dev.seq += 1
    cose = dev.sign(dev.payload(records or [dev.record()], dev.seq, dev.prev), key)
    dev.prev = hashlib.sha256(cose).digest()
    return cose


def rejections(rx: Receiver, dev: str) -> list[dict[str, Any]]:
    with ReceiverStore(rx.config.receiver) as s:
        return s.rejections(dev)


def acked(rx: Receiver, dev: str) -> int:
    with ReceiverStore(rx.config.receiver) as s:
        return int(s.device_state(dev)["acked_seq"])


def run_cli(cfg: Path, *args: str) -> str:
    r = CliRunner().invoke(cli, [*args[:2], "--config", str(cfg), *args[2:]])
    assert r.exit_code == 0, r.output
    return r.output


def test_announced_rotation_continues_the_chain_and_retires_the_old_key(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    new = Ed25519PrivateKey.generate()
    old_key = dev.key
    agent.publish("batch", dev.dev, dev.next_batch(2))
    agent.publish("batch", dev.dev, signed_batch(dev, old_key, [dev.record(), rotation_record(dev, new)]))
    # Published back to back: the new key's batch may be judged in the same group as the announcement.
    agent.publish("batch", dev.dev, signed_batch(dev, new))
    agent.wait_ack(central, dev.dev, 3)
    # The old key may no longer sign: a batch it signs at seq 4 is refused, recorded and not acked.
    forged = DeviceSim(dev.dev, key=old_key, seq=dev.seq, prev=dev.prev)
    agent.publish("batch", dev.dev, forged.next_batch(1))
    wait_for(lambda: any(r["code"] == "key_retired" for r in rejections(receiver, dev.dev)), what="key_retired")
    assert acked(receiver, dev.dev) == 3
    agent.publish("batch", dev.dev, signed_batch(dev, new))
    agent.wait_ack(central, dev.dev, 4)
    listing = run_cli(Path(receiver.config.receiver.db).parent.parent / "receiver.toml", "device", "list", "--json")
    assert '"state": "retired"' in listing and '"valid_to_seq": 2' in listing and '"valid_from_seq": 3' in listing


def test_revoked_key_is_refused_and_shown(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], rx_config: Path
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    agent.publish("batch", dev.dev, dev.next_batch(1))
    agent.wait_ack(central, dev.dev, 1)
    kid = kid_for(dev.key.public_key()).hex()
    out = run_cli(rx_config, "device", "revoke", dev.dev, kid, "--reason", "stolen till")
    assert f"kid {kid} revoked" in out
    agent.publish("batch", dev.dev, dev.next_batch(1))
    wait_for(lambda: any(r["code"] == "key_revoked" for r in rejections(receiver, dev.dev)), what="key_revoked")
    assert acked(receiver, dev.dev) == 1
    assert "stolen till" in [r for r in rejections(receiver, dev.dev) if r["code"] == "key_revoked"][0]["reason"]
    listing = run_cli(rx_config, "device", "list", dev.dev)
    assert "revoked" in listing and "stolen till" in listing
    status = run_cli(rx_config, "status", "--json")
    assert "key_revoked" in status


def test_registered_policy_needs_the_operator_and_completes_late(
    tmp_path: Path, rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """key_rotation = registered: an announced key the operator has not registered does not sign,
    until `device rotate` names it; then the agent's resend goes through and the chain continues."""
    rx_config.write_text(rx_config.read_text().replace("[receiver]\n", '[receiver]\nkey_rotation = "registered"\n', 1))
    dev = devices[0]
    new = Ed25519PrivateKey.generate()
    with Receiver(load_receiver_config(rx_config)) as rx:
        central = rx.signer.key.public_key()
        agent.publish("batch", dev.dev, signed_batch(dev, dev.key, [rotation_record(dev, new)]))
        agent.wait_ack(central, dev.dev, 1)
        after = signed_batch(dev, new)
        agent.publish("batch", dev.dev, after)
        wait_for(lambda: {r["code"] for r in rejections(rx, dev.dev)} >= {"rotation_unregistered", "unknown_kid"},
                 what="the refused rotation and the new key's refused batch")
        (tmp_path / "new.pem").write_text(public_pem(new.public_key()))
        out = run_cli(rx_config, "device", "rotate", dev.dev, str(tmp_path / "new.pem"))
        assert "completed the rotation announced at seq 1" in out
        agent.publish("batch", dev.dev, after)  # the agent's resend
        agent.wait_ack(central, dev.dev, 2)


def test_rotation_to_another_key_than_the_registered_one_is_refused(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim], rx_config: Path, tmp_path: Path
) -> None:
    dev = devices[0]
    expected, announced = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    (tmp_path / "expected.pem").write_text(public_pem(expected.public_key()))
    assert "registered" in run_cli(rx_config, "device", "rotate", dev.dev, str(tmp_path / "expected.pem"))
    # A key awaiting its rotation signs nothing yet.
    early = DeviceSim(dev.dev, key=expected)
    agent.publish("batch", dev.dev, early.next_batch(1))
    wait_for(lambda: any(r["code"] == "key_not_valid" for r in rejections(receiver, dev.dev)), what="key_not_valid")
    agent.publish("batch", dev.dev, signed_batch(dev, dev.key, [rotation_record(dev, announced)]))
    wait_for(lambda: any(r["code"] == "rotation_mismatch" for r in rejections(receiver, dev.dev)), what="mismatch")
    after = signed_batch(dev, announced)
    agent.publish("batch", dev.dev, after)
    wait_for(lambda: any(r["code"] == "unknown_kid" for r in rejections(receiver, dev.dev)), what="unknown_kid")
    assert acked(receiver, dev.dev) == 1  # the announcing batch itself is a valid link of the chain
    # The operator accepts the announced key after all: the rotation completes, the other one is dropped.
    (tmp_path / "announced.pem").write_text(public_pem(announced.public_key()))
    out = run_cli(rx_config, "device", "rotate", dev.dev, str(tmp_path / "announced.pem"))
    assert "completed the rotation announced at seq 1" in out
    listing = run_cli(rx_config, "device", "list", dev.dev, "--history")
    assert "awaiting rotation" not in listing and "rotate_dropped" in listing
    agent.publish("batch", dev.dev, after)  # the agent's resend
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 2)


def test_a_rotation_record_that_is_not_last_or_lies_about_its_kids_changes_nothing(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    new = Ed25519PrivateKey.generate()
    agent.publish("batch", dev.dev, signed_batch(dev, dev.key, [rotation_record(dev, new), dev.record()]))
    agent.publish("batch", dev.dev, signed_batch(dev, dev.key, [rotation_record(dev, new, new_kid=b"\x01" * 16)]))
    agent.publish("batch", dev.dev, signed_batch(dev, dev.key, [rotation_record(dev, new, old_kid=b"\x02" * 16)]))
    wait_for(lambda: len([r for r in rejections(receiver, dev.dev) if r["code"] == "bad_rotation"]) == 3,
             what="three bad_rotation")
    reasons = " ".join(r["reason"] for r in rejections(receiver, dev.dev))
    assert "must be the last record" in reasons and "new_kid is not the kid of new_key" in reasons
    assert "old_kid is not the kid that signed the batch" in reasons
    agent.publish("batch", dev.dev, signed_batch(dev, dev.key))  # the old key still signs
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 4)


def test_device_add_registers_a_new_device_without_files(
    tmp_path: Path, rx_config: Path, agent: AgentSide
) -> None:
    newcomer = DeviceSim("soc-z/branch-9/agent-1")
    pem = newcomer.write_public(tmp_path / "newcomer.pem")
    out = run_cli(rx_config, "device", "add", newcomer.dev, str(pem))
    assert f"kid {kid_for(newcomer.key.public_key()).hex()} registered" in out
    r = CliRunner().invoke(cli, ["device", "add", "--config", str(rx_config), newcomer.dev, str(pem)])
    assert r.exit_code == 2 and "already registered" in r.output
    with Receiver(load_receiver_config(rx_config)) as rx:
        agent.publish("batch", newcomer.dev, newcomer.next_batch(1))
        agent.wait_ack(rx.signer.key.public_key(), newcomer.dev, 1)
    r = CliRunner().invoke(cli, ["device", "revoke", "--config", str(rx_config), newcomer.dev, "abc"])
    assert r.exit_code == 2 and "32 hex digits" in r.output


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_a_rotation_undone_by_a_rollback_is_forgotten(
    rx_config: Path, devices: list[DeviceSim]
) -> None:
    """The registry applies a rotation inside the group's transaction (so the next batch of the same
    group may use the new key); a rollback must take it back out of memory too."""
    from receiver.database import open_database
    from receiver.keys import DeviceRegistry
    from receiver.writer import Writer

    cfg = load_receiver_config(rx_config)
    reg = DeviceRegistry(cfg)
    w = Writer(open_database(cfg.receiver, writer=True), reg, 100)
    dev = devices[0]
    new = Ed25519PrivateKey.generate()
    try:
        w.begin()
        w.on_batch(dev.dev, "t", signed_batch(dev, dev.key, [rotation_record(dev, new)]))
        assert reg.check_kid(dev.dev, kid_for(new.public_key()), 2) is None
        w.rollback()
        w.begin()
        assert reg.check_kid(dev.dev, kid_for(new.public_key()), 2) == (
            "unknown_kid", f"kid {kid_for(new.public_key()).hex()} is not registered for this device")
        w.db.rollback()
    finally:
        w.db.close()

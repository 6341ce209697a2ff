"""Device keys from a folder: registered by dropping a file, several keys per device, bad files skipped."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver.config import ReceiverConfig
from receiver.keys import DeviceRegistry, device_id_from_filename
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim, make_central
from wire.cose import kid_for


def senders(db: Path) -> list[str]:
    with ReceiverStore(db) as s:
        return s.rejecting_senders()


def test_file_names_give_the_device_id() -> None:
    assert device_id_from_filename(Path("soc-a.branch-1.agent-1.pem")) == "soc-a/branch-1/agent-1"
    assert device_id_from_filename(Path("soc-a.branch-1.agent-1.2026-06.pem")) == "soc-a/branch-1/agent-1"
    assert device_id_from_filename(Path("soc-a.branch-1.pem")) is None
    assert device_id_from_filename(Path("Soc.b.d.pem")) is None
    assert device_id_from_filename(Path("soc.b.d.txt")) is None


def test_folder_keys_rotation_and_bad_files(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    folder = tmp_path / "devices"
    folder.mkdir()
    dev = DeviceSim("soc-a/branch-1/agent-1")
    new_key = Ed25519PrivateKey.generate()
    dev.write_public(folder / "soc-a.branch-1.agent-1.pem")
    DeviceSim(dev.dev, key=new_key).write_public(folder / "soc-a.branch-1.agent-1.rotated.pem")
    (folder / "notes.pem").write_text("not a key")
    (folder / "soc-b.branch-1.agent-1.pem").write_text("-----BEGIN PUBLIC KEY-----\ngarbage\n")
    cfg = ReceiverConfig.model_validate({"receiver": {"devices_dir": str(folder)}})
    with caplog.at_level(logging.WARNING, logger="receiver.keys"):
        reg = DeviceRegistry(cfg)
    assert reg.devices() == [dev.dev]
    keys = reg.keys_for(dev.dev)
    assert keys is not None and set(keys) == {kid_for(dev.key.public_key()), kid_for(new_key.public_key())}
    assert "notes.pem is not named" in caplog.text and "soc-b.branch-1.agent-1.pem" in caplog.text


def test_a_device_dropped_into_the_folder_is_accepted_without_restart(
    tmp_path: Path, mosquitto: Mosquitto, agent: AgentSide
) -> None:
    make_central(tmp_path)
    folder = tmp_path / "devices"
    folder.mkdir()
    cfg = ReceiverConfig.model_validate(
        {
            "receiver": {
                "db": str(tmp_path / "rx.sqlite3"),
                "broker": mosquitto.url,
                "key_file": str(tmp_path / "central_key.pem"),
                "media_dir": str(tmp_path / "media"),
                "devices_dir": str(folder),
                "devices_rescan_s": 0,
            }
        }
    )
    newcomer = DeviceSim("soc-n/branch-7/agent-1")
    with Receiver(cfg) as rx:
        first = newcomer.next_batch(1)
        agent.publish("batch", newcomer.dev, first)
        wait_for(lambda: senders(cfg.receiver.db) == [newcomer.dev], what="the rejection")
        newcomer.write_public(folder / "soc-n.branch-7.agent-1.pem")
        agent.publish("batch", newcomer.dev, newcomer.next_batch(1))  # held: seq 1 was refused
        agent.publish("batch", newcomer.dev, first)  # what the agent resends after the resend command
        agent.wait_ack(rx.signer.key.public_key(), newcomer.dev, 2)

"""The write side on a real SQLite file and a real PostgreSQL, without a broker: pruning and held-batch limits."""

from __future__ import annotations

import tomllib
from pathlib import Path

from receiver.config import ReceiverConfig, parse_receiver_config
from receiver.database import open_database
from receiver.keys import DeviceRegistry
from receiver.store import ReceiverStore
from receiver.writer import Writer
from tests.receiver.helpers import DeviceSim

STORES = ("sqlite", "postgresql")  # conftest: each test runs against both stores


def config_for(tmp_path: Path, dev: DeviceSim, store_toml: str) -> ReceiverConfig:
    text = f'[receiver]\ndb = "rx.sqlite3"\n{store_toml}\n'
    text += f'[[devices]]\nid = "{dev.dev}"\npublic_key = "{dev.write_public(tmp_path / "dev.pem")}"\n'
    return parse_receiver_config(tomllib.loads(text), tmp_path / "receiver.toml")


def writer_for(cfg: ReceiverConfig, max_pending: int = 10) -> Writer:
    return Writer(open_database(cfg.receiver, writer=True), DeviceRegistry(cfg), max_pending)


def test_rejections_are_pruned_to_the_newest(tmp_path: Path, store_toml: str) -> None:
    dev = DeviceSim("soc-a/branch-1/agent-1")
    cfg = config_for(tmp_path, dev, store_toml)
    w = writer_for(cfg)
    w.begin()
    for i in range(150):
        w.reject(dev.dev, "t", "bad_cose", f"number {i}")
    w.reject("other/dev/x", "t", "unknown_device", "kept")
    w.commit()
    w.begin()
    w.prune_rejections(100)
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        reasons = [r["reason"] for r in s.rejections(dev.dev)]
        assert reasons == [f"number {i}" for i in range(50, 150)]
        assert len(s.rejections("other/dev/x")) == 1
    w.db.close()


def test_held_batches_are_capped(tmp_path: Path, store_toml: str) -> None:
    dev = DeviceSim("soc-a/branch-1/agent-1")
    cfg = config_for(tmp_path, dev, store_toml)
    w = writer_for(cfg, max_pending=3)
    batches = [dev.next_batch(1) for _ in range(6)]
    w.begin()
    for cose in batches[1:]:  # seq 1 missing: 2, 3, 4 are held, 5 and 6 refused
        w.on_batch(dev.dev, "t", cose)
    w.commit()
    assert w.gaps() == [(dev.dev, 1)]
    with ReceiverStore(cfg.receiver) as s:
        assert s.device_state(dev.dev)["held_batches"] == 3
        assert [r["code"] for r in s.rejections(dev.dev)] == ["pending_full", "pending_full"]
    w.begin()
    w.on_batch(dev.dev, "t", batches[0])
    result = w.commit()
    assert result.ack_devs == {dev.dev} and w.state(dev.dev).contiguous == 4
    with ReceiverStore(cfg.receiver) as s:
        assert s.device_state(dev.dev)["gaps"] == [[5, 6]] and s.record_count(dev.dev) == 4
    w.db.close()


def test_receivers_sharing_a_database_each_keep_their_health(tmp_path: Path, store_toml: str) -> None:
    """Two receivers of one shared group write their own link state; neither overwrites the other."""
    from receiver.status import render_status

    dev = DeviceSim("soc-a/branch-1/agent-1")
    cfg = config_for(tmp_path, dev, store_toml)
    w0, w1 = writer_for(cfg), writer_for(cfg)
    w0.set_health({"broker": "connected", "last_error": ""}, "centre-rx0")
    w1.set_health({"broker": "disconnected", "last_error": "OperationalError: server closed"}, "centre-rx1")
    w0.set_health({"broker": "connected", "last_error": ""}, "centre-rx0")
    with ReceiverStore(cfg.receiver) as s:
        health = s.health()
    assert sorted(health) == ["centre-rx0", "centre-rx1"]
    assert health["centre-rx0"]["broker"]["value"] == "connected"
    assert health["centre-rx1"]["broker"]["value"] == "disconnected"
    text = render_status([], health)
    assert "receiver centre-rx0: broker connected" in text and "receiver centre-rx1: broker disconnected" in text
    assert "OperationalError: server closed" in text
    w0.db.close()
    w1.db.close()

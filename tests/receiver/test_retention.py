"""Retention by policy: old batches' bytes and old media go, what evidence needs stays, the chain stays whole."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from receiver.cli import cli
from receiver.config import load_receiver_config
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.receiver.helpers import AgentSide, DeviceSim
from tests.receiver.test_media import chunks_of, clip, manifest_record, wait_media_ack

STORES = ("sqlite", "postgresql")

# DeviceSim seals at 1_764_000_000_000 + seq (late Nov 2025): a year before this machine's clock.
POLICY = """
[retention]
enabled = true
kinds = {sale = 30, media = 30}
media_days = 30
"""


def with_policy(rx_config: Path, policy: str = POLICY) -> Path:
    rx_config.write_text(rx_config.read_text() + policy)
    return rx_config


def media_batch(dev: DeviceSim, media_id: str, seed: int, reason: dict[str, Any]) -> tuple[bytes, bytes]:
    content = clip(seed, 2500)
    rec = manifest_record(dev, media_id, content)
    rec["data"]["reason"] = reason
    return dev.next_batch(records=[rec]), content


def retention_run(rx_config: Path, *extra: str) -> dict[str, Any]:
    r = CliRunner().invoke(cli, ["retention", "run", "--config", str(rx_config), *extra])
    assert r.exit_code == 0, r.output
    return dict(json.loads(r.output))


def test_old_bytes_and_media_go_evidence_stays_and_the_chain_still_recognises_resends(
    rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    cfg_path = with_policy(rx_config)
    cfg = load_receiver_config(cfg_path)
    dev = devices[0]
    batches: list[bytes] = []
    with Receiver(cfg) as rx:
        central = rx.signer.key.public_key()
        batches.append(dev.next_batch(3))  # 1: sales only: past 30 days, goes
        tamper = dev.record("device_event", {"device": "pos", "event": "tamper"})
        batches.append(dev.next_batch(records=[dev.record(), tamper]))  # 2: no limit for device_event: stays
        for b in batches:
            agent.publish("batch", dev.dev, b)
        for i, (mid, reason) in enumerate([
            ("motion-1", {"motion": True, "rule": "motion"}),  # 3: nobody needs it: goes, then its batch
            ("asked-1", {"command": "cmd-7"}),  # 4: the centre asked for it
            ("filmed-1", {"record": "r-void", "kind": "sale", "rule": "voids"}),  # 5: documents a record
            ("held-1", {"motion": True, "rule": "motion"}),  # 6: an operator holds it
        ]):
            cose, content = media_batch(dev, mid, i, reason)
            batches.append(cose)
            agent.publish("batch", dev.dev, cose)
            for idx, part in enumerate(chunks_of(content)):
                agent.publish(f"media/{mid}/{idx}", dev.dev, part)
            wait_media_ack(rx, agent, mid, [])
        agent.wait_ack(central, dev.dev, 6)
    with ReceiverStore(cfg.receiver) as s:
        files = {m["media"]: Path(m["path"]) for m in s.media(dev.dev)}
        before = len(s.records(dev.dev))
    assert all(p.exists() for p in files.values())
    r = CliRunner().invoke(cli, ["media", "hold", "--config", str(cfg_path), dev.dev, "held-1", "--reason", "case 12"])
    assert r.exit_code == 0, r.output

    dry = retention_run(cfg_path, "--dry-run")
    assert (dry["batches"], dry["media"]) == (2, 1) and all(p.exists() for p in files.values())
    report = retention_run(cfg_path)
    assert report["batches"] == 2 and report["media"] == 1
    assert report["kept_media"] == {"held": 1, "record": 1, "requested": 1}
    assert not files["motion-1"].exists()
    assert all(files[m].exists() for m in ("asked-1", "filmed-1", "held-1"))
    with ReceiverStore(cfg.receiver) as s:
        kept = s.records(dev.dev)
        assert {r["seq"] for r in kept} == {2, 4, 5, 6}
        assert len(kept) == before - 3 - 1
        assert [seq for seq, cose in s.batch_bytes(dev.dev) if not cose] == [1, 3]
        assert {m["media"]: m["state"] for m in s.media(dev.dev)}["motion-1"] == "expired"
    assert retention_run(cfg_path)["batches"] == 0  # nothing more to do

    # Released, the held clip follows the policy again.
    r = CliRunner().invoke(cli, ["media", "release", "--config", str(cfg_path), dev.dev, "held-1"])
    assert r.exit_code == 0 and "released" in r.output
    report = retention_run(cfg_path)
    assert report["media"] == 1 and report["batches"] == 1 and not files["held-1"].exists()

    # The chain's hashes stayed: an agent resending a dropped batch is acked again, no chain break.
    with Receiver(cfg) as rx:
        agent.publish("batch", dev.dev, batches[0])
        agent.publish("batch", dev.dev, dev.next_batch(1))
        agent.wait_ack(rx.signer.key.public_key(), dev.dev, 7)
    with ReceiverStore(cfg.receiver) as s:
        assert s.chain_breaks(dev.dev) == []


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_retention_off_deletes_nothing_and_says_so(rx_config: Path) -> None:
    r = CliRunner().invoke(cli, ["retention", "run", "--config", str(with_policy(rx_config, ""))])
    assert r.exit_code == 2 and "enabled = false" in r.output


@pytest.mark.parametrize("store_kind", ["sqlite"], indirect=True)
def test_an_unknown_kind_in_the_policy_names_the_kinds(rx_config: Path) -> None:
    r = CliRunner().invoke(
        cli, ["config", "check", "--config", str(with_policy(rx_config, "[retention]\nkinds = {sales = 3}\n"))]
    )
    assert r.exit_code == 2 and "unknown record kind 'sales'" in r.output and "stock_move" in r.output


@pytest.mark.parametrize("store_kind", ["postgresql"], indirect=True)
def test_postgres_drops_a_month_partition_whose_batches_are_all_gone(
    rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """SQLite keeps its record index (its UNIQUE key is the per-device id rule); PostgreSQL drops whole months."""
    from receiver.database import open_database
    from receiver.pg import PgDatabase
    from receiver.retention import Retention

    cfg = load_receiver_config(with_policy(rx_config))
    db = open_database(cfg.receiver, writer=True)
    assert isinstance(db, PgDatabase)
    db.maintain_partitions(1_764_000_000_000)  # the month of DeviceSim's records gets its partition
    db.close()
    dev = devices[0]
    with Receiver(cfg) as rx:
        for _ in range(3):
            agent.publish("batch", dev.dev, dev.next_batch(2))
        agent.wait_ack(rx.signer.key.public_key(), dev.dev, 3)
    # What the running receiver's worker does when due (Receiver.prune), here on a writer of our own.
    db = open_database(cfg.receiver, writer=True)
    try:
        report = Retention(cfg.retention, cfg.receiver.media_dir).maybe_run(db)
        assert report is not None and report.batches == 3 and report.partitions == ["records_p202511"]
        assert db.execute("SELECT to_regclass('records_p202511')").fetchone()[0] is None
        assert db.execute("SELECT to_regclass('records_p202512')").fetchone()[0] is not None  # empty: kept
    finally:
        db.close()
    with ReceiverStore(cfg.receiver) as s:
        assert s.records(dev.dev) == [] and len(s.batch_bytes(dev.dev)) == 3
    # Ids stay unique for ever: record_keys kept them.
    agent_ids = 6
    db = open_database(cfg.receiver, writer=False)
    try:
        assert db.execute("SELECT count(*) FROM record_keys").fetchone()[0] == agent_ids
    finally:
        db.close()


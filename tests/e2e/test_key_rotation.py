"""Key rotation end to end: the real agent rotates its key, the chain continues at the centre, and the
old key, revoked afterwards, cannot slip a forged batch in (real Mosquitto, real receiver, real buffer)."""

from __future__ import annotations

import hashlib
import sqlite3
from typing import Any

import pytest
from click.testing import CliRunner

from agent.cli.main import cli as agent_cli
from agent.daemon import Agent
from agent.keyrotation import rotate
from receiver.cli import cli as rx_cli
from tests.peers.agent import Branch, sale, toml_dumps
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim
from wire.cose import kid_for, verify1
from wire.keys import KeyError_, load_private_key


def sales_at_centre(branch: Branch) -> int:
    return len([r for r in branch.rx_records() if r["kind"] == "sale"])


def post(branch: Branch, first: int, n: int) -> None:
    r = branch.post([sale(first + i) for i in range(n)])
    assert r.status_code == 201, r.text


@pytest.mark.slow
def test_agent_rotates_chain_continues_and_revoked_old_key_cannot_forge(branch: Branch) -> None:
    old_key = branch.device_key
    branch.start_receiver()
    branch.start_agent()
    post(branch, 0, 10)
    wait_for(lambda: sales_at_centre(branch) == 10, timeout=20, what="10 sales at the centre")
    seq_before = branch.agent.store.acked_seq()
    branch.stop_agent()

    agent_toml = branch.write_agent_config()
    r = CliRunner().invoke(agent_cli, ["keys", "rotate", "--config", str(agent_toml)])
    assert r.exit_code == 0, r.output
    new_key = load_private_key(branch.data_dir / "device_key.pem")
    new_kid = kid_for(new_key.public_key())
    assert new_kid != kid_for(old_key.public_key()) and new_kid.hex() in r.output
    assert not (branch.data_dir / "device_key.pem.next").exists()
    assert not list(branch.data_dir.glob("device_key.pem.retired-*"))  # no --keep-old: the old key is gone

    branch.start_agent()  # signs with the new key; seq continues from the buffer
    post(branch, 100, 10)
    wait_for(lambda: sales_at_centre(branch) == 20, timeout=30, what="20 sales at the centre")
    wait_for(lambda: branch.agent.store.backlog()["batches"] == 0, timeout=20, what="everything acked")

    # The chain, proved here independently: one seq after another, prev linking every batch, the old
    # key up to the batch whose last record announces the new key, the new key after it.
    with branch.rx_store() as s:
        batches = s.batch_bytes(branch.device)
    keys = {kid_for(k.public_key()): k.public_key() for k in (old_key, new_key)}
    prev, announced_at = b"\x00" * 32, None
    for i, (seq, cose) in enumerate(batches, start=1):
        opened = verify1(cose, keys)
        p = opened.payload
        assert seq == i and p["seq"] == seq and p["prev"] == prev
        signer = opened.kid
        assert signer == (kid_for(old_key.public_key()) if announced_at is None else new_kid)
        last = p["records"][-1]
        if last["kind"] == "device_event" and last["data"]["event"] == "key_rotated":
            assert last["data"]["new_kid"] == new_kid and announced_at is None
            announced_at = seq
        prev = hashlib.sha256(cose).digest()
    assert announced_at is not None and seq_before < announced_at < len(batches)

    # The operator revokes the old key; a batch it signs after the chain's head is refused, unacked.
    rx_toml = branch.root / "receiver.toml"
    rx_toml.write_text(toml_dumps(branch.receiver_dict()))
    r = CliRunner().invoke(rx_cli, ["device", "revoke", "--config", str(rx_toml), branch.device,
                                    kid_for(old_key.public_key()).hex(), "--reason", "rotated out"])
    assert r.exit_code == 0, r.output
    head = len(batches)
    forger = DeviceSim(branch.device, key=old_key, seq=head, prev=hashlib.sha256(batches[-1][1]).digest())
    side = AgentSide(branch.broker.port)
    try:
        side.publish("batch", branch.device, forger.next_batch(1))
        wait_for(lambda: any(x["code"] == "key_revoked" for x in _rejections(branch)), timeout=10,
                 what="the forged batch refused")
    finally:
        side.close()
    assert branch.rx_state()["acked_seq"] == head
    r = CliRunner().invoke(rx_cli, ["status", "--config", str(rx_toml), branch.device])
    assert r.exit_code == 0 and "key_revoked" in r.output and f"{new_kid.hex()} active" in r.output


def _rejections(branch: Branch) -> list[dict[str, Any]]:
    with branch.rx_store() as s:
        return list(s.rejections(branch.device))


def test_an_interrupted_rotation_stops_the_agent_until_finished(
    branch: Branch, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A crash after the announcement was committed but before the key file was swapped: the agent
    must not seal under the old key (the centre would refuse those batches as retired), and running
    the command again finishes the rotation with the key it announced."""
    cfg = branch.agent_config()
    import agent.keyrotation as kr

    real_install = kr.install

    def crash(src: object, dst: object) -> None:
        raise OSError("power cut")

    monkeypatch.setattr(kr, "install", crash)
    with pytest.raises(OSError, match="power cut"):
        rotate(cfg, check_running=False)
    monkeypatch.setattr(kr, "install", real_install)
    announced = load_private_key(branch.data_dir / "device_key.pem.next")
    with pytest.raises(KeyError_, match="rotation was interrupted"):
        Agent(cfg, with_api=False)
    done = rotate(cfg, check_running=False)
    assert done.finished_only and done.new_kid == kid_for(announced.public_key())
    # seq is kept across the key change: the announcement's batch is the last seq, and nothing was re-sealed.
    with sqlite3.connect(cfg.db_path) as conn:
        assert conn.execute("SELECT count(*), max(seq) FROM batches").fetchone() == (1, done.seq)
    agent = Agent(cfg, with_api=False)  # starts now: its key is the announced one
    agent.store.writer.conn.close()


def test_rotate_refuses_while_the_agent_runs(branch: Branch) -> None:
    branch.start_agent()
    r = CliRunner().invoke(agent_cli, ["keys", "rotate", "--config", str(branch.write_agent_config())])
    assert r.exit_code == 2 and "stop it first" in r.output, r.output
    assert not (branch.data_dir / "device_key.pem.next").exists()

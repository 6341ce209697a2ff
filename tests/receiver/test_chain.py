"""Batches end to end through a real Mosquitto: chain rules, idempotence, gaps and chain breaks."""

from __future__ import annotations

import hashlib
from typing import Any

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

STORES = ("sqlite", "postgresql")  # conftest: each test runs against both stores


def store_of(rx: Receiver) -> ReceiverStore:
    return ReceiverStore(rx.config.receiver)


def state(rx: Receiver, dev: str) -> dict[str, Any]:
    with store_of(rx) as s:
        return s.device_state(dev)


def test_valid_chain_is_stored_and_acked_with_a_verifiable_signature(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    sent = [dev.next_batch(4) for _ in range(3)]
    for cose in sent:
        agent.publish("batch", dev.dev, cose)
    agent.wait_ack(central, dev.dev, 3)
    with store_of(receiver) as s:
        recs = s.records(dev.dev)
        assert len(recs) == 12 and s.record_count(dev.dev) == 12
        assert [r["seq"] for r in recs] == [1] * 4 + [2] * 4 + [3] * 4
        assert recs[0]["data"]["lines"][0]["gtin"] == "06291041500213"
        assert [b for _, b in s.batch_bytes(dev.dev)] == sent  # the exact bytes, for later proof
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 3 and st["gaps"] == [] and st["chain_breaks"] == 0 and st["rejections"] == 0
    acks = [a for a in agent.decoded(central, "ack") if a["dev"] == dev.dev]
    assert all(set(a) == {"v", "dev", "seq"} and a["v"] == 1 for a in acks)
    assert max(a["seq"] for a in acks) == 3


def test_duplicate_is_ignored_and_reacked(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    first = dev.next_batch(2)
    agent.publish("batch", dev.dev, first)
    agent.wait_ack(central, dev.dev, 1)
    n_acks = len(agent.decoded(central, "ack"))
    agent.publish("batch", dev.dev, first)
    wait_for(lambda: len(agent.decoded(central, "ack")) > n_acks, what="re-ack of the duplicate")
    with store_of(receiver) as s:
        assert s.record_count(dev.dev) == 2 and len(s.records(dev.dev)) == 2
        st = s.device_state(dev.dev)
        assert st["chain_breaks"] == 0 and st["rejections"] == 0 and st["acked_seq"] == 1


def test_a_record_id_seen_before_is_counted_and_the_first_stands(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """The spec makes a record id unique per device for ever. A later valid batch that repeats one (here
    with another `at`, which PostgreSQL's monthly partitions would not catch alone) is stored so the
    chain does not stall, but the repeated record is not: the first stands, and the repeat is counted."""
    dev = devices[0]
    central = receiver.signer.key.public_key()
    first = dev.record()
    agent.publish("batch", dev.dev, dev.next_batch(records=[first, dev.record()]))
    again = dict(first, at=first["at"] + 90 * 86_400_000, data={"receipt": "other", "till": 2, "total": 1,
                 "currency": "KWD", "lines": [{"gtin": "06291041500213", "qty": 1, "unit_price": 1, "amount": 1}]})
    agent.publish("batch", dev.dev, dev.next_batch(records=[again, dev.record()]))
    agent.wait_ack(central, dev.dev, 2)
    with store_of(receiver) as s:
        recs = s.records(dev.dev)
        assert len(recs) == 3 and s.record_count(dev.dev) == 3
        kept = [r for r in recs if r["id"] == first["id"]]
        assert len(kept) == 1 and kept[0]["seq"] == 1 and kept[0]["at"] == first["at"]
        st = s.device_state(dev.dev)
        assert st["duplicate_record_ids"] == 1 and st["acked_seq"] == 2
        assert [r["code"] for r in s.rejections(dev.dev)] == ["duplicate_record_id"]


def test_gap_asks_for_signed_resend_and_fills_later(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    b1, b2, b3, b4 = (dev.next_batch(2) for _ in range(4))
    agent.publish("batch", dev.dev, b1)
    agent.wait_ack(central, dev.dev, 1)
    agent.publish("batch", dev.dev, b3)
    agent.publish("batch", dev.dev, b4)
    cmds = wait_for(lambda: [c for c in agent.decoded(central, "cmd") if c["cmd"] == "resend"], what="a resend command")
    assert cmds[0]["args"] == {"from_seq": 2} and cmds[0]["dev"] == dev.dev
    assert isinstance(cmds[0]["id"], str) and isinstance(cmds[0]["at"], int)
    with store_of(receiver) as s:
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 1 and st["highest_seq_seen"] == 4 and st["held_batches"] == 2
        assert st["gaps"] == [[2, 2]]
        assert s.record_count(dev.dev) == 2
    assert max(a["seq"] for a in agent.decoded(central, "ack") if a["dev"] == dev.dev) == 1  # never past the gap
    agent.publish("batch", dev.dev, b2)
    agent.wait_ack(central, dev.dev, 4)
    with store_of(receiver) as s:
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 4 and st["held_batches"] == 0 and st["gaps"] == []
        assert [r["seq"] for r in s.records(dev.dev)] == [1, 1, 2, 2, 3, 3, 4, 4]


def test_resend_is_rate_limited_not_per_message(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    batches = [dev.next_batch(1) for _ in range(30)]
    for cose in batches[1:]:  # seq 1 never comes: 29 held batches
        agent.publish("batch", dev.dev, cose)
    wait_for(lambda: state(receiver, dev.dev).get("held_batches") == 29, what="29 held batches")
    resends = wait_for(lambda: [c for c in agent.decoded(central, "cmd") if c["cmd"] == "resend"], what="resend")
    assert len(resends) <= 3  # interval 0.5 s; 29 messages must not give 29 commands
    assert all(c["args"] == {"from_seq": 1} for c in resends)


def test_changed_batch_with_used_seq_is_a_chain_break(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    agent.publish("batch", dev.dev, dev.next_batch(2))
    agent.wait_ack(central, dev.dev, 1)
    # The same seq 1 again, validly signed but with other records: a rewritten history.
    forged = dev.sign(dev.payload([dev.record()], 1, b"\x00" * 32))
    agent.publish("batch", dev.dev, forged)
    wait_for(lambda: state(receiver, dev.dev)["chain_breaks"] == 1, what="the chain break")
    with store_of(receiver) as s:
        assert s.record_count(dev.dev) == 2  # the forged batch's record is not stored
        brk = s.chain_breaks(dev.dev)[0]
        assert brk["seq"] == 1 and brk["cose"] == forged and brk["hash"] == hashlib.sha256(forged).hexdigest()
        assert any(r["code"] == "chain_break" for r in s.rejections(dev.dev))


def test_prev_that_does_not_match_is_a_chain_break(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    central = receiver.signer.key.public_key()
    agent.publish("batch", dev.dev, dev.next_batch(1))
    agent.wait_ack(central, dev.dev, 1)
    bad = dev.sign(dev.payload([dev.record()], 2, hashlib.sha256(b"another history").digest()))
    agent.publish("batch", dev.dev, bad)
    wait_for(lambda: state(receiver, dev.dev)["chain_breaks"] == 1, what="the chain break")
    with store_of(receiver) as s:
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 1 and s.record_count(dev.dev) == 1
        assert "prev" in s.chain_breaks(dev.dev)[0]["reason"]


def test_stop_leaves_no_thread_behind(rx_config: Any) -> None:
    """Home Assistant's rule: a component that stops must take its threads (worker, paho loop) with it."""
    import threading

    from receiver.config import load_receiver_config

    before = {t.ident for t in threading.enumerate()}
    rx = Receiver(load_receiver_config(rx_config)).start()
    assert len({t.ident for t in threading.enumerate()} - before) >= 2  # the worker and paho's network loop
    rx.stop()
    wait_for(lambda: {t.ident for t in threading.enumerate() if t.is_alive()} <= before, what="threads to end")

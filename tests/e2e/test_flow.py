"""Records posted to the agent's API arrive at the reference receiver once, in a valid chain."""

from __future__ import annotations

import hashlib

import cbor2
import pytest

from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for
from wire.cose import kid_for, verify1

pytestmark = pytest.mark.slow


def test_posted_records_arrive_once_in_a_verified_chain(branch: Branch) -> None:
    branch.start_receiver()
    branch.start_agent()
    ids: list[str] = []
    with branch.client() as c:
        for i in range(20):
            r = branch.post([sale(i * 10 + j) for j in range(10)], client=c)
            assert r.status_code == 201, r.text
            ids += r.json()["ids"]
    wait_for(lambda: len([r for r in branch.rx_records() if r["kind"] == "sale"]) == 200, timeout=20,
             what="200 sales at the receiver")
    got = [r for r in branch.rx_records() if r["kind"] == "sale"]
    assert sorted(r["id"] for r in got) == sorted(ids)
    # The receiver's stored batches form a chain we check here independently of the receiver.
    with branch.rx_store() as s:
        batches = s.batch_bytes(branch.device)
    prev = b"\x00" * 32
    keys = {kid_for(branch.device_key.public_key()): branch.device_key.public_key()}
    for seq, cose in batches:
        p = verify1(cose, keys).payload
        assert p["seq"] == seq and p["prev"] == prev and p["dev"] == branch.device
        assert cbor2.dumps(cbor2.loads(verify1(cose, keys).payload_bytes), canonical=True) == \
            verify1(cose, keys).payload_bytes
        prev = hashlib.sha256(cose).digest()
    # The agent forgets nothing before the centre's signed ack, and the backlog drains to zero.
    wait_for(lambda: branch.agent.store.backlog()["records"] == 0, timeout=20, what="backlog to drain")
    assert branch.agent.store.acked_seq() == batches[-1][0]

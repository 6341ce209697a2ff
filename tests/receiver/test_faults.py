"""Faults on the central side: a full database stops acks, not the receiver; it resumes by itself."""

from __future__ import annotations

import sqlite3

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim


def test_database_full_holds_the_ack_and_resumes_when_space_returns(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """SQLite's page limit stands in for a full disk (same SQLITE_FULL error on commit): the group is
    not acked, not dropped, and is stored once space returns, without a reconnect."""
    dev = devices[0]
    central = receiver.signer.key.public_key()
    agent.publish("batch", dev.dev, dev.next_batch(2))
    agent.wait_ack(central, dev.dev, 1)
    conn = receiver.writer.db.conn  # the SQLite store: this test is about SQLite's own full error
    assert isinstance(conn, sqlite3.Connection)
    pages = conn.execute("PRAGMA page_count").fetchone()[0]
    conn.execute(f"PRAGMA max_page_count = {pages}")
    agent.publish("batch", dev.dev, dev.next_batch(400))  # ~70 KiB of records: does not fit
    wait_for(lambda: receiver.last_error and "full" in receiver.last_error, what="the full-database error")
    assert not any(a.get("seq") == 2 for a in agent.decoded(central, "ack"))
    conn.execute("PRAGMA max_page_count = 1073741823")
    agent.wait_ack(central, dev.dev, 2, timeout=40)  # retried with backoff (0.5, 1, 2, ... s)
    assert receiver.last_error is None

    def last_error() -> object:
        with ReceiverStore(receiver.config.receiver) as s:  # each receiver's own row, by client id
            return s.health().get(receiver.config.receiver.client_id, {}).get("last_error", {}).get("value")

    wait_for(lambda: last_error() == "", what="the cleared error")
    with ReceiverStore(receiver.config.receiver) as s:
        assert s.record_count(dev.dev) == 402 and s.device_state(dev.dev)["rejections"] == 0

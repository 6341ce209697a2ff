"""The uplink's no-ack resend timer against a real Mosquitto: it backs off while acks stay away, and it
never resends a batch the broker has not PUBACKed yet on the live connection.

Issue 10's storm: branches that resent on a fixed 15 s timer multiplied the centre's work exactly
while it was slowest, and Mosquitto queued more than 10 GB of their copies.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for

pytestmark = pytest.mark.slow


def test_resends_back_off_while_no_ack_comes(branch: Branch) -> None:
    """No receiver: the broker takes every batch (PUBACK) and no ack ever comes. With resend_after_s = 1
    a fixed timer resends every second; the uplink's waits double (1, 2, 4 s), so its third resend
    comes no sooner than 7 s after the first publish."""
    agent = branch.start_agent(uplink={"resend_after_s": 1.0})
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    assert branch.post([sale(1)]).status_code == 201
    wait_for(lambda: agent.store.last_seq() >= 1, what="a sealed batch")
    wait_for(lambda: any(o.state == "delivered" for o in list(agent.uplink._out.values())), what="its PUBACK")
    t = time.monotonic()
    wait_for(lambda: agent.uplink.resends >= 3, timeout=40, what="three resends")
    assert time.monotonic() - t >= 6.0, f"three resends within {time.monotonic() - t:.1f} s: no backoff"
    assert agent.store.acked_seq() == 0


def test_no_resend_while_the_broker_has_not_pubacked(branch: Branch) -> None:
    """The broker is frozen (SIGSTOP): the connection stays up, the batch waits for its PUBACK. Resending
    it would only queue a second copy behind the first; the uplink waits. Once the broker runs again
    the receiver stores the batch once and acks it."""
    branch.start_receiver()
    agent = branch.start_agent(uplink={"resend_after_s": 1.0, "keepalive_s": 60})
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    proc = branch.broker.proc
    assert proc is not None
    proc.send_signal(signal.SIGSTOP)
    try:
        assert branch.post([sale(i) for i in range(5)]).status_code == 201
        wait_for(lambda: any(o.state == "inflight" for o in list(agent.uplink._out.values())),
                 what="a batch published and not PUBACKed")
        deadline = time.monotonic() + 4.0  # four resend periods: a resend would come in this window
        while time.monotonic() < deadline:
            assert agent.uplink.resends == 0, "resent a batch still waiting for its PUBACK on a live session"
            time.sleep(0.05)
        assert agent.uplink.connected
    finally:
        proc.send_signal(signal.SIGCONT)
    wait_for(lambda: agent.store.acked_seq() >= 1 and agent.store.backlog()["records"] == 0, timeout=30,
             what="the batch acked after the broker resumed")
    sales = [r for r in branch.rx_records() if r["kind"] == "sale"]
    assert sorted(r["data"]["receipt"] for r in sales) == [f"R-{i}" for i in range(5)]
    state = branch.rx_state()
    assert state["duplicate_record_ids"] == 0 and state["chain_breaks"] == 0

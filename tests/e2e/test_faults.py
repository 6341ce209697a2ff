"""Faults against real peers: kill -9, broker outage, broker restart without persistence,
forged central messages. Nothing the API acknowledged may be lost or duplicated."""

from __future__ import annotations

import random
import signal
import threading
import time
import uuid
from typing import Any

import cbor2
import httpx
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for
from wire.cose import decode_unverified, dumps_deterministic, sign1

pytestmark = pytest.mark.slow


def sales_at_receiver(branch: Branch) -> list[dict[str, Any]]:
    return [r for r in branch.rx_records() if r["kind"] == "sale"]


class Poster(threading.Thread):
    """Posts 10 sales a request with ids of its own; keeps what the API acknowledged (201).
    A request that failed (agent killed) is re-posted with the same ids, as a POS would."""

    def __init__(self, branch: Branch, total: int):
        super().__init__(daemon=True)
        self.branch = branch
        self.total = total
        self.acked: list[str] = []
        self.stop = threading.Event()
        self.n = 0

    def run(self) -> None:
        pending: list[dict[str, Any]] | None = None
        client = self.branch.client()
        while not self.stop.is_set() and len(self.acked) < self.total:
            if pending is None:
                pending = []
                for _ in range(10):
                    self.n += 1
                    pending.append({**sale(self.n), "id": str(uuid.UUID(int=self.n))})
            try:
                r = self.branch.post(pending, client=client)
            except httpx.HTTPError:
                client.close()
                self.stop.wait(0.05)
                client = self.branch.client()
                continue
            if r.status_code == 201:
                self.acked += r.json()["ids"]
                pending = None
            else:
                self.stop.wait(0.05)
        client.close()


@pytest.mark.parametrize("workers", [0, 2], ids=["in-process", "2-api-workers"])
def test_sigkill_while_streaming_loses_nothing_acknowledged(branch: Branch, workers: int) -> None:
    """kill -9 at seeded random moments while records stream in; after each restart every
    record the API answered 201 for reaches the centre exactly once, and the receiver never
    sees two different batches under one seq (it would flag a chain break). With API worker
    processes, the killed agent's workers go too, and the restarted agent serves the port."""
    rng = random.Random(20261129)
    over = {"api": {"workers": workers}}
    branch.start_receiver()
    branch.start_agent_process(**over)
    poster = Poster(branch, total=3000)
    poster.start()
    for _ in range(4):
        target = len(poster.acked) + rng.randint(50, 600)
        wait_for(lambda t=target: len(poster.acked) >= t, timeout=60, what="records to stream")
        time.sleep(rng.uniform(0, 0.3))  # noqa: TID251 - a random kill moment, not a wait
        assert branch.kill_agent_process(signal.SIGKILL) == -signal.SIGKILL
        branch.start_agent_process(**over)
    poster.join(timeout=120)
    assert not poster.is_alive()
    acked = set(poster.acked)
    wait_for(lambda: acked <= {r["id"] for r in sales_at_receiver(branch)}, timeout=60,
             what="every acknowledged record at the receiver")
    state = branch.rx_state()
    assert state["chain_breaks"] == 0 and state["rejections"] == 0, state
    assert state["duplicate_record_ids"] == 0, state
    ids = [r["id"] for r in sales_at_receiver(branch)]
    assert len(ids) == len(set(ids))
    if workers:
        assert "(2 worker processes)" in branch.agent_log()
    assert branch.kill_agent_process(signal.SIGTERM) == 0  # and a clean stop exits 0


def test_broker_down_then_up_drains_backlog_in_order(branch: Branch) -> None:
    branch.start_receiver()
    agent = branch.start_agent()
    wait_for(lambda: agent.uplink.connected, what="uplink connected")
    branch.broker.stop()
    wait_for(lambda: not agent.uplink.connected, what="uplink to notice the outage")
    ids: list[str] = []
    with branch.client() as c:
        for i in range(300):  # 3,000 records while the broker is down
            r = branch.post([sale(i * 10 + j) for j in range(10)], client=c)
            assert r.status_code == 201
            ids += r.json()["ids"]
        status = c.get("/v1/status").json()
    assert status["broker"]["connected"] is False and status["broker"]["last_error"]
    assert status["backlog"]["records"] >= 3000
    branch.broker.start()
    wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=60, what="backlog to drain")
    got = sales_at_receiver(branch)
    assert sorted(r["id"] for r in got) == sorted(ids)
    state = branch.rx_state()
    assert state["chain_breaks"] == 0 and not state["gaps"]
    seqs = [r["seq"] for r in got]
    assert seqs == sorted(seqs)  # stored in seq order: the backlog drained in order


def test_broker_restart_without_persistence_resends_pubacked_batches(branch: Branch) -> None:
    """The broker PUBACKed batches and queued them for the (offline) receiver, then restarted
    without persistence and forgot them: no central ack came, so the agent resends."""
    branch.start_receiver()
    branch.stop_receiver()  # its persistent session now queues our batches at the broker
    agent = branch.start_agent()
    wait_for(lambda: agent.uplink.connected, what="uplink connected")
    r = branch.post([sale(i) for i in range(50)])
    assert r.status_code == 201
    ids = r.json()["ids"]
    wait_for(lambda: agent.store.last_seq() >= 1 and any(
        o.state == "delivered" for o in list(agent.uplink._out.values())), what="a PUBACKed batch")
    assert agent.store.acked_seq() == 0
    branch.broker.restart()  # persistence is off: the queued batches are gone
    branch.start_receiver()
    wait_for(lambda: {r["id"] for r in sales_at_receiver(branch)} >= set(ids), timeout=30,
             what="resent records at the receiver")
    wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=30, what="backlog drained")


def _publish(branch: Branch, topic: str, payload: bytes) -> None:
    c = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
    c.connect("127.0.0.1", branch.broker.port)
    c.loop_start()
    c.publish(topic, payload, qos=1).wait_for_publish(10)
    c.loop_stop()
    c.disconnect()


def test_forged_acks_and_commands_are_ignored_and_recorded(branch: Branch) -> None:
    agent = branch.start_agent()  # no receiver: nothing acks for real
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    r = branch.post([sale(1)])
    assert r.status_code == 201
    wait_for(lambda: agent.store.last_seq() >= 1, what="a sealed batch")
    prefix = f"coop/v1/{branch.device}"
    now = int(time.time() * 1000)
    rogue = Ed25519PrivateKey.generate()
    forged = [
        (f"{prefix}/ack", sign1(dumps_deterministic({"v": 1, "dev": branch.device, "seq": 1}), rogue)),
        (f"{prefix}/ack", sign1(dumps_deterministic({"v": 1, "dev": "coop-a/branch-9/x", "seq": 1}),
                                branch.central_key)),
        (f"{prefix}/cmd", sign1(dumps_deterministic({"v": 1, "dev": branch.device, "id": "c1", "cmd": "ping",
                                                     "args": {}, "at": now - 3_600_000}), branch.central_key)),
        (f"{prefix}/cmd", sign1(dumps_deterministic({"v": 1, "dev": branch.device, "id": "c2", "cmd": "ping",
                                                     "args": {}, "at": now}), rogue)),
        (f"{prefix}/ack", b"\x00garbage"),
    ]
    for topic, payload in forged:
        _publish(branch, topic, payload)

    def refusals() -> list[dict[str, Any]]:
        out = []
        for _, cose in agent.store.batches_from(1, 1000):
            for rec in cbor2.loads(decode_unverified(cose)[2])["records"]:
                if rec["kind"] == "device_event" and rec["data"]["event"] == "refused":
                    out.append(rec["data"]["detail"])
        return out

    wait_for(lambda: len(refusals()) == 5, timeout=15, what="5 refusals recorded as device_events")
    reasons = " | ".join(d["reason"] for d in refusals())
    assert "unknown kid" in reasons and "not 'coop-a/branch-1/agent-1'" in reasons
    assert "stale or replayed" in reasons and "ack: not CBOR: 7 bytes after the end" in reasons
    assert agent.store.acked_seq() == 0  # nothing was forgotten on a forged ack
    assert agent.refusals.total == 5
    assert not agent.store.command_seen("c1") and not agent.store.command_seen("c2")


def test_signed_ping_is_answered_once(branch: Branch) -> None:
    branch.start_receiver()
    agent = branch.start_agent()
    # subscribed, not just connected: on a first session a command published before the
    # broker granted the subscription is not delivered (MQTT; the centre re-sends then)
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    cid = branch.receiver.send_command(branch.device, "ping", {})
    branch.receiver.send_command(branch.device, "ping", {})  # another id: answered too

    def answers() -> list[dict[str, Any]]:
        return [r for r in branch.rx_records() if r["kind"] == "device_event" and r["data"]["event"] == "command"]

    wait_for(lambda: len(answers()) == 2, timeout=20, what="two command answers at the receiver")
    mine = [a for a in answers() if a["data"]["detail"]["command"] == cid]
    assert len(mine) == 1 and mine[0]["data"]["detail"]["result"] == "ok"

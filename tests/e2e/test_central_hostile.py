"""Hostile and broken messages from the centre's side, on a live agent (issue 13): real
Mosquitto, the real agent and buffer, the reference receiver. After each: the agent is alive
(status answers, records still reach the centre and are acked), acked_seq reflects only
true acks, and each refusal is recorded once; a flood is recorded a bounded number of times."""

from __future__ import annotations

import threading
import time
from collections import Counter
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for
from wire.cose import Signer, dumps_deterministic, kid_for, sign1
from wire.keys import generate_key_file, public_pem
from wire.messages import seq_ack

pytestmark = pytest.mark.slow


class Centre:
    """A test client on the broker: publishes as the centre would (or as anyone could), and
    counts the batches the agent publishes by seq."""

    def __init__(self, branch: Branch):
        self.prefix = f"coop/v1/{branch.device}"
        self.batches: Counter[int] = Counter()
        self._lock = threading.Lock()
        self.client = mqtt.Client(callback_api_version=mqtt.CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
        self.client.on_message = self._on_message
        self.client.connect("127.0.0.1", branch.broker.port)
        self.client.loop_start()
        self.client.subscribe(f"{self.prefix}/batch", qos=1)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        seq = cbor2.loads(cbor2.loads(msg.payload).value[2])["seq"]
        with self._lock:
            self.batches[seq] += 1

    def sent(self, seq: int) -> int:
        with self._lock:
            return self.batches[seq]

    def publish(self, leaf: str, payload: bytes) -> None:
        self.client.publish(f"{self.prefix}/{leaf}", payload, qos=1).wait_for_publish(10)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()
        # Break the client <-> self cycle (on_message is our bound method): freed by refcount,
        # paho's __del__ closes its socket pair; left to the gc, they warn as unclosed sockets.
        self.client.on_message = None


def refusals(branch: Branch) -> list[dict[str, Any]]:
    """The refusal records that reached the centre."""
    return [r["data"]["detail"] for r in branch.rx_records()
            if r["kind"] == "device_event" and r["data"]["event"] == "refused"]


def command_answers(branch: Branch, cid: str) -> list[dict[str, Any]]:
    return [r["data"]["detail"] for r in branch.rx_records()
            if r["kind"] == "device_event" and r["data"]["event"] == "command"
            and r["data"]["detail"]["command"] == cid]


def alive_and_acked(branch: Branch, agent: Any, n: int) -> None:
    """The agent answers status, takes a new record, and it reaches the centre and is acked."""
    with branch.client() as c:
        assert c.get("/v1/status").status_code == 200
    assert branch.post([sale(n)]).status_code == 201
    wait_for(lambda: any(r["kind"] == "sale" and r["data"]["receipt"] == f"R-{n}" for r in branch.rx_records()),
             timeout=20, what=f"sale R-{n} at the centre")
    wait_for(lambda: agent.store.acked_seq() == agent.store.last_seq(), timeout=20, what="everything acked")


def signed(branch: Branch, payload: dict[str, Any], key: Ed25519PrivateKey | None = None) -> bytes:
    return Signer(key or branch.central_key).sign_map(payload)


def test_acks_for_batches_never_sealed_forget_nothing(branch: Branch) -> None:
    """A centre-signed ack for a future seq, one far beyond, and one past SQLite's integers: all
    refused and recorded once each; the unacked batches are still resent and reach the centre."""
    agent = branch.start_agent()  # no receiver yet: nothing is acked for real
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    assert branch.post([sale(1), sale(2)]).status_code == 201
    wait_for(lambda: agent.store.last_seq() >= 1, what="a sealed batch")
    last = agent.store.last_seq()
    centre = Centre(branch)
    try:
        for seq in (last + 1, last + 1000, 2**63 + 5):
            centre.publish("ack", signed(branch, {"v": 1, "dev": branch.device, "seq": seq}))
        wait_for(lambda: agent.refusals.total == 3, what="three refused acks")
        assert agent.store.acked_seq() == 0
        assert agent.store.backlog()["batches"] >= 1
        branch.start_receiver()
        wait_for(lambda: agent.store.acked_seq() >= last, timeout=30, what="the real ack")
        receipts = {r["data"]["receipt"] for r in branch.rx_records() if r["kind"] == "sale"}
        assert {"R-1", "R-2"} <= receipts
        wait_for(lambda: len(refusals(branch)) >= 3, timeout=20, what="refusal records at the centre")
        got = refusals(branch)
        assert [d["code"] for d in got] == ["unsealed"] * 3, got
        assert all("newest sealed batch" in d["reason"] for d in got)
        alive_and_acked(branch, agent, 3)
    finally:
        centre.close()


def test_hostile_messages_are_refused_once_each_and_the_agent_carries_on(branch: Branch) -> None:
    branch.start_receiver()
    agent = branch.start_agent(uplink={"max_payload_bytes": 16384})
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    alive_and_acked(branch, agent, 1)
    acked_before = agent.store.acked_seq()
    centre = Centre(branch)
    dev, now = branch.device, int(time.time() * 1000)
    kid = kid_for(branch.central_key.public_key())
    rogue = Ed25519PrivateKey.generate()

    def cmd(cid: str, name: str, args: dict[str, Any]) -> bytes:
        return signed(branch, {"v": 1, "dev": dev, "id": cid, "cmd": name, "args": args, "at": now})

    def raw_signed(payload: bytes) -> bytes:
        return sign1(payload, branch.central_key)

    hostile: list[tuple[str, bytes, str]] = [
        ("ack", signed(branch, {"v": 1, "dev": dev, "seq": acked_before}, key=rogue), "kid"),
        ("ack", sign1(dumps_deterministic({"v": 1, "dev": dev, "seq": 99}), rogue, kid=kid), "signature"),
        # A bignum alg in the protected header: before the fix, ValueError out of paho's loop, the
        # uplink restarted, the broker redelivered the unPUBACKed message: a crash loop.
        ("ack", cbor2.dumps(cbor2.CBORTag(18, [cbor2.dumps({1: cbor2.CBORTag(2, b"\xff" * 2000), 4: kid}), {},
                                               b"\xa0", b"\x00" * 64])), "alg"),
        ("ack", b"\x00garbage", "malformed"),
        ("ack", seq_ack(Signer(branch.central_key), dev, acked_before) + b"\xff", "malformed"),  # trailing bytes
        ("ack", cbor2.dumps(cbor2.CBORTag(18, [b"\xa1\x01", {}, b"", b""])), "malformed"),  # protected cut short
        ("ack", raw_signed(b"\xbf\x61v\x01\x63dev" + cbor2.dumps(dev) + b"\x63seq\x01\xff"), "payload"),  # indefinite
        ("ack", raw_signed(b"\xa3\x61v\x01\x63dev" + cbor2.dumps(dev) + b"\x63seq\x00\x63seq\x00"), "payload"),
        ("ack", raw_signed(b"\x81" * 1000 + b"\x00"), "payload"),  # nested past cbor2's depth limit
        ("ack", signed(branch, {"v": 1, "dev": dev, "seq": -1}), "fields"),
        ("ack", signed(branch, {"v": 1, "dev": dev, "seq": {"nested": [1, {"x": b"y"}]}}), "fields"),
        ("ack", signed(branch, {"v": 2, "dev": dev, "seq": 1}), "version"),
        ("ack", b"\xd2" + b"\x00" * 17000, "oversize"),
        ("cmd", cmd("c-cut", "ping", {})[:-70], "malformed"),  # cut in the signature
        ("cmd", signed(branch, {"v": 1, "dev": dev, "id": "c-at", "cmd": "ping", "args": {}, "at": 10**30}),
         "stale"),
        ("cmd", signed(branch, {"v": 1, "dev": dev, "id": "c-x", "cmd": "ping", "args": [], "at": now}), "fields"),
        ("cmd", cmd("c-resend-bad", "resend", {"from_seq": "all"}), "fields"),
    ]
    try:
        # Past the agent's MQTT Maximum Packet Size: the broker drops it (MQTT 5 3.1.2.11.4), so
        # the agent never holds it; nothing to record, and the session carries on.
        centre.publish("cmd", b"\xd2" + b"\x00" * (1 << 20))
        for leaf, payload, _ in hostile:
            centre.publish(leaf, payload)
        # an unknown command, signed: answered "refused" once (a command answer, not a refusal)
        centre.publish("cmd", cmd("c-unknown", "reboot", {}))
        # a ping, then the same id again: carried out once, the replay refused once
        centre.publish("cmd", cmd("c-ping", "ping", {}))
        wait_for(lambda: len(command_answers(branch, "c-ping")) == 1, timeout=20, what="the ping's answer")
        centre.publish("cmd", cmd("c-ping", "ping", {}))
        # a resend, then the same id again: the window rewinds once
        before = centre.sent(1)
        centre.publish("cmd", cmd("c-resend", "resend", {"from_seq": 1}))
        wait_for(lambda: centre.sent(1) == before + 1, timeout=20, what="batch 1 resent")
        centre.publish("cmd", cmd("c-resend", "resend", {"from_seq": 1}))
        expected = Counter(code for _, _, code in hostile) + Counter({"replay": 2})
        wait_for(lambda: agent.refusals.total == sum(expected.values()), timeout=20, what="every refusal")
        alive_and_acked(branch, agent, 2)
        wait_for(lambda: len(refusals(branch)) == sum(expected.values()), timeout=20,
                 what="every refusal recorded at the centre")
        assert Counter(d["code"] for d in refusals(branch)) == expected
        assert all(len(d["reason"]) < 400 for d in refusals(branch))
        answers = command_answers(branch, "c-unknown")
        assert len(answers) == 1 and answers[0]["result"] == "refused" and "reboot" in answers[0]["reason"]
        assert len(command_answers(branch, "c-ping")) == 1
        assert len(command_answers(branch, "c-resend")) == 1
        assert centre.sent(1) == before + 1  # the replayed resend did not rewind the window again
        assert agent.uplink.connects == 1  # no crash, no reconnect
        assert agent.supervisor.details()["uplink"]["restarts"] == 0
    finally:
        centre.close()


def test_a_flood_of_bad_messages_yields_a_bounded_number_of_records(branch: Branch) -> None:
    branch.start_receiver()
    agent = branch.start_agent(uplink={"refusal_records_per_minute": 5})
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    centre = Centre(branch)
    forged = signed(branch, {"v": 1, "dev": branch.device, "seq": 1}, key=Ed25519PrivateKey.generate())
    try:
        infos = [centre.client.publish(f"{centre.prefix}/ack", forged, qos=1) for _ in range(1000)]
        for info in infos:
            info.wait_for_publish(30)
        wait_for(lambda: agent.refusals.total == 1000, timeout=60, what="1,000 refusals")
        alive_and_acked(branch, agent, 1)
        with branch.client() as c:
            status = c.get("/v1/status").json()
        assert status["refused_messages"] == 1000 and status["refused_unrecorded"] == 995
        wait_for(lambda: len(refusals(branch)) == 5, timeout=20, what="5 refusal records at the centre")
        assert agent.store.acked_seq() == agent.store.last_seq()
    finally:
        centre.close()


def test_an_ack_signed_by_the_replaced_central_key_is_refused(branch: Branch) -> None:
    """The centre's key was replaced (config changed, agent restarted): acks signed by the old
    one are refused, acks by the new one work."""
    branch.start_receiver()
    agent = branch.start_agent()
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    alive_and_acked(branch, agent, 1)
    branch.stop_agent()
    branch.stop_receiver()
    old = branch.central_key
    branch.central_key = generate_key_file(branch.central_key_path.with_name("central_key.new.pem"))
    branch.central_key_path.write_bytes(branch.central_key_path.with_name("central_key.new.pem").read_bytes())
    (branch.root / "central.pub.pem").write_text(public_pem(branch.central_key.public_key()))

    agent = branch.start_agent()  # no receiver: only the old key's ack can come
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed")
    acked = agent.store.acked_seq()
    assert branch.post([sale(2)]).status_code == 201
    wait_for(lambda: agent.store.last_seq() > acked, what="a new sealed batch")
    centre = Centre(branch)
    try:
        centre.publish("ack", signed(branch, {"v": 1, "dev": branch.device, "seq": agent.store.last_seq()}, key=old))
        wait_for(lambda: agent.refusals.total == 1, what="the old key's ack refused")
        assert agent.store.acked_seq() == acked
        branch.start_receiver()  # signs with the new key
        alive_and_acked(branch, agent, 3)
        got = refusals(branch)
        assert len(got) == 1 and got[0]["code"] == "kid", got
    finally:
        centre.close()

"""A fleet of virtual branches that speak uplink-v1 exactly, for the centre's benchmarks.

Each branch has its own Ed25519 key, its own MQTT 5 session (persistent, so the broker keeps
its acks while it is away) and its own hash chain. It seals real spec batches with the wire
package (deterministic CBOR, COSE_Sign1, `prev` = SHA-256 of the previous batch), publishes
them at QoS 1 within a window of batches not yet acked by the centre, verifies every ack
with the centre's public key and moves its window on the highest acked seq, as the agent
does (agent/uplink/link.py); a signed `resend` command rewinds it, and every command is
answered with a device_event record, carried out at most once per id.

Why one thread and paho's external loop: a thousand clients with a thread each spend the
machine's two cores on the GIL and on a thousand select() calls; here one selector serves
every socket and the fleet costs little beside the centre it measures. The batches of a
backlog are sealed before the clock starts (a real backlog was sealed before the outage).

Two resend policies, from the issue's storm:
  patient    like the agent: never resends what is still in flight to a live session; a
             reconnect resends from acked+1, and a safety net resends the window after
             `safety_s` without any ack progress, doubling while acks stay slow (capped at 8x).
  impatient  resends everything unacked on a fixed `resend_s` timer, and drops and remakes
             its connection every `reconnect_every_s`.
"""

from __future__ import annotations

import hashlib
import random
import selectors
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from wire.cose import Signer, dumps_deterministic
from wire.keys import public_pem
from wire.messages import CentralVerifier, Refused, SeqAck
from wire.topics import Topics

GTINS = ["5012345678900", "4006381333931", "0012345678905", "6291041500213", "6281007030015"]


@dataclass
class Policy:
    window: int = 4
    resend: str = "patient"  # patient | impatient
    resend_s: float = 15.0
    reconnect_every_s: float | None = None
    safety_s: float = 120.0


    @property
    def first_wait(self) -> float:
        return self.safety_s if self.resend == "patient" else self.resend_s


@dataclass
class Totals:
    """What the whole fleet did, summed over branches."""

    published: int = 0
    resent: int = 0
    acks: int = 0
    acks_refused: int = 0
    commands: int = 0
    commands_refused: int = 0
    resend_commands: int = 0
    connects: int = 0
    connect_failures: int = 0
    disconnects: int = 0
    latencies: list[float] = field(default_factory=list)  # seal -> ack, seconds, one per batch


def uuid7(at_ms: int, rng: random.Random) -> str:
    """A UUIDv7 (RFC 9562) of the given time, as the agent's ids are: 48-bit ms, version 7, variant 10."""
    rand = rng.getrandbits(74)
    value = (at_ms << 80) | (7 << 76) | ((rand >> 62) << 64) | (0b10 << 62) | (rand & ((1 << 62) - 1))
    return str(uuid.UUID(int=value))


def sale(rng: random.Random, at: int, till: int, n: int) -> dict[str, Any]:
    lines = []
    total = 0
    for _ in range(rng.randint(1, 4)):
        price = rng.randint(100, 5000)
        qty = rng.randint(1, 3)
        lines.append({"gtin": rng.choice(GTINS), "qty": qty, "unit_price": price, "amount": qty * price})
        total += qty * price
    return {"id": uuid7(at, rng), "kind": "sale", "at": at,
            "src": f"api:pos-{till}",
            "data": {"receipt": f"R{till}-{n}", "till": till, "lines": lines, "total": total, "currency": "KWD"}}


class Branch:
    """One branch's agent: its key, chain, sealed batches and MQTT session."""

    def __init__(self, index: int, prefix: str, central: Ed25519PublicKey, policy: Policy, seed: int = 0):
        self.index = index
        self.dev = f"soc-{index % 20:02d}/br-{index:04d}/agent-1"
        self.key = Ed25519PrivateKey.generate()
        self.signer = Signer(self.key)
        self.topics = Topics.for_device(prefix, self.dev)
        self.verifier = CentralVerifier(central, self.dev)
        self.policy = policy
        self.rng = random.Random(seed * 100_003 + index)
        self.batches: list[bytes] = []  # seq - 1 -> COSE_Sign1 bytes
        self.sealed_at: list[float] = []  # seq - 1 -> monotonic seal time
        self.records: list[int] = []  # seq - 1 -> records in it
        self.prev = b"\x00" * 32
        self.made = 0
        self.acked = 0
        self.next_send = 1
        self.inflight: dict[int, float] = {}  # seq -> monotonic publish time
        self.ever_sent = 0  # highest seq ever published (a lower one published again is a resend)
        self.last_progress = 0.0
        self.resend_wait = policy.first_wait
        self.connected = False
        self.client: mqtt.Client | None = None
        self.reconnect_at = 0.0
        self.next_drop = 0.0
        self.tried = False
        self.done_commands: set[str] = set()

    @property
    def client_id(self) -> str:
        return "fleet-" + self.dev.replace("/", "-")

    def public_pem(self) -> str:
        return public_pem(self.key.public_key())

    def key_file_name(self) -> str:
        return self.dev.replace("/", ".") + ".pem"

    def seal(self, n_records: int, now_ms: int) -> None:
        recs = []
        for _ in range(n_records):
            self.made += 1
            recs.append(sale(self.rng, now_ms - n_records + len(recs), 1 + self.made % 8, self.made))
        self.seal_records(recs, now_ms)

    def answer(self, cmd_id: str, cmd: str, result: str) -> None:
        """The spec's answer to a command: a device_event naming its id, sealed in a batch of its own."""
        ms = int(time.time() * 1000)
        rec = {"id": uuid7(ms, self.rng), "kind": "device_event", "at": ms, "src": "agent",
               "data": {"device": "agent", "event": "command", "detail": {"command": cmd_id, "cmd": cmd,
                                                                          "result": result}}}
        self.seal_records([rec], ms)

    def seal_records(self, recs: list[dict[str, Any]], now_ms: int) -> None:
        seq = len(self.batches) + 1
        payload = dumps_deterministic({"v": 1, "dev": self.dev, "seq": seq, "prev": self.prev, "sealed": now_ms,
                                       "records": recs})
        cose = self.signer.sign(payload)
        self.prev = hashlib.sha256(cose).digest()
        self.batches.append(cose)
        self.sealed_at.append(time.monotonic())
        self.records.append(len(recs))

    @property
    def total_records(self) -> int:
        return sum(self.records)

    @property
    def acked_records(self) -> int:
        return sum(self.records[: self.acked])

    @property
    def done(self) -> bool:
        return self.acked >= len(self.batches)


class Fleet:
    """Every branch on one selector; `run_until` drives them until a condition holds."""

    def __init__(self, branches: list[Branch], host: str, port: int, *, session_expiry_s: int = 3600,
                 keepalive_s: int = 60):
        self.branches = branches
        self.host = host
        self.port = port
        self.session_expiry_s = session_expiry_s
        self.keepalive_s = keepalive_s
        self.sel = selectors.DefaultSelector()
        self.totals = Totals()
        self.by_sock: dict[int, Branch] = {}
        self._last_misc = 0.0

    # -- connections -------------------------------------------------------------------

    def _make_client(self, b: Branch) -> mqtt.Client:
        c = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id=b.client_id, protocol=mqtt.MQTTv5)
        c.max_inflight_messages_set(max(20, b.policy.window * 2))
        c.max_queued_messages_set(0)
        status = {"v": 1, "dev": b.dev, "at": int(time.time() * 1000), "state": "offline", "version": "fleet",
                  "backlog": {"records": 0, "batches": 0, "media_bytes": 0}, "acked_seq": 0, "components": {}}
        c.will_set(b.topics.status, b.signer.sign(dumps_deterministic(status)), qos=1, retain=True)
        c.user_data_set(b)
        c.on_connect = self._on_connect
        c.on_disconnect = self._on_disconnect
        c.on_message = self._on_message
        c.on_socket_open = self._on_socket_open
        c.on_socket_close = self._on_socket_close
        c.on_socket_register_write = self._on_register_write
        c.on_socket_unregister_write = self._on_unregister_write
        return c

    def connect(self, b: Branch) -> None:
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = self.session_expiry_s
        if b.client is None:
            b.client = self._make_client(b)
        try:
            if not b.tried:
                b.tried = True
                b.client.connect(self.host, self.port, self.keepalive_s, clean_start=False, properties=props)
            else:
                b.client.reconnect()
        except OSError:
            self.totals.connect_failures += 1
            b.reconnect_at = time.monotonic() + 1.0 + b.rng.random()

    def connect_all(self, per_second: float | None = None) -> None:
        """Open every session; per_second spreads them (None: all at once, the storm)."""
        for i, b in enumerate(self.branches):
            self.connect(b)
            if per_second:
                deadline = time.monotonic() + 1.0 / per_second
                while time.monotonic() < deadline:
                    self.step(max(0.0, deadline - time.monotonic()))
            elif i % 50 == 49:
                self.step(0)

    def _on_socket_open(self, client: mqtt.Client, b: Branch, sock: Any) -> None:
        self.sel.register(sock, selectors.EVENT_READ, b)

    def _on_socket_close(self, client: mqtt.Client, b: Branch, sock: Any) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def _on_register_write(self, client: mqtt.Client, b: Branch, sock: Any) -> None:
        try:
            self.sel.modify(sock, selectors.EVENT_READ | selectors.EVENT_WRITE, b)
        except (KeyError, ValueError):
            pass

    def _on_unregister_write(self, client: mqtt.Client, b: Branch, sock: Any) -> None:
        try:
            self.sel.modify(sock, selectors.EVENT_READ, b)
        except (KeyError, ValueError):
            pass

    def _on_connect(self, client: mqtt.Client, b: Branch, flags: Any, rc: Any, props: Any) -> None:
        if rc.is_failure:
            self.totals.connect_failures += 1
            return
        self.totals.connects += 1
        b.connected = True
        b.reconnect_at = 0.0
        if b.policy.reconnect_every_s:
            b.next_drop = time.monotonic() + b.policy.reconnect_every_s * (0.5 + b.rng.random())
        client.subscribe([(b.topics.ack, 1), (b.topics.cmd, 1)])
        status = {"v": 1, "dev": b.dev, "at": int(time.time() * 1000), "state": "online", "version": "fleet",
                  "backlog": {"records": b.total_records - b.acked_records, "batches": len(b.batches) - b.acked,
                              "media_bytes": 0},
                  "acked_seq": b.acked, "components": {"uplink": "ok"}}
        client.publish(b.topics.status, b.signer.sign(dumps_deterministic(status)), qos=1, retain=True)
        # After a (re)connect the centre's view is unknown: start again from the lowest unacked seq.
        b.inflight.clear()
        b.next_send = b.acked + 1
        b.last_progress = time.monotonic()
        self.pump(b)

    def _on_disconnect(self, client: mqtt.Client, b: Branch, flags: Any, rc: Any, props: Any) -> None:
        if b.connected:
            self.totals.disconnects += 1
        b.connected = False
        b.reconnect_at = time.monotonic() + 0.5 + b.rng.random() * 2

    def _on_message(self, client: mqtt.Client, b: Branch, msg: mqtt.MQTTMessage) -> None:
        if msg.topic == b.topics.cmd:
            self._on_command(b, msg.payload)
            return
        if msg.topic != b.topics.ack:
            return
        try:
            ack = b.verifier.ack(msg.payload)
        except Refused:
            self.totals.acks_refused += 1
            return
        self.totals.acks += 1
        if not isinstance(ack, SeqAck) or ack.seq <= b.acked or ack.seq > len(b.batches):
            return
        now = time.monotonic()
        for seq in range(b.acked + 1, ack.seq + 1):
            self.totals.latencies.append(now - b.sealed_at[seq - 1])
            b.inflight.pop(seq, None)
        b.acked = ack.seq
        b.next_send = max(b.next_send, b.acked + 1)
        b.last_progress = now
        b.resend_wait = b.policy.first_wait
        self.pump(b)

    def _on_command(self, b: Branch, payload: bytes) -> None:
        """As the agent does: verify, carry out a command id at most once, answer with a device_event.

        `resend` {from_seq} rewinds the window to from_seq (the centre saw a gap: the broker
        dropped a batch, or a receiver died holding it); other commands are answered, not done.
        """
        try:
            cmd = b.verifier.command(payload, int(time.time() * 1000), 300_000)
        except Refused:
            self.totals.commands_refused += 1
            return
        if cmd.id in b.done_commands:
            return
        b.done_commands.add(cmd.id)
        self.totals.commands += 1
        result = "not carried out by the fleet simulator"
        if cmd.cmd == "resend":
            from_seq = cmd.args.get("from_seq")
            if type(from_seq) is int and b.acked < from_seq <= len(b.batches):
                b.next_send = min(b.next_send, from_seq)
                for seq in [s for s in b.inflight if s >= from_seq]:
                    del b.inflight[seq]
                self.totals.resend_commands += 1
                result = "done"
        b.answer(cmd.id, cmd.cmd, result)
        self.pump(b)

    # -- publishing ----------------------------------------------------------------------

    def pump(self, b: Branch) -> None:
        """Publish in seq order while the window has room (the window counts centre-unacked batches)."""
        if not b.connected or b.client is None:
            return
        while b.next_send <= len(b.batches) and b.next_send - b.acked <= b.policy.window:
            seq = b.next_send
            b.client.publish(b.topics.batch, b.batches[seq - 1], qos=1)
            self.totals.published += 1
            if seq <= b.ever_sent:
                self.totals.resent += 1
            b.ever_sent = max(b.ever_sent, seq)
            b.inflight[seq] = time.monotonic()
            b.next_send += 1

    def _timers(self, now: float) -> None:
        for b in self.branches:
            if not b.connected:
                if b.reconnect_at and now >= b.reconnect_at:
                    b.reconnect_at = now + 5.0  # until the CONNACK or the next failure says otherwise
                    self.connect(b)
                continue
            if b.policy.reconnect_every_s and now >= b.next_drop and b.client is not None:
                b.next_drop = now + b.policy.reconnect_every_s
                b.client.disconnect()
                continue
            if not b.inflight:
                continue
            if now - b.last_progress < b.resend_wait:
                continue
            # No ack progress for resend_wait: send the unacked window again.
            b.last_progress = now
            if b.policy.resend == "patient":
                b.resend_wait = min(b.resend_wait * 2, b.policy.safety_s * 8)
            b.next_send = b.acked + 1
            b.inflight.clear()
            self.pump(b)

    # -- the loop ------------------------------------------------------------------------

    def step(self, timeout: float) -> None:
        for key, events in self.sel.select(timeout):
            b: Branch = key.data
            c = b.client
            if c is None:
                continue
            if events & selectors.EVENT_READ:
                c.loop_read()
            if events & selectors.EVENT_WRITE and c.want_write():
                c.loop_write()
        now = time.monotonic()
        if now - self._last_misc >= 0.5:
            self._last_misc = now
            for b in self.branches:
                if b.client is not None:
                    b.client.loop_misc()
            self._timers(now)

    def run_until(self, done: Callable[[], bool], timeout: float,
                  tick: Callable[[float], None] | None = None) -> bool:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            self.step(0.05)
            if tick is not None:
                tick(time.monotonic())
            if done():
                return True
        return False

    def close(self) -> None:
        for b in self.branches:
            if b.client is not None:
                try:
                    b.client.disconnect()
                    for _ in range(3):
                        if b.client.want_write():
                            b.client.loop_write()
                except Exception:  # noqa: BLE001 - closing a fleet after a broker restart
                    pass
        self.sel.close()


def write_device_keys(branches: Iterable[Branch], folder: Path) -> None:
    """The technician's out-of-band registration: SOCIETY.BRANCH.DEVICE.pem in the receiver's devices_dir."""
    folder.mkdir(parents=True, exist_ok=True)
    for b in branches:
        (folder / b.key_file_name()).write_text(b.public_pem())


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]

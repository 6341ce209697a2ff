"""Test peers for the receiver: a signing device identity and a real MQTT client on the agent's side.

DeviceSim is not a mock of the agent: it signs real uplink-v1 batches with a fresh Ed25519
key (wire.cose.sign1), so every byte the receiver judges is what a device would send.
"""

from __future__ import annotations

import hashlib
import random
import threading
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from tests.peers.net import wait_for
from wire.cose import dumps_deterministic, kid_for, sign1, verify1
from wire.keys import generate_key_file, public_pem

ZERO = b"\x00" * 32


@dataclass
class DeviceSim:
    dev: str
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0
    prev: bytes = ZERO
    rng: random.Random = field(default_factory=lambda: random.Random(1234))

    def record(self, kind: str = "sale", data: dict[str, Any] | None = None) -> dict[str, Any]:
        rid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
        return {
            "id": rid,
            "kind": kind,
            "at": 1_764_000_000_000 + self.rng.randrange(10**6),
            "src": "api:pos-1",
            "data": data
            if data is not None
            else {
                "receipt": f"R{self.rng.randrange(10**6)}",
                "till": 1,
                "total": 500,
                "currency": "KWD",
                "lines": [{"gtin": "06291041500213", "qty": 2, "unit_price": 250, "amount": 500}],
            },
        }

    def payload(self, records: list[dict[str, Any]], seq: int, prev: bytes, **over: Any) -> dict[str, Any]:
        p = {
            "v": 1,
            "dev": self.dev,
            "seq": seq,
            "prev": prev,
            "sealed": 1_764_000_000_000 + seq,
            "records": records,
        }
        p.update(over)
        return p

    def sign(self, payload: dict[str, Any] | bytes, key: Ed25519PrivateKey | None = None) -> bytes:
        raw = payload if isinstance(payload, bytes) else dumps_deterministic(payload)
        return sign1(raw, key or self.key)

    def next_batch(self, n: int = 3, records: list[dict[str, Any]] | None = None) -> bytes:
        """The next batch in this device's chain (advances seq and prev)."""
        self.seq += 1
        cose = self.sign(self.payload(records or [self.record() for _ in range(n)], self.seq, self.prev))
        self.prev = hashlib.sha256(cose).digest()
        return cose

    def status(self, state: str = "online", **over: Any) -> bytes:
        p = {
            "v": 1,
            "dev": self.dev,
            "at": 1_764_000_000_000,
            "state": state,
            "version": "0.1.0",
            "backlog": {"records": 0, "batches": 0, "media_bytes": 0},
            "acked_seq": 0,
            "components": {"uplink": "ok"},
        }
        p.update(over)
        return self.sign(p)

    def write_public(self, path: Path) -> Path:
        path.write_text(public_pem(self.key.public_key()))
        return path


def make_central(tmp: Path) -> Ed25519PrivateKey:
    return generate_key_file(tmp / "central_key.pem")


def write_config(tmp: Path, broker_url: str, devices: list[DeviceSim], extra: str = "") -> Path:
    """A receiver config in tmp with the devices registered by [[devices]] entries (relative paths)."""
    if not (tmp / "central_key.pem").exists():
        make_central(tmp)
    lines = [
        "[receiver]",
        'db = "rx/receiver.sqlite3"',
        f'broker = "{broker_url}"',
        'key_file = "central_key.pem"',
        'media_dir = "rx/media"',
        f'client_id = "rx-{uuid.uuid4().hex[:8]}"',
        extra,
        "",
    ]
    for d in devices:
        name = d.dev.replace("/", ".") + ".pem"
        d.write_public(tmp / name)
        lines += ["[[devices]]", f'id = "{d.dev}"', f'public_key = "{name}"', ""]
    path = tmp / "receiver.toml"
    path.write_text("\n".join(lines))
    return path


class AgentSide:
    """A real paho client standing where the agent stands: publishes batches, collects acks and commands."""

    def __init__(self, port: int, prefix: str = "coop/v1"):
        self.prefix = prefix
        self.messages: list[tuple[str, bytes]] = []
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"agent-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.on_message = self._msg
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(f"{prefix}/+/+/+/ack", 1), (f"{prefix}/+/+/+/cmd", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "agent-side client did not subscribe"

    def _msg(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        with self._lock:
            self.messages.append((msg.topic, msg.payload))

    def publish(self, topic_tail: str, dev: str, payload: bytes, retain: bool = False) -> None:
        info = self.client.publish(f"{self.prefix}/{dev}/{topic_tail}", payload, qos=1, retain=retain)
        info.wait_for_publish(10)

    def decoded(self, central: Ed25519PublicKey, leaf: str) -> list[dict[str, Any]]:
        """Payloads on */leaf, each verified with the central public key (a bad one fails the test)."""
        with self._lock:
            msgs = list(self.messages)
        keys = {kid_for(central): central}
        return [dict(verify1(p, keys).payload) for t, p in msgs if t.endswith("/" + leaf)]

    def wait_ack(self, central: Ed25519PublicKey, dev: str, seq: int, timeout: float = 10) -> None:
        """Until an ack covers seq: acks are coalesced per commit, so the one for seq may say seq + k."""
        wait_for(
            lambda: any(a.get("dev") == dev and a.get("seq", 0) >= seq for a in self.decoded(central, "ack")),
            timeout=timeout,
            what=f"ack of {dev} seq {seq}",
        )

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def loads(b: bytes) -> Any:
    return cbor2.loads(b)

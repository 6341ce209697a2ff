"""Test peers for several receivers: agents that resend as the real uplink does, receivers as processes.

ResendingAgents is not a mock of the agent: each device signs real uplink-v1 batches
(DeviceSim) and follows the uplink's rules (agent/uplink/link.py): at most `window` batches
not acked by the centre, the window moves on a signed cumulative ack, a signed `resend`
command rewinds it, and with no ack progress for `resend_after` s it resends from the lowest
unacked seq (the wait doubling, as the uplink's does). It is what makes a receiver that
dies with messages in its session harmless.
"""

from __future__ import annotations

import hashlib
import re
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from paho.mqtt.enums import CallbackAPIVersion

from tests.peers.net import wait_for
from tests.receiver.helpers import ZERO, DeviceSim
from wire.cose import kid_for, verify1


class ResendingAgents:
    def __init__(
        self,
        port: int,
        central: Ed25519PublicKey,
        batches: dict[str, list[bytes]],
        window: int = 4,
        resend_after: float = 2.0,
        prefix: str = "coop/v1",
    ):
        self.prefix = prefix
        self.batches = batches
        self.window = window
        self.resend_after = resend_after
        self.keys = {kid_for(central): central}
        self.acked = dict.fromkeys(batches, 0)
        self._next = dict.fromkeys(batches, 1)
        self._progress = dict.fromkeys(batches, time.monotonic())
        self._wait = dict.fromkeys(batches, resend_after)
        self.published = 0
        self.resends = 0
        self.commands = 0
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client = mqtt.Client(
            CallbackAPIVersion.VERSION2, client_id=f"agents-{uuid.uuid4().hex[:8]}", protocol=mqtt.MQTTv5
        )
        self.client.max_inflight_messages_set(0)  # the window bounds what is out, not paho
        self.client.on_message = self._msg
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_connect = lambda c, *a: c.subscribe([(f"{prefix}/+/+/+/ack", 1), (f"{prefix}/+/+/+/cmd", 1)])
        self.client.connect("127.0.0.1", port)
        self.client.loop_start()
        assert self._ready.wait(10), "agents' client did not subscribe"

    def _msg(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        p = dict(verify1(bytes(msg.payload), self.keys).payload)  # a bad signature fails the test
        dev = p["dev"]
        with self._lock:
            if dev not in self.acked:
                return
            if msg.topic.endswith("/ack") and "seq" in p:
                if p["seq"] > self.acked[dev]:
                    self.acked[dev] = p["seq"]
                    self._progress[dev] = time.monotonic()
                    self._wait[dev] = self.resend_after
                    self._next[dev] = max(self._next[dev], p["seq"] + 1)
            elif msg.topic.endswith("/cmd") and p.get("cmd") == "resend":
                self.commands += 1
                self._next[dev] = max(self.acked[dev] + 1, min(self._next[dev], p["args"]["from_seq"]))

    def pump(self) -> None:
        """Publish what the windows allow; resend the windows that saw no ack for too long."""
        now = time.monotonic()
        out: list[tuple[str, bytes]] = []
        with self._lock:
            for dev, batches in self.batches.items():
                acked = self.acked[dev]
                if acked < len(batches) and now - self._progress[dev] > self._wait[dev]:
                    self._next[dev] = acked + 1
                    self._progress[dev] = now
                    self._wait[dev] = min(self._wait[dev] * 2, self.resend_after * 8)
                    self.resends += 1
                while self._next[dev] <= min(acked + self.window, len(batches)):
                    out.append((dev, batches[self._next[dev] - 1]))
                    self._next[dev] += 1
        for dev, cose in out:
            self.client.publish(f"{self.prefix}/{dev}/batch", cose, qos=1)
            self.published += 1

    def done(self) -> bool:
        with self._lock:
            return all(self.acked[d] == len(b) for d, b in self.batches.items())

    def run_until_done(self, timeout: float) -> None:
        def step() -> bool:
            self.pump()
            return self.done()

        wait_for(step, timeout=timeout, interval=0.02, what=f"every batch acked (acked so far: {self.acked})")

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def make_batches(devices: list[DeviceSim], n_batches: int, per_batch: int) -> dict[str, list[bytes]]:
    return {d.dev: [d.next_batch(per_batch) for _ in range(n_batches)] for d in devices}


def check_chain(stored: list[tuple[int, bytes]], sent: list[bytes]) -> None:
    """The stored chain is exactly what was sent, seq 1..N, each prev the SHA-256 of the one before."""
    assert [s for s, _ in stored] == list(range(1, len(sent) + 1))
    assert [c for _, c in stored] == sent
    import cbor2

    prev = ZERO
    for _, cose in stored:
        payload = cbor2.loads(cbor2.loads(cose).value[2])
        assert payload["prev"] == prev
        prev = hashlib.sha256(cose).digest()


def receiver_configs(base: Path, n: int) -> list[Path]:
    """n copies of the receiver config at base, in the same folder, each with its own MQTT client id."""
    text = base.read_text()
    out = []
    for i in range(n):
        p = base.with_name(f"receiver-{i}.toml")
        p.write_text(re.sub(r'client_id = "[^"]*"', f'client_id = "rx-{i}-{uuid.uuid4().hex[:6]}"', text))
        out.append(p)
    return out


class ReceiverProcess:
    """`coop-receiver run` as its own process: it can be SIGKILLed or SIGTERMed like the real service."""

    def __init__(self, config: Path, log: Path):
        self.log_path = log
        self._log = open(log, "ab")  # noqa: SIM115 - handed to the child, closed in wait()
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from receiver.cli import main; main()", "run", "--config", str(config)],
            stdout=self._log,
            stderr=self._log,
        )
        wait_for(
            lambda: "coop-receiver running" in self.log() or self.proc.poll() is not None,
            timeout=60,
            what=f"receiver {config.name} to start",
        )
        assert self.proc.poll() is None, self.log()[-3000:]

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.wait(10)

    def terminate(self, timeout: float) -> float:
        """SIGTERM; returns the seconds it took to exit (raises if longer than timeout)."""
        t = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        self.wait(timeout)
        return time.monotonic() - t

    def wait(self, timeout: float) -> int:
        try:
            return self.proc.wait(timeout=timeout)
        finally:
            self._log.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()

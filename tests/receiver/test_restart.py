"""The receiver keeps its word across restarts: persistent session, durable chain, held batches, spool."""

from __future__ import annotations

import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from receiver.config import load_receiver_config
from receiver.keys import load_central_key
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim
from tests.receiver.test_media import chunks_of, clip, manifest_record, wait_media_ack

STORES = ("sqlite", "postgresql")  # conftest: each test runs against both stores


def test_batches_published_while_down_arrive_after_restart(
    rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """The broker keeps the receiver's session (clean_start False + expiry) and queues for it."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    with Receiver(cfg):
        agent.publish("batch", dev.dev, dev.next_batch(2))
        agent.wait_ack(central, dev.dev, 1)
    for _ in range(4):  # nobody is subscribed right now: the broker holds these for the session
        agent.publish("batch", dev.dev, dev.next_batch(2))
    with Receiver(cfg):
        agent.wait_ack(central, dev.dev, 5)
    with ReceiverStore(cfg.receiver) as s:
        assert s.record_count(dev.dev) == 10 and s.device_state(dev.dev)["acked_seq"] == 5


def test_held_batches_and_spooled_chunks_survive_a_restart(
    rx_config: Path, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    content = clip(7, 3500)
    parts = chunks_of(content)
    b1 = dev.next_batch(1)
    b2 = dev.next_batch(records=[manifest_record(dev, "clip-r", content)])
    b3 = dev.next_batch(1)
    with Receiver(cfg) as rx:
        agent.publish("batch", dev.dev, b1)
        agent.publish("batch", dev.dev, b3)  # held: seq 2 is missing
        agent.publish("media/clip-r/0", dev.dev, parts[0])  # early: its manifest is in seq 2
        agent.publish("media/clip-r/3", dev.dev, parts[3])

        def held() -> bool:
            with ReceiverStore(cfg.receiver) as s:
                st = s.device_state(dev.dev)
                return st.get("held_batches") == 1 and rx.media.counts()["early_bytes"] > 0

        wait_for(held, what="seq 3 held and chunks spooled")
    with Receiver(cfg) as rx:
        agent.publish("batch", dev.dev, b2)
        agent.wait_ack(central, dev.dev, 3)
        agent.publish("media/clip-r/1", dev.dev, parts[1])
        agent.publish("media/clip-r/2", dev.dev, parts[2])
        wait_media_ack(rx, agent, "clip-r", [])
    with ReceiverStore(cfg.receiver) as s:
        path = s.media_path(dev.dev, "clip-r")
        assert path is not None and path.read_bytes() == content
        assert [r["seq"] for r in s.records(dev.dev)] == [1, 2, 3]


@pytest.mark.slow
def test_sigkill_mid_stream_loses_nothing_and_stores_nothing_twice(
    rx_config: Path, mosquitto: Mosquitto, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """A receiver killed between commit and PUBACK gets the message again and treats it as a duplicate;
    one killed before commit gets it again and stores it then. Either way: every record once."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    batches = [dev.next_batch(50) for _ in range(60)]
    exe = [sys.executable, "-c", "from receiver.cli import main; main()", "run", "--config", str(rx_config)]

    def start() -> subprocess.Popen[str]:
        proc = subprocess.Popen(exe, stderr=subprocess.PIPE, text=True)
        lines: list[str] = []
        threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()
        wait_for(lambda: any("coop-receiver running" in ln for ln in lines), timeout=20, what="receiver up")
        return proc

    proc = start()
    try:
        for i, cose in enumerate(batches):
            agent.client.publish(f"coop/v1/{dev.dev}/batch", cose, qos=1)
            if i == 25:
                wait_for(lambda: any(a.get("seq", 0) >= 5 for a in agent.decoded(central, "ack")), what="some acks")
                proc.send_signal(signal.SIGKILL)
                proc.wait(timeout=10)
                assert proc.stderr is not None
                proc.stderr.close()
                proc = start()
        agent.wait_ack(central, dev.dev, 60, timeout=60)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        if proc.stderr is not None:
            proc.stderr.close()
    with ReceiverStore(cfg.receiver) as s:
        recs = s.records(dev.dev)
        assert len(recs) == 3000 and len({r["id"] for r in recs}) == 3000
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 60 and st["chain_breaks"] == 0 and st["duplicate_record_ids"] == 0


@pytest.mark.slow
def test_stop_under_load_returns_and_loses_nothing(rx_config: Path, agent: AgentSide, devices: list[DeviceSim]) -> None:
    """With the inbox full, paho's thread waits to hand over a message; stop() must not wait for it
    for ever, and what was dropped unacked comes again in the next session."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    batches = [dev.next_batch(200) for _ in range(300)]
    rx = Receiver(cfg).start()
    for cose in batches:
        agent.client.publish(f"coop/v1/{dev.dev}/batch", cose, qos=1)
    agent.wait_ack(central, dev.dev, 1, timeout=30)
    rx.stop()  # returns (the test would hang otherwise)
    with Receiver(cfg):
        agent.wait_ack(central, dev.dev, 300, timeout=60)
    with ReceiverStore(cfg.receiver) as s:
        assert s.record_count(dev.dev) == 60_000 and s.device_state(dev.dev)["duplicate_record_ids"] == 0

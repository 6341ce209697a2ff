"""A broker that refuses us (topic ACLs) is heard: a refused PUBACK of an ack is logged with its reason and
retried, never counted as sent (Mosquitto 2.0 answers 0x87).

A refused SUBACK (which fails start()) is not tested here: Mosquitto 2.0.11's acl_file grants every
subscription and filters at delivery instead, so no local broker produces one."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.config import load_receiver_config
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim, write_config


def acl_broker(tmp_path: Path, rules: str) -> Mosquitto:
    acl = tmp_path / "acl"
    acl.write_text(rules)
    return Mosquitto(tmp_path / "mosq", extra=f"acl_file {acl}\n").start()


@pytest.fixture
def read_only_acks(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = acl_broker(
        tmp_path,
        "\n".join(
            [
                "topic readwrite coop/v1/+/+/+/batch",
                "topic readwrite coop/v1/+/+/+/status",
                "topic readwrite coop/v1/+/+/+/media/#",
                "topic read coop/v1/+/+/+/ack",
                "topic read coop/v1/+/+/+/cmd",
                "",
            ]
        ),
    )
    try:
        yield broker
    finally:
        broker.stop()


def test_refused_ack_publish_is_logged_and_retried(
    tmp_path: Path, read_only_acks: Mosquitto, caplog: pytest.LogCaptureFixture
) -> None:
    dev = DeviceSim("soc-a/branch-1/agent-1")
    cfg = load_receiver_config(write_config(tmp_path, read_only_acks.url, [dev]))
    agent = AgentSide(read_only_acks.port)
    try:
        with caplog.at_level(logging.ERROR, logger="receiver.mqtt"), Receiver(cfg):
            agent.publish("batch", dev.dev, dev.next_batch(2))
            wait_for(
                lambda: caplog.text.count("broker refused our publish on coop/v1/soc-a/branch-1/agent-1/ack") >= 2,
                what="the refusal, then the retry refused again",
            )
            assert "Not authorized" in caplog.text
        with ReceiverStore(cfg.receiver) as s:
            assert s.record_count(dev.dev) == 2  # stored; only the ack could not be delivered
        assert agent.messages == []
    finally:
        agent.close()


def test_refused_acks_are_coalesced_per_device_and_a_retry_sends_the_newest(
    tmp_path: Path, read_only_acks: Mosquitto
) -> None:
    """Issue 10's storm: the broker refused the receiver's acks, and every refused ack was queued for a
    retry of its own, stale ones too, feeding the queue that refused them. A seq ack is cumulative: ten
    commits while the broker refuses make one ack in flight at a time, each retry (after a doubling
    delay) carries the newest head, and the seqs published never go back."""
    import math
    import time

    dev = DeviceSim("soc-a/branch-1/agent-1")
    cfg = load_receiver_config(write_config(tmp_path, read_only_acks.url, [dev]))
    agent = AgentSide(read_only_acks.port)
    try:
        with Receiver(cfg) as rx:
            published: list[int] = []
            real = rx.acks._publish
            rx.acks._publish = lambda d, seq: (published.append(seq), real(d, seq))[1]  # type: ignore[method-assign]
            t = time.monotonic()
            with ReceiverStore(cfg.receiver) as s:
                for n in range(1, 11):  # ten commits, one batch each
                    agent.publish("batch", dev.dev, dev.next_batch(1))
                    wait_for(lambda n=n: s.device_state(dev.dev).get("acked_seq") == n, what=f"seq {n} stored")
            elapsed = time.monotonic() - t
            wait_for(lambda: published and published[-1] == 10, timeout=15, what="a retry with the newest head")
            assert published == sorted(published), published
            assert len(published) <= 3 + math.log2(1 + elapsed + 15), (published, elapsed)
            assert rx.acks.coalesced >= 5
    finally:
        agent.close()

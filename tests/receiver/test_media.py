"""Clips and snapshots: chunks reassembled against the manifest in a batch, acked with the holes."""

from __future__ import annotations

import hashlib
import random
from typing import Any

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

CHUNK = 1000

STORES = ("sqlite", "postgresql")  # conftest: each test runs against both stores


def rejections(db: Any, dev: str) -> list[dict[str, Any]]:
    with ReceiverStore(db) as s:
        return s.rejections(dev)


def clip(seed: int, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


def manifest_record(
    dev: DeviceSim, media_id: str, content: bytes, sha: bytes | None = None, mtype: str = "video/mp4"
) -> dict[str, Any]:
    chunks = -(-len(content) // CHUNK)
    return dev.record(
        "media",
        {
            "media": media_id,
            "camera": "dock-1",
            "type": mtype,
            "start": 1_764_000_000_000,
            "end": 1_764_000_010_000,
            "size": len(content),
            "sha256": sha or hashlib.sha256(content).digest(),
            "chunk": CHUNK,
            "chunks": chunks,
            "reason": {"record": "r-1"},
        },
    )


def chunks_of(content: bytes) -> list[bytes]:
    return [content[i : i + CHUNK] for i in range(0, len(content), CHUNK)]


def media_acks(rx: Receiver, agent: AgentSide, media_id: str) -> list[dict[str, Any]]:
    return [a for a in agent.decoded(rx.signer.key.public_key(), "ack") if a.get("media") == media_id]


def wait_media_ack(rx: Receiver, agent: AgentSide, media_id: str, missing: list[int]) -> dict[str, Any]:
    return wait_for(
        lambda: next((a for a in media_acks(rx, agent, media_id) if a["missing"] == missing), None),
        what=f"media ack of {media_id} with missing={missing}",
    )


def test_out_of_order_chunks_before_the_manifest_reassemble(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    content = clip(1, 4 * CHUNK + 123)
    parts = chunks_of(content)
    for i in (4, 2, 0, 3, 1):  # all of them before the batch that announces them
        agent.publish(f"media/clip-1/{i}", dev.dev, parts[i])
    agent.publish("batch", dev.dev, dev.next_batch(records=[manifest_record(dev, "clip-1", content)]))
    ack = wait_media_ack(receiver, agent, "clip-1", [])
    assert set(ack) == {"v", "dev", "media", "missing"} and ack["dev"] == dev.dev
    with ReceiverStore(receiver.config.receiver) as s:
        path = s.media_path(dev.dev, "clip-1")
        assert path is not None and path.read_bytes() == content
        assert path == receiver.config.receiver.media_dir / "soc-a" / "branch-1" / "agent-1" / "clip-1.mp4"
        assert s.device_state(dev.dev)["media_complete"] == 1 and s.rejections(dev.dev) == []
    assert not (receiver.config.receiver.media_dir / ".spool" / dev.dev / "clip-1").exists()
    # A chunk resent after completion (the agent missed our ack) is answered with the ack again.
    n = len(media_acks(receiver, agent, "clip-1"))
    agent.publish("media/clip-1/0", dev.dev, parts[0])
    wait_for(lambda: len(media_acks(receiver, agent, "clip-1")) > n, what="the repeated complete ack")
    assert media_acks(receiver, agent, "clip-1")[-1]["missing"] == []


def test_sha_mismatch_is_refused_and_all_chunks_asked_again(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    content = clip(2, 3 * CHUNK)
    parts = chunks_of(content)
    agent.publish(
        "batch",
        dev.dev,
        dev.next_batch(records=[manifest_record(dev, "snap-1", content, mtype="image/jpeg")]),
    )
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 1)
    corrupted = bytes([parts[1][0] ^ 0xFF]) + parts[1][1:]  # right size, wrong bytes
    for i, part in enumerate([parts[0], corrupted, parts[2]]):
        agent.publish(f"media/snap-1/{i}", dev.dev, part)
    wait_media_ack(receiver, agent, "snap-1", [0, 1, 2])
    with ReceiverStore(receiver.config.receiver) as s:
        assert s.media_path(dev.dev, "snap-1") is None
        assert [r["code"] for r in s.rejections(dev.dev)] == ["media_sha_mismatch"]
    for i, part in enumerate(parts):
        agent.publish(f"media/snap-1/{i}", dev.dev, part)
    wait_media_ack(receiver, agent, "snap-1", [])
    with ReceiverStore(receiver.config.receiver) as s:
        path = s.media_path(dev.dev, "snap-1")
        assert path is not None and path.suffix == ".jpg" and path.read_bytes() == content


def test_missing_ack_lists_exactly_the_holes(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    content = clip(3, 6 * CHUNK - 1)
    parts = chunks_of(content)
    agent.publish("batch", dev.dev, dev.next_batch(records=[manifest_record(dev, "clip-2", content)]))
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 1)
    for i in (0, 2, 3, 5):  # the last index arrives with 1 and 4 missing
        agent.publish(f"media/clip-2/{i}", dev.dev, parts[i])
    wait_media_ack(receiver, agent, "clip-2", [1, 4])
    agent.publish("media/clip-2/4", dev.dev, parts[4])
    # Then nothing more: after media_idle_s (0.5 s here) the receiver asks for what is still missing.
    wait_media_ack(receiver, agent, "clip-2", [1])
    agent.publish("media/clip-2/1", dev.dev, parts[1])
    wait_media_ack(receiver, agent, "clip-2", [])


def test_manifest_without_any_chunk_asks_for_all_after_idle(
    receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    dev = devices[0]
    content = clip(4, 2 * CHUNK)
    agent.publish("batch", dev.dev, dev.next_batch(records=[manifest_record(dev, "clip-3", content)]))
    wait_media_ack(receiver, agent, "clip-3", [0, 1])


def test_chunk_of_wrong_size_is_rejected(receiver: Receiver, agent: AgentSide, devices: list[DeviceSim]) -> None:
    dev = devices[0]
    content = clip(5, 2 * CHUNK)
    agent.publish("batch", dev.dev, dev.next_batch(records=[manifest_record(dev, "clip-4", content)]))
    agent.wait_ack(receiver.signer.key.public_key(), dev.dev, 1)
    agent.publish("media/clip-4/0", dev.dev, content[: CHUNK - 1])
    agent.publish("media/clip-4/7", dev.dev, content[:CHUNK])
    wait_for(lambda: len(rejections(receiver.config.receiver, dev.dev)) == 2, what="2 rejections")
    with ReceiverStore(receiver.config.receiver) as s:
        assert [r["code"] for r in s.rejections(dev.dev)] == ["bad_chunk", "bad_chunk"]


def test_early_chunks_are_capped_per_device_on_disk(
    tmp_path: Any, mosquitto: Any, devices: list[DeviceSim], agent: AgentSide, store_toml: str
) -> None:
    from receiver.config import load_receiver_config
    from tests.receiver.helpers import write_config

    cfg = load_receiver_config(
        write_config(tmp_path, mosquitto.url, devices, extra=f"max_early_media_mb = 1\n{store_toml}")
    )
    dev = devices[0]
    big = 200 * 1024
    with Receiver(cfg) as rx:
        for i in range(6):  # 1.17 MiB of chunks with no manifest: the sixth is over the 1 MiB cap
            agent.publish(f"media/orphan/{i}", dev.dev, clip(10 + i, big))
        r = wait_for(lambda: rejections(cfg.receiver, dev.dev), what="the cap rejection")
        assert [x["code"] for x in r] == ["early_media_full"]
        spooled = cfg.receiver.media_dir / ".spool" / dev.dev / "orphan"
        assert sorted(p.name for p in spooled.iterdir()) == ["0", "1", "2", "3", "4"]
        assert rx.media.counts()["early_bytes"] == 5 * big

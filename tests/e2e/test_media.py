"""Media transport end to end: manifest in the chain, chunks after it, resume, quota."""

from __future__ import annotations

import hashlib
import random
import time
from pathlib import Path

import cbor2
import pytest

from core.interfaces import BufferFull
from tests.peers.agent import Branch
from tests.peers.net import wait_for
from wire.cose import decode_unverified

pytestmark = pytest.mark.slow


def make_file(path: Path, size: int, seed: int) -> bytes:
    data = random.Random(seed).randbytes(size)
    path.write_bytes(data)
    return data


def agent_records(branch: Branch, kind: str) -> list[dict[str, object]]:
    out = []
    for _, cose in branch.agent.store.batches_from(1, 10000):
        out += [r for r in cbor2.loads(decode_unverified(cose)[2])["records"] if r["kind"] == kind]
    return out


def test_clip_reaches_the_centre_verified_and_is_then_released(branch: Branch, tmp_path: Path) -> None:
    branch.start_receiver()
    agent = branch.start_agent(media={"chunk_bytes": 16384})
    data = make_file(tmp_path / "clip.mp4", 300_000, seed=1)
    now = int(time.time() * 1000)
    mid = agent.media_store.add_media(tmp_path / "clip.mp4", camera="dock", media_type="video/mp4",
                                      start_ms=now - 10_000, end_ms=now, reason={"record": "r-1"})
    assert not (tmp_path / "clip.mp4").exists()  # the agent owns the file now
    wait_for(lambda: branch.rx_store().media_path(branch.device, mid) is not None, timeout=30,
             what="the clip at the receiver")
    stored = branch.rx_store().media_path(branch.device, mid)
    assert stored is not None and stored.read_bytes() == data
    manifest, = [r for r in branch.rx_records() if r["kind"] == "media"]
    assert manifest["data"]["sha256"] == hashlib.sha256(data).digest()
    assert manifest["data"]["chunks"] == 19 and manifest["data"]["reason"] == {"record": "r-1"}
    wait_for(lambda: agent.store.backlog()["media_bytes"] == 0, timeout=20, what="media acked complete")


def test_interrupted_upload_resumes_with_only_the_missing_chunks(branch: Branch, tmp_path: Path) -> None:
    branch.start_receiver()
    agent = branch.start_agent(media={"chunk_bytes": 4096, "bandwidth_kbps": 512})
    data = make_file(tmp_path / "c.mp4", 64 * 4096, seed=2)  # 64 chunks at ~16 chunks/s
    now = int(time.time() * 1000)
    mid = agent.media_store.add_media(tmp_path / "c.mp4", camera="dock", media_type="video/mp4",
                                      start_ms=now - 5000, end_ms=now, reason={"rule": "test"})
    wait_for(lambda: agent.uplink.media_chunks_sent >= 24, timeout=30, what="a third of the chunks")
    branch.broker.stop()
    wait_for(lambda: not agent.uplink.connected, what="outage noticed")
    branch.broker.start()
    wait_for(lambda: branch.rx_store().media_path(branch.device, mid) is not None, timeout=60,
             what="the clip completed after the outage")
    assert branch.rx_store().media_path(branch.device, mid).read_bytes() == data  # type: ignore[union-attr]
    # Resumed, not restarted: at most one progress-save interval (16) and a window resent.
    assert agent.uplink.media_chunks_sent < 64 + 32, agent.uplink.media_chunks_sent


def test_quota_evicts_oldest_unheld_with_a_gap_and_refuses_when_all_are_held(branch: Branch,
                                                                             tmp_path: Path) -> None:
    agent = branch.start_agent(media={"quota_mb": 1})  # no receiver: nothing is acked
    now = int(time.time() * 1000)
    ids = []
    for i in range(3):
        make_file(tmp_path / f"s{i}.jpg", 400_000, seed=10 + i)
        ids.append(agent.media_store.add_media(tmp_path / f"s{i}.jpg", camera="till-3", media_type="image/jpeg",
                                               start_ms=now, end_ms=now, reason={"rule": "periodic"}, hold=False))
    state = dict(agent.store.reader().execute("SELECT media_id, state FROM media").fetchall())
    assert state[ids[0]] == "evicted" and state[ids[1]] == state[ids[2]] == "pending"
    assert not list((agent.cfg.media_dir).glob(f"{ids[0]}*"))
    wait_for(lambda: agent.store.last_seq() >= 1 and any(
        g["data"]["media"] == ids[0] for g in agent_records(branch, "gap")), timeout=10, what="a gap record")
    # Held clips (made for a record) are never evicted: when they fill the quota, new media is refused.
    make_file(tmp_path / "h.mp4", 500_000, seed=20)
    agent.media_store.add_media(tmp_path / "h.mp4", camera="dock", media_type="video/mp4", start_ms=now,
                                end_ms=now, reason={"record": "r-9"})
    make_file(tmp_path / "h2.mp4", 600_000, seed=21)
    with pytest.raises(BufferFull, match="quota"):
        agent.media_store.add_media(tmp_path / "h2.mp4", camera="dock", media_type="video/mp4", start_ms=now,
                                    end_ms=now, reason={"record": "r-10"}, media_id="refused-clip")
    wait_for(lambda: any(g["data"]["media"] == "refused-clip" for g in agent_records(branch, "gap")),
             timeout=10, what="a gap record for the refused clip")

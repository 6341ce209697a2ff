"""A full disk costs video, not sales: the real agent on a 64 MiB tmpfs, a real RTSP camera recording
noise at 4 Mbit/s, periodic snapshots, one clip the centre confirmed and one it has not got,
and a till posting sales the whole time, while a filler file squeezes the free space down to
nothing. No sale is refused while media is left, the classes go in the policy's order, every
deletion is a signed gap record at the centre, and the SQLite buffer stays intact.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.doctor.context import Context
from agent.doctor.storage import disk_checks
from core.interfaces import EVICT_ORDER
from tests.buffer.test_diskpolicy import MiB, free_of, set_free
from tests.camera.test_e2e import finals
from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera
from tests.peers.tmpfs import mounted_tmpfs

pytestmark = pytest.mark.slow

RESERVE_MB = 16


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "small", 64) as mnt:
        yield mnt


@pytest.fixture
def noisy_camera(tmp_path: Path) -> Iterator[RtspCamera]:
    cam = RtspCamera(tmp_path / "rtsp", kbps=4000).start()
    try:
        cam.pattern("snow")  # noise: the encoder spends its whole bitrate
        yield cam
    finally:
        cam.stop()


class Till:
    """Posts sales without pause from its own thread and keeps every answer's status."""

    def __init__(self, branch: Branch):
        self.branch = branch
        self.statuses: list[int] = []
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="till", daemon=True)

    def _run(self) -> None:
        i = 0
        with self.branch.client() as c:
            while not self.stop.is_set():
                try:
                    r = self.branch.post([sale(i + k) for k in range(20)], client=c)
                    self.statuses.append(r.status_code)
                except httpx.HTTPError:
                    self.statuses.append(0)
                i += 20
                self.stop.wait(0.02)

    def __enter__(self) -> Till:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join(timeout=30)


def waste(doc: str) -> dict[str, Any]:
    return {"kind": "stock_move", "data": {"type": "waste", "gtin": "09506000134352", "qty": 1, "from": "store",
                                           "to": "dock", "doc": doc}}


def media_rows(agent: Any) -> list[tuple[str, int, str]]:
    return list(agent.store.reader().execute("SELECT media_id, held, state FROM media ORDER BY created_ms"))


def test_full_disk_costs_video_never_a_sale(small_fs: Path, branch: Branch, noisy_camera: RtspCamera) -> None:
    data = small_fs / "data"
    branch.overrides = {"agent": {"data_dir": str(data), "key_file": str(branch.data_dir / "device_key.pem")}}
    branch.start_receiver()
    agent = branch.start_agent(
        cameras=[{"name": "dock", "url": noisy_camera.url("main"), "sub_url": noisy_camera.url("sub"),
                  "stale_after_s": 4, "snapshot_interval_s": 1}],
        recording={"dir": str(small_fs / "recordings"), "segment_s": 1, "io_timeout_s": 3},
        clip_rules=[{"name": "dock-waste", "kind": "stock_move", "match": {"type": "waste"}, "camera": "dock",
                     "pre_s": 3, "post_s": 3}],
        disk={"reserve_mb": RESERVE_MB, "warn_mb": RESERVE_MB + 8, "check_s": 0.5},
    )
    ring_dir = small_fs / "recordings" / "dock"
    wait_for(lambda: len(finals(ring_dir)) >= 4, timeout=40, what="4 s of recording")

    # A clip the centre confirms, then (centre away) three it does not get: ~9 MB of evidence, more
    # than the quarter of the reserve the disk-full path frees, so records never meet a disk with
    # nothing left to delete (then, and only then, 507 would be right).
    wait_for(lambda: len(finals(ring_dir)) >= 8, timeout=40, what="8 s of recording")
    assert branch.post([waste("W-1")]).status_code == 201
    wait_for(lambda: any(h and s == "complete" for _, h, s in media_rows(agent)), timeout=60,
             what="the first clip acked complete by the centre")
    branch.stop_receiver()
    assert branch.post([waste("W-2"), waste("W-3"), waste("W-4")]).status_code == 201
    wait_for(lambda: sum(1 for _, h, s in media_rows(agent) if h and s == "pending") >= 3, timeout=60,
             what="three clips, pending")
    wait_for(lambda: any(not h for _, h, _s in media_rows(agent)), timeout=30, what="a periodic snapshot")

    with Till(branch) as till:
        # Just above the reserve: the camera's own writing takes it below; old recording goes first.
        set_free(small_fs, (RESERVE_MB + 2) * MiB)
        wait_for(lambda: agent.disk.deleted["recording"].files > 0, timeout=60, what="recording deleted")
        assert agent.disk.deleted["evidence_pending"].files == 0
        # Far below: snapshots and the confirmed clip follow, the pending clip stays.
        set_free(small_fs, 4 * MiB)
        wait_for(lambda: agent.disk.deleted["evidence_confirmed"].files > 0, timeout=60,
                 what="the confirmed clip deleted")
        assert agent.disk.deleted["snapshot"].files > 0
        # Nothing free: sales keep going in, and now the evidence the centre lacks gives way.
        set_free(small_fs, 0)
        wait_for(lambda: agent.disk.deleted["evidence_pending"].files > 0, timeout=60,
                 what="pending evidence deleted for records")
        n = len(till.statuses)
        wait_for(lambda: len(till.statuses) >= n + 20, timeout=60, what="more sales after the disk filled")
        # The alert, in the three places a technician or the fleet looks.
        with branch.client() as c:
            assert c.get("/v1/status").json()["disk"]["level"] in ("evidence_pending", "refusing")
            metrics = c.get("/metrics").text
        assert 'coop_disk_deleted_files_total{class="evidence_pending"}' in metrics
        assert "coop_disk_level{level=" in metrics
        found = {f.id: f for f in disk_checks(Context(agent.cfg, agent.status.full_doc()))}
        assert found["disk.reserve"].result == "error" and "did not have yet" in found["disk.reserve"].message
        assert found["disk.evidence-deleted"].result == "error"
    assert till.statuses and set(till.statuses) == {201}, sorted(set(till.statuses))
    assert agent.disk.refusals == 0
    assert free_of(small_fs) < RESERVE_MB * MiB

    # Room again; the centre comes back: every deletion reaches it as a signed gap record.
    set_free(small_fs, 40 * MiB)
    branch.start_receiver()
    wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=120, what="everything acked by the centre")
    gaps = [r["data"] for r in branch.rx_records() if r["kind"] == "gap" and r["data"].get("class")]
    counted = {c: 0 for c in EVICT_ORDER}
    for g in gaps:
        counted[g["class"]] += g.get("segments", 1)
    deleted = {c: agent.disk.deleted[c].files for c in EVICT_ORDER}
    assert counted == deleted, f"gap records {counted} != files deleted {deleted}"
    evicted = {m for m, _h, s in media_rows(agent) if s == "evicted"}
    assert evicted == {g["media"] for g in gaps if g["what"] == "media"}
    # In each pass the classes come in the policy's order.
    passes: dict[int, list[int]] = {}
    for r in branch.rx_records():
        if r["kind"] == "gap" and r["data"].get("class"):
            passes.setdefault(r["at"], []).append(EVICT_ORDER.index(r["data"]["class"]))
    assert all(ranks == sorted(ranks) for ranks in passes.values()), passes
    # Evidence the centre lacked went only on the disk-full path, below the reserve.
    assert all(g["free"] < RESERVE_MB * MiB for g in gaps if g["class"] == "evidence_pending")
    branch.stop_agent()
    with sqlite3.connect(data / "buffer.sqlite3") as conn:
        assert conn.execute("PRAGMA integrity_check").fetchall() == [("ok",)]

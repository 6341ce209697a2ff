"""disk.*, buffer.integrity, key.registered and the running agent's status, on real files: a small
tmpfs filled to the last byte, a buffer written by the real agent, then damaged on disk."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.doctor import identity
from tests.doctor.conftest import Pc
from tests.peers.agent import Branch, sale
from tests.peers.net import wait_for
from tests.peers.tmpfs import mounted_tmpfs


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    """A real 80 MiB file system (tmpfs), so "full" is the kernel's ENOSPC and not a mock."""
    with mounted_tmpfs(tmp_path / "small", 80) as mnt:
        yield mnt


def _fill(mnt: Path, leave_bytes: int) -> None:
    """Write zeros until only leave_bytes are free (the file system's own count)."""
    import os
    st = os.statvfs(mnt)
    n = st.f_bavail * st.f_frsize - leave_bytes
    with open(mnt / "filler", "wb") as f:
        chunk = b"\0" * (1 << 20)
        while n > 0:
            n -= f.write(chunk[: min(n, len(chunk))])


def test_full_disk_fails_disk_free(small_fs: Path, pc: Pc) -> None:
    data = small_fs / "data"
    data.mkdir()
    _, checks = pc.doctor(agent={"data_dir": str(data), "key_file": str(pc.key)})
    assert checks["disk.free"]["result"] == "ok"
    _fill(small_fs, leave_bytes=2 << 20)
    code, checks = pc.doctor(agent={"data_dir": str(data), "key_file": str(pc.key)})
    assert code == 2
    assert checks["disk.free"]["result"] == "error" and "MiB free" in checks["disk.free"]["message"]
    assert "df -h" in checks["disk.free"]["fix"]


def _ingest(branch: Branch, n: int) -> None:
    r = branch.post([sale(i) for i in range(n)])
    assert r.status_code == 201, r.text


def test_running_agent_registered_outage_days_and_integrity(small_fs: Path, branch: Branch) -> None:
    """A real agent on a 80 MiB disk, acked by the real receiver: key.registered ok, the
    status API answers, and 2,000 records in the last hour leave room for only a few days."""
    data = small_fs / "data"
    over = {"agent": {"data_dir": str(data), "key_file": str(branch.data_dir / "device_key.pem")}}
    branch.overrides = over
    branch.start_receiver()
    branch.start_agent()
    _ingest(branch, 2000)
    wait_for(lambda: branch.agent.store.backlog()["records"] == 0, timeout=30, what="the centre's acks")
    pc = Pc.__new__(Pc)
    pc.root = branch.root
    code, checks = pc.doctor(config=branch.write_agent_config())
    assert checks["key.registered"]["result"] == "ok", checks["key.registered"]
    # read from the running agent's status (this machine's clock may be unsynchronised: "clock degraded")
    assert checks["agent.components"]["result"] != "skipped", checks["agent.components"]
    assert checks["broker.publish"]["result"] == "ok"
    outage = checks["disk.outage-days"]
    assert outage["result"] in ("warning", "error") and "records/day" in outage["message"], outage
    assert "7 days" in outage["fix"]
    assert checks["buffer.integrity"]["result"] == "ok"


def test_damaged_buffer_fails_integrity(branch: Branch, pc: Pc) -> None:
    branch.start_agent()
    _ingest(branch, 3000)
    wait_for(lambda: branch.agent.store.last_seq() > 0, timeout=30, what="a sealed batch")
    branch.stop_agent()
    db = branch.data_dir / "buffer.sqlite3"
    conn = sqlite3.connect(db)  # move the WAL's pages into the file, where the damage goes
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    size = db.stat().st_size
    with open(db, "r+b") as f:  # garbage over the middle half of the file (a bad sector, a torn disk)
        f.seek(size // 4)
        f.write(b"\xa5" * (size // 2))
    code, checks = pc.doctor(config=branch.write_agent_config())
    assert code == 2
    integrity = checks["buffer.integrity"]
    assert integrity["result"] == "error", integrity
    assert "do not delete it" in integrity["fix"]


def test_no_central_ack_for_long_is_a_registration_problem(branch: Branch, pc: Pc,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """The receiver does not know this device (not registered): it never acks. The 15 minutes
    of ACK_STALE_S are lowered for the test; the refusal itself is the real receiver's."""
    branch.start_receiver(devices=[])
    branch.start_agent()
    _ingest(branch, 10)
    wait_for(lambda: branch.agent.store.last_seq() > 0, timeout=30, what="a sealed batch")
    monkeypatch.setattr(identity, "ACK_STALE_S", 0)
    _, checks = pc.doctor(config=branch.write_agent_config())
    reg = checks["key.registered"]
    assert reg["result"] == "error" and "never acked" in reg["message"], reg
    assert "register the device at the centre" in reg["fix"]

"""disk.reserve and disk.evidence-deleted on a real small file system: free space against
[disk] warn_mb and reserve_mb, the running agent's level when it answers, and the gap records
of deleted evidence read from the buffer."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.config.loader import parse_config
from agent.doctor.context import Context
from agent.doctor.storage import disk_checks
from buffer.store import Store
from buffer.writer import SealOptions
from core.doctor import Finding
from tests.buffer.test_diskpolicy import MiB, set_free
from tests.peers.tmpfs import mounted_tmpfs
from wire.cose import Signer


@pytest.fixture
def small_fs(tmp_path: Path) -> Iterator[Path]:
    with mounted_tmpfs(tmp_path / "disk", 32) as mnt:
        yield mnt


def findings(data: Path, status: dict[str, object] | None = None) -> dict[str, Finding]:
    cfg = parse_config({"agent": {"device": "coop-a/b1/agent-1", "data_dir": str(data)},
                        "disk": {"reserve_mb": 8, "warn_mb": 12}})
    return {f.id: f for f in disk_checks(Context(cfg, status))}


def test_levels_from_free_space_and_from_the_running_agent(small_fs: Path) -> None:
    data = small_fs / "data"
    data.mkdir()
    set_free(small_fs, 20 * MiB)
    assert findings(data)["disk.reserve"].result == "ok"
    set_free(small_fs, 10 * MiB)
    low = findings(data)["disk.reserve"]
    assert low.result == "warning" and "warn_mb" in low.message and low.fix
    set_free(small_fs, 6 * MiB)
    below = findings(data)["disk.reserve"]
    assert below.result == "warning" and "kept for records" in below.message
    # The running agent knows what it deleted: its level wins over the free space seen now.
    running = findings(data, {"disk": {"level": "evidence_pending"}})["disk.reserve"]
    assert running.result == "error" and "did not have yet" in running.message
    refusing = findings(data, {"disk": {"level": "refusing"}})["disk.reserve"]
    assert refusing.result == "error" and "507" in refusing.message


def test_deleted_evidence_in_the_buffer_is_a_failure(small_fs: Path) -> None:
    data = small_fs / "data"
    store = Store(data / "buffer.sqlite3", Signer(Ed25519PrivateKey.generate()),
                  SealOptions(device="coop-a/b1/agent-1", batch_max_records=500, batch_max_age_s=0.05,
                              max_payload_bytes=262144, max_db_bytes=0)).start()
    try:
        _evidence_lost(data, store)
    finally:
        store.close()


def _evidence_lost(data: Path, store: Store) -> None:
    assert findings(data)["disk.evidence-deleted"].result == "ok"
    now = int(time.time() * 1000)
    store.submit([{"kind": "gap", "at": now, "data": {
        "what": "recording", "class": "recording", "camera": "dock", "reason": "disk pressure"}}], timeout=10)
    assert findings(data)["disk.evidence-deleted"].result == "ok"  # ordinary recording is no loss of evidence
    store.submit([{"kind": "gap", "at": now, "data": {
        "what": "media", "class": "evidence_pending", "camera": "dock", "media": "m1", "reason": "disk pressure"}}],
        timeout=10)
    lost = findings(data)["disk.evidence-deleted"]
    assert lost.result == "error" and "dock" in lost.message

"""The fleet simulator speaks the spec to a real centre, and its checks catch what they claim to.

Small runs of bench/bench_fleet.py scenarios against a real Mosquitto and real `coop-receiver`
processes: the storm drains exactly once; impatient branches resend and still store nothing
twice; the exactly-once check fails when the database lost a batch.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from bench import bench_fleet
from bench.fleet import Policy

pytestmark = pytest.mark.slow


def test_a_small_storm_drains_exactly_once(tmp_path: Path) -> None:
    policy = Policy()
    branches = bench_fleet.make_branches(12, policy)
    bench_fleet.seal_backlog(branches, 600, 100)
    r = bench_fleet.storm_once(tmp_path, "sqlite:1", branches, policy, timeout=120)
    assert r["drained"] and r["exactly_once"], r
    assert r["stored_records"] == 12 * 600
    assert r["resent"] == 0  # patient branches never resend to a live session that acks
    assert all(b.acked == len(b.batches) for b in branches)


def test_impatient_branches_resend_and_nothing_is_stored_twice(tmp_path: Path) -> None:
    policy = Policy(window=4, resend="impatient", resend_s=0.3, reconnect_every_s=0.2)
    branches = bench_fleet.make_branches(6, policy)
    bench_fleet.seal_backlog(branches, 8000, 100)
    r = bench_fleet.storm_once(tmp_path, "sqlite:1", branches, policy, timeout=180)
    assert r["drained"] and r["exactly_once"], r
    assert r["resent"] > 0 and r["connects"] > 6, r


def test_the_exactly_once_count_sees_a_lost_batch(tmp_path: Path) -> None:
    policy = Policy()
    branches = bench_fleet.make_branches(2, policy)
    bench_fleet.seal_backlog(branches, 300, 100)
    centre = bench_fleet.Centre(tmp_path / "c", "sqlite", 1, branches)
    centre.work.mkdir(parents=True)
    bench_fleet.generate_key_file(centre.work / "central.pem")
    bench_fleet.reset(branches, centre.central_public(), policy)
    centre.start()
    fleet = bench_fleet.Fleet(branches, "127.0.0.1", centre.broker.port if centre.broker else 0)
    try:
        fleet.connect_all()
        assert fleet.run_until(lambda: all(b.done for b in branches), 60)
    finally:
        fleet.close()
        centre.stop()
    assert centre.stored() == (600, 6)
    with sqlite3.connect(centre.work / "rx.sqlite3") as conn:
        conn.execute("DELETE FROM records WHERE seq = 2")
    assert centre.stored()[0] < 600


def test_the_raw_copy_floor_and_the_compression_bench_count_every_row() -> None:
    """The ingest floor (bench/fleet_copy.py) and bench_pg_compression on a real PostgreSQL: every row, both methods."""
    from bench.bench_pg_compression import run
    from bench.fleet_copy import raw_copy

    branches = bench_fleet.make_branches(3, Policy())
    bench_fleet.seal_backlog(branches, 300, 100)
    r = raw_copy(branches)
    assert r["records"] == 900 and r["postgres_cpu_us_per_record"] >= 0, r
    rows = [(did, seq, b"\0" * 32, 1, 100, 1, cose) for did, b in enumerate(branches, 1)
            for seq, cose in enumerate(b.batches, 1)]
    runs = run(rows, 900, ["pglz", "lz4"], 2)
    assert [x["method"] for x in runs] == ["pglz", "lz4"] and all(x["table_mb"] > 0 for x in runs), runs

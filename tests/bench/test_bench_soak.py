"""The soak benchmark, shortened (issue 13, "Long runs"): two and a half minutes of the whole
branch under mixed load with the broker restarting, against real peers (bench/bench_soak.py).
The one-hour run is `python -m bench.bench_soak --minutes 60` (docs/benchmarks.md)."""

from __future__ import annotations

import io
import json
import statistics
from pathlib import Path

import pytest

from bench import bench_soak
from tests.peers.mixed import LoadPlan

pytestmark = pytest.mark.slow


def test_a_short_soak_loses_nothing_and_holds_its_descriptors(tmp_path: Path) -> None:
    plan = LoadPlan(broker_every_s=40, broker_down_s=2, clip_every_s=20)
    # 60 s of warm-up: each thread that reads the buffer opens its own SQLite connection (two
    # descriptors) the first time; the command workers' first clips and the media upload do so
    result = bench_soak.run(2.5, 5.0, 60.0, plan, tmp_path / "run", log=io.StringIO())
    v = result["verdict"]
    assert not result["problems"], result["problems"]
    assert v["sales_lost"] == v["committed_lost"] == v["duplicates"] == v["unexpected"] == 0
    assert v["sales_acked"] > 300 and v["notes_at_centre"] == v["notes_sent"] >= 10
    assert v["weights_at_centre"] == v["weights_placed"] >= 10
    assert v["media_announced"] >= 3 and v["media_missing"] == v["media_bad"] == 0
    assert result["broker_restarts"] >= 2
    assert result["sales_refused"] == []
    # descriptors after the warm-up: flat. A clip cut's pipes or a reconnect come and go, so
    # compare medians: one descriptor kept per clip (6) or per broker restart (3) would show.
    fds = [s["fds"] for s in result["samples"] if s["t_s"] >= result["warmup_s"]]
    third = len(fds) // 3
    assert third >= 3 and statistics.median(fds[-third:]) <= statistics.median(fds[:third]) + 1, fds
    assert all(s["rss_mb"] > 0 and s["pss_tree_mb"] >= s["uss_tree_mb"] > 0 for s in result["samples"])
    bench_soak.write(result, tmp_path / "soak")
    saved = json.loads((tmp_path / "soak.json").read_text())
    assert saved["verdict"] == v
    assert len((tmp_path / "soak.csv").read_text().splitlines()) == len(result["samples"]) + 1

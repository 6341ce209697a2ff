"""The centre-CPU bench: its stage attribution, the receiver's profile hook, and a tiny real run.

The attribution is checked on real cProfile output of a known call graph (a leaf called once
from one stage and twice from another must split its time 1:2). The tiny run drains a small
storm into real `coop-receiver run` processes, plain and profiled, and checks that every
thread and the verifier process wrote a profile and that the stages add up to no more than
the receiver's own CPU from wait4().
"""

from __future__ import annotations

import cProfile
import os
import pstats
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from bench import bench_centre_cpu, bench_fleet
from bench.centre_stages import Attribution, Rule
from bench.fleet import Policy
from receiver import profiling

HERE = "tests/bench/test_bench_centre_cpu.py"


def _busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def _leaf() -> None:
    _busy(0.02)


def _stage_a() -> None:
    _leaf()


def _stage_b() -> None:
    _leaf()
    _leaf()


def _root() -> None:
    _stage_a()
    _stage_b()
    _busy(0.02)  # the root's own time: no rule names it


def test_a_shared_leaf_is_split_by_its_callers_and_unnamed_roots_are_other() -> None:
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    _root()
    prof.disable()
    rules = [Rule("A", f"{HERE}:_stage_a"), Rule("B", f"{HERE}:_stage_b")]
    a = Attribution(pstats.Stats(prof), rules)
    assert a.stages["B"] == pytest.approx(2 * a.stages["A"], rel=0.25)
    assert a.stages["A"] == pytest.approx(0.02, rel=0.5)
    assert a.stages["other"] == pytest.approx(0.02, rel=0.5)  # _root's own loop, plus the profiler's bits
    # a caller-specific rule takes precedence for that edge only
    a2 = Attribution(pstats.Stats(prof), [Rule("leaf-from-b", f"{HERE}:_leaf", f"{HERE}:_stage_b"), *rules])
    assert a2.stages["leaf-from-b"] == pytest.approx(0.04, rel=0.5)
    assert a2.stages["A"] == pytest.approx(0.02, rel=0.5)


def _recurse(n: int) -> None:
    if n:
        _recurse(n - 1)
    else:
        _busy(0.02)


def _stage_c() -> None:
    _recurse(5)


def test_recursion_goes_to_the_stage_of_the_outer_caller() -> None:
    prof = cProfile.Profile(time.thread_time)
    prof.enable()
    _stage_c()
    prof.disable()
    a = Attribution(pstats.Stats(prof), [Rule("C", f"{HERE}:_stage_c")])
    assert a.stages["C"] == pytest.approx(0.02, rel=0.5)
    assert a.stages.get("other", 0.0) < 0.2 * a.stages["C"], a.stages


def test_the_hook_is_off_without_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(profiling.ENV, raising=False)
    before = threading.Thread.run
    profiling.install("receiver")
    profiling.install_child("verifier")
    assert threading.Thread.run is before
    assert sys.getprofile() is None


def test_the_hook_profiles_every_thread_of_a_process(tmp_path: Path) -> None:
    code = (
        "import threading, time\n"
        "from receiver import profiling\n"
        "profiling.install('receiver')\n"
        "def spin():\n"
        "    end = time.thread_time() + 0.05\n"
        "    while time.thread_time() < end: pass\n"
        "t = threading.Thread(target=spin, name='spinner'); t.start(); t.join()\n"
    )
    env = {**os.environ, profiling.ENV: str(tmp_path)}
    subprocess.run([sys.executable, "-c", code], env=env, check=True, timeout=60)
    names = sorted(p.name.split("-", 2)[2] for p in tmp_path.glob("*.prof"))
    assert names == ["main.prof", "spinner.prof"]
    spinner = next(tmp_path.glob("*-spinner.prof"))
    assert sum(v[2] for v in pstats.Stats(str(spinner)).stats.values()) >= 0.04  # type: ignore[attr-defined]


@pytest.mark.slow
def test_a_tiny_storm_profiled_adds_up_within_the_receivers_cpu(tmp_path: Path) -> None:
    policy = Policy()
    branches = bench_fleet.make_branches(6, policy)
    bench_fleet.seal_backlog(branches, 1000, 100)
    inproc = bench_centre_cpu.unprofiled_checks(branches)
    assert all(inproc[s] > 0 for s in bench_centre_cpu.UNPROFILED_STAGES), inproc
    [r] = bench_centre_cpu.measure(tmp_path / "work", ["sqlite:1"], branches, policy, 180, tmp_path / "prof",
                                   inproc=inproc)
    for run in (r["plain"], r["profiled"]):
        assert run["drained"] and run["exactly_once"], run
        assert run["records"] == 6000
    threads = r["threads_us_per_record_raw"]
    assert {"receiver:main", "receiver:receiver-worker", "verifier:main"} <= set(threads), threads
    assert any(t.startswith("receiver:paho") for t in threads), threads
    stages = r["stages_us_per_record_raw"]
    for stage in ("mqtt", "verifier_ipc", "decode", "determinism", "ed25519_verify", "record_checks",
                  "chain", "database", "commit", "ack"):
        assert stages[stage] > 0, (stage, stages)
    # the stages are the profiled processes' own CPU: never more than wait4 says they used
    assert r["stages_sum_us_per_record"] <= r["profiled_total_us_per_record"] * 1.02, r
    assert sum(stages.values()) == pytest.approx(r["stages_sum_us_per_record"], rel=0.01)
    assert 0 <= r["unaccounted_share"] < 1
    factors = r["overhead_factor_by_process"]
    assert set(factors) == {"receiver", "verifier"} and all(f is not None and f > 0.8 for f in factors.values()), r
    # scaled back per process, the stages fit within the plain run's CPU
    assert sum(r["stages_us_per_record_scaled"].values()) <= r["plain_total_us_per_record"] * 1.02, r
    # the estimate takes the verifier's checks from the unprofiled timings, and the rest of each process's
    # CPU from its scaled profile: never less in all than the scaled stages (more only when, on a tiny
    # and noisy run, the warm in-process timings exceed what the verifier process used)
    est = r["stages_us_per_record_estimate"]
    assert all(est[s] >= inproc[s] for s in bench_centre_cpu.UNPROFILED_STAGES), (est, inproc)
    assert sum(est.values()) >= sum(r["stages_us_per_record_scaled"].values()) * 0.98, r

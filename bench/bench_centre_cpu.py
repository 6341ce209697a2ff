"""The centre's CPU per record, and where it goes, measured on the real receiver processes.

A reconnect storm (bench/fleet.py: branches holding a sealed backlog, connecting at once)
drains into real `coop-receiver run` processes (main process with paho's network thread
and the worker thread, plus the verifier process it spawns), once plain and once with
COOP_RECEIVER_PROFILE set (receiver/profiling.py: cProfile in every thread, clocked by the
thread's own CPU time). Both runs stop the receiver with SIGTERM and take its whole
lifetime CPU, user + system, from wait4() (the verifier child is reaped by the receiver,
so its CPU is included). The profiles are summed into stages by bench/centre_stages.py.

Reported per setup, as µs of CPU per stored record:
  - total CPU, plain and profiled;
  - the unaccounted share: profiled total minus the sum of the stages (interpreter start
    and imports before the profile starts, in both processes, the resource tracker);
  - the profiler's overhead factor: the stages' sum over the plain total less that
    unaccounted part (which the profiler does not inflate);
  - each stage as profiled ("raw"), and scaled by 1/overhead so that stages + unaccounted
    add up to the plain total (assumes the profiler inflates every stage alike, which it
    does not: Python-call-heavy stages inflate more than those in C; both are shown).

CPU time per record is much less sensitive than wall time to other programs on a shared
machine (it counts only the receiver's own running time), but not immune: cache and
frequency effects remain. The load average is recorded with each run.

  .venv/bin/python -m bench.bench_centre_cpu --branches 100 --backlog 2000 --setups sqlite:1 pg:1
  # after editing the RULES in bench/centre_stages.py, re-attribute kept profiles:
  .venv/bin/python -m bench.bench_centre_cpu --profiles /tmp/cpu-prof ...      # keeps them
  .venv/bin/python -m bench.bench_centre_cpu --from-profiles /tmp/cpu-prof --show-unmatched
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench import record
from bench.bench_fleet import Centre, cpu_s, make_branches, raise_fd_limit, reset, seal_backlog
from bench.centre_stages import STAGES, attribute_dir
from bench.fleet import Branch, Fleet, Policy
from receiver.profiling import ENV
from tests.peers.net import wait_for
from wire.keys import generate_key_file

STOP_TIMEOUT_S = 60.0


def _exited(pid: int) -> bool:
    """Whether pid is a zombie (exited, not yet reaped) or gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def _reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for a receiver that was sent SIGTERM; its lifetime CPU (self + reaped children), seconds.

    wait4 rather than Popen.wait: only wait4 returns the resource usage of the child.
    """
    try:
        wait_for(lambda: _exited(proc.pid), timeout=STOP_TIMEOUT_S, interval=0.05, what=f"receiver {proc.pid} to exit")
    except AssertionError:
        proc.kill()  # its CPU is still counted; the result says it did not stop in time
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return float(ru.ru_utime + ru.ru_stime)


def drain(work: Path, setup: str, branches: list[Branch], policy: Policy, timeout: float,
          profile_dir: Path | None) -> dict[str, Any]:
    """One storm into fresh peers; the receivers' lifetime and storm-window CPU."""
    store, n = setup.split(":")
    centre = Centre(work, store, int(n), branches)
    work.mkdir(parents=True, exist_ok=True)
    generate_key_file(work / "central.pem")
    reset(branches, centre.central_public(), policy)
    load_before = os.getloadavg()
    if profile_dir is not None:
        os.environ[ENV] = str(profile_dir)
    try:
        centre.start()  # the receivers inherit the variable (and their verifier children from them)
    finally:
        os.environ.pop(ENV, None)
    fleet = Fleet(branches, "127.0.0.1", centre.broker.port if centre.broker else 0)
    try:
        cpu0 = sum(cpu_s(p.pid) for p in centre.procs)
        t0 = time.monotonic()
        fleet.connect_all()
        ok = fleet.run_until(lambda: all(b.done for b in branches), timeout, None)
        elapsed = time.monotonic() - t0
        window = sum(cpu_s(p.pid) for p in centre.procs) - cpu0
        records, batches = centre.stored()
        for p in centre.procs:
            p.send_signal(signal.SIGTERM)
        lifetime = sum(_reap(p) for p in centre.procs)
    finally:
        fleet.close()
        centre.stop()
    return {
        "drained": ok, "seconds": round(elapsed, 2), "records": records, "batches": batches,
        "exactly_once": records == sum(b.total_records for b in branches)
        and batches == sum(len(b.batches) for b in branches),
        "lifetime_cpu_s": round(lifetime, 3), "window_cpu_s": round(window, 3),
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def import_cpu_s() -> float:
    """CPU of an interpreter that only imports what `coop-receiver run` imports before its profile starts."""
    proc = subprocess.Popen([sys.executable, "-c", "import receiver.cli, receiver.server"])
    _, _, ru = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return float(ru.ru_utime + ru.ru_stime)


def analyse(plain: dict[str, Any] | None, profiled: dict[str, Any], prof_dir: Path,
            show_unmatched: bool = False) -> dict[str, Any]:
    """Stages in µs per record, raw and scaled, with the overhead factor and the unaccounted share."""
    attr = attribute_dir(prof_dir)
    stages_s: dict[str, float] = attr["stages_s"]  # type: ignore[assignment]
    per = 1e6 / max(1, profiled["records"])
    total_prof = profiled["lifetime_cpu_s"]
    staged = sum(stages_s.values())
    out: dict[str, Any] = {
        "profiled_total_us_per_record": round(total_prof * per, 2),
        "stages_sum_us_per_record": round(staged * per, 2),
        "unaccounted_share": round(1 - staged / total_prof, 4) if total_prof > 0 else None,
        "stages_us_per_record_raw": {s: round(v * per, 2) for s, v in stages_s.items()},
        "threads_us_per_record_raw": {t: round(v * per, 2) for t, v in attr["threads_s"].items()},  # type: ignore[attr-defined]
    }
    if plain is not None:
        # The unaccounted CPU (before the profile starts) is not inflated by it, and is about the
        # same in the plain run: the overhead factor compares what the profile covers.
        plain_total = plain["lifetime_cpu_s"] * 1e6 / max(1, plain["records"])
        unaccounted = (total_prof - staged) * per
        covered = plain_total - unaccounted
        factor = staged * per / covered if covered > 0 else None
        out["plain_total_us_per_record"] = round(plain_total, 2)
        out["plain_window_us_per_record"] = round(plain["window_cpu_s"] * 1e6 / max(1, plain["records"]), 2)
        out["total_ratio"] = round(total_prof * per / plain_total, 3) if plain_total > 0 else None
        out["overhead_factor"] = round(factor, 3) if factor else None
        if factor:
            out["stages_us_per_record_scaled"] = {s: round(v * per / factor, 2) for s, v in stages_s.items()}
    if show_unmatched:
        out["other_top_us_per_record"] = {k: round(v * per, 2) for k, v in attr["other_top_s"].items()}  # type: ignore[attr-defined]
    return out


def table(setup: str, a: dict[str, Any]) -> str:
    raw = a["stages_us_per_record_raw"]
    scaled = a.get("stages_us_per_record_scaled", {})
    total = sum(raw.values()) or 1.0
    lines = [f"{setup}: plain {a.get('plain_total_us_per_record')} µs/record, profiled "
             f"{a['profiled_total_us_per_record']} (overhead x{a.get('overhead_factor')}), stages sum "
             f"{a['stages_sum_us_per_record']}, unaccounted {a['unaccounted_share']:.1%}",
             f"  {'stage':<16}{'raw µs':>10}{'scaled µs':>11}{'share':>8}"]
    for s in STAGES:
        lines.append(f"  {s:<16}{raw.get(s, 0):>10.2f}{scaled.get(s, 0):>11.2f}{raw.get(s, 0) / total:>8.1%}")
    return "\n".join(lines)


def from_profiles(root: Path, show_unmatched: bool) -> None:
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        a = analyse(meta.get("plain"), meta["profiled"], meta_path.parent, show_unmatched)
        print(table(meta["setup"], a))
        if show_unmatched:
            print("  'other', by function:", json.dumps(a["other_top_us_per_record"], indent=1))


def measure(work: Path, setups: list[str], branches: list[Branch], policy: Policy, timeout: float,
            profiles: Path, show_unmatched: bool = False) -> list[dict[str, Any]]:
    results = []
    for setup in setups:
        name = setup.replace(":", "-")
        print(f"  {setup}: plain run", flush=True)
        plain = drain(work / f"{name}-plain", setup, branches, policy, timeout, None)
        print(f"  {setup}: profiled run", flush=True)
        prof_dir = profiles / name
        prof_dir.mkdir(parents=True, exist_ok=True)
        profiled = drain(work / f"{name}-profiled", setup, branches, policy, timeout, prof_dir)
        (prof_dir / "meta.json").write_text(json.dumps({"setup": setup, "plain": plain, "profiled": profiled}))
        a = analyse(plain, profiled, prof_dir, show_unmatched)
        print(table(setup, a), flush=True)
        results.append({"setup": setup, "plain": plain, "profiled": profiled, **a})
    return results


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--branches", type=int, default=100)
    ap.add_argument("--backlog", type=int, default=2000, help="records each branch holds")
    ap.add_argument("--per-batch", type=int, default=500)
    ap.add_argument("--setups", nargs="+", default=["sqlite:1", "pg:1"], help="STORE:RECEIVERS, e.g. pg:1")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--timeout", type=float, default=1800.0)
    ap.add_argument("--profiles", type=Path, default=None, help="keep the profiles here (default: discarded)")
    ap.add_argument("--from-profiles", type=Path, default=None, help="only re-attribute profiles kept by --profiles")
    ap.add_argument("--show-unmatched", action="store_true", help="list the functions whose time went to 'other'")
    record.add_argument(ap)
    args = ap.parse_args(argv)
    if args.from_profiles is not None:
        from_profiles(args.from_profiles, args.show_unmatched)
        return
    raise_fd_limit()
    run = record.Run("centre-cpu", args.results)
    policy = Policy(window=args.window)
    with tempfile.TemporaryDirectory(prefix="coop-centre-cpu-") as tmp:
        work = Path(tmp)
        branches = make_branches(args.branches, policy)
        seal_backlog(branches, args.backlog, args.per_batch)
        imports = import_cpu_s()
        print(f"  interpreter start + imports of the receiver: {imports:.2f} s CPU", flush=True)
        results = measure(work, args.setups, branches, policy, args.timeout, args.profiles or work / "profiles",
                          args.show_unmatched)
        run.write({"branches": args.branches, "backlog": args.backlog, "per_batch": args.per_batch,
                   "import_cpu_s": round(imports, 3), "runs": results})


if __name__ == "__main__":
    main()

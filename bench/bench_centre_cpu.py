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
  - the profiler's overhead factor per process (main, verifier): the process's stages over
    its plain CPU less the unaccounted part (which the profiler does not inflate), both read
    from /proc just before the SIGTERM;
  - each stage as profiled ("raw"), and scaled by its process's 1/overhead so that the
    stages add up to the plain run's CPU (assumes the profiler inflates every stage of a
    process alike, which it does not: Python-call-heavy stages inflate more than those in C;
    the in-process unprofiled timings of the verifier's stages are the cross-check).

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
from bench.bench_fleet import Centre, make_branches, raise_fd_limit, reset, seal_backlog
from bench.centre_stages import STAGES, attribute_dir
from bench.fleet import Branch, Fleet, Policy
from bench.procs import exited, live_cpu_s, own_cpu_s, tree
from receiver.profiling import ENV
from tests.peers.net import wait_for
from wire.keys import generate_key_file

STOP_TIMEOUT_S = 60.0


def roles_cpu_s(pid: int) -> dict[str, float]:
    """CPU so far of a receiver's main process and of its children (the verifier, the idle resource tracker)."""
    return {"receiver": own_cpu_s(pid), "verifier": sum(own_cpu_s(p) for p in tree(pid)[1:])}


def _reap(proc: subprocess.Popen[bytes]) -> float:
    """Wait for a receiver that was sent SIGTERM; its lifetime CPU (self + reaped children), seconds.

    wait4 rather than Popen.wait: only wait4 returns the resource usage of the child.
    """
    try:
        wait_for(lambda: exited(proc.pid), timeout=STOP_TIMEOUT_S, interval=0.05, what=f"receiver {proc.pid} to exit")
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
        cpu0 = sum(live_cpu_s(p.pid) for p in centre.procs)
        t0 = time.monotonic()
        fleet.connect_all()
        ok = fleet.run_until(lambda: all(b.done for b in branches), timeout, None)
        elapsed = time.monotonic() - t0
        window = sum(live_cpu_s(p.pid) for p in centre.procs) - cpu0
        records, batches = centre.stored()
        roles: dict[str, float] = {}
        for p in centre.procs:
            for role, v in roles_cpu_s(p.pid).items():
                roles[role] = roles.get(role, 0.0) + v
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
        "before_stop_cpu_s": {r: round(v, 3) for r, v in roles.items()},
        "load_before": [round(x, 2) for x in load_before], "load_after": [round(x, 2) for x in os.getloadavg()],
    }


def unprofiled_checks(branches: list[Branch], sample: int = 40, rounds: int = 3) -> dict[str, float]:
    """The verifier's stages timed in this process without a profiler, on the fleet's own batches.

    µs of thread CPU per record, the best of `rounds`: a cross-check of the profile's
    scaled figures for the stages that are pure functions of the batch bytes.
    """
    import cbor2

    from wire.batches import _rows, check_batch
    from wire.cose import kid_for
    from wire.deterministic import is_deterministic

    items = []
    for b in branches:
        pub = b.key.public_key()
        for cose in b.batches:
            obj = cbor2.loads(cose)
            protected, _, payload, sig = obj.value
            decoded = cbor2.loads(payload)
            items.append((b.dev, cose, {kid_for(pub): pub}, protected, payload, sig, decoded))
            if len(items) >= sample:
                break
        if len(items) >= sample:
            break
    records = sum(len(it[6]["records"]) for it in items)

    def best(fn: Any) -> float:
        runs = []
        for _ in range(rounds):
            t0 = time.thread_time()
            for it in items:
                fn(it)
            runs.append(time.thread_time() - t0)
        return round(min(runs) / records * 1e6, 2)

    def verify(it: Any) -> None:
        next(iter(it[2].values())).verify(it[5], cbor2.dumps(["Signature1", it[3], b"", it[4]]))

    return {
        "check_batch": best(lambda it: check_batch(it[1], it[0], it[2])),
        "decode": best(lambda it: (cbor2.loads(it[1]), cbor2.loads(it[4]))),
        "ed25519_verify": best(verify),
        "determinism": best(lambda it: is_deterministic(it[6], it[4])),
        "record_checks": best(lambda it: _rows(it[6]["records"], it[6]["seq"])),
    }


def import_cpu_s() -> float:
    """CPU of an interpreter that only imports what `coop-receiver run` imports before its profile starts."""
    proc = subprocess.Popen([sys.executable, "-c", "import receiver.cli, receiver.server"])
    _, _, ru = os.wait4(proc.pid, 0)
    proc.returncode = 0
    return float(ru.ru_utime + ru.ru_stime)


UNPROFILED_STAGES = ("decode", "determinism", "ed25519_verify", "record_checks")


def analyse(plain: dict[str, Any] | None, profiled: dict[str, Any], prof_dir: Path,
            show_unmatched: bool = False, inproc: dict[str, float] | None = None) -> dict[str, Any]:
    """Stages in µs per record, raw and scaled per process, with the overhead factors and the unaccounted share."""
    attr = attribute_dir(prof_dir)
    stages_s: dict[str, float] = attr["stages_s"]  # type: ignore[assignment]
    by_role: dict[str, dict[str, float]] = attr["by_role_s"]  # type: ignore[assignment]
    per = 1e6 / max(1, profiled["records"])
    total_prof = profiled["lifetime_cpu_s"]
    staged = sum(stages_s.values())
    out: dict[str, Any] = {
        "profiled_total_us_per_record": round(total_prof * per, 2),
        "stages_sum_us_per_record": round(staged * per, 2),
        "unaccounted_share": round(1 - staged / total_prof, 4) if total_prof > 0 else None,
        "stages_us_per_record_raw": {s: round(v * per, 2) for s, v in stages_s.items()},
        "threads_us_per_record_raw": {t: round(v * per, 2) for t, v in attr["threads_s"].items()},  # type: ignore[attr-defined]
        "calls_per_record": {s: round(v / max(1, profiled["records"]), 2)
                             for s, v in attr["calls"].items()},  # type: ignore[attr-defined]
    }
    if plain is not None:
        plain_per = 1e6 / max(1, plain["records"])
        plain_total = plain["lifetime_cpu_s"] * plain_per
        out["plain_total_us_per_record"] = round(plain_total, 2)
        out["plain_window_us_per_record"] = round(plain["window_cpu_s"] * plain_per, 2)
        out["total_ratio"] = round(total_prof * per / plain_total, 3) if plain_total > 0 else None
        # Per process: the profiler inflates the verifier (many small Python calls) and the main
        # process differently. The part of a process's CPU its profile does not cover (interpreter
        # start and imports) is not inflated, and is about the same in the plain run.
        scaled: dict[str, float] = dict.fromkeys(stages_s, 0.0)
        factors: dict[str, float | None] = {}
        for role, rs in by_role.items():
            role_staged = sum(rs.values()) * per
            role_prof = profiled["before_stop_cpu_s"].get(role, 0.0) * per
            role_plain = plain["before_stop_cpu_s"].get(role, 0.0) * plain_per
            covered = role_plain - max(0.0, role_prof - role_staged)
            factor = role_staged / covered if covered > 0 and role_staged > 0 else None
            factors[role] = round(factor, 3) if factor else None
            out.setdefault("plain_process_us_per_record", {})[role] = round(role_plain, 2)
            out.setdefault("profiled_process_us_per_record", {})[role] = round(role_prof, 2)
            for s, v in rs.items():
                scaled[s] += v * per / factor if factor else 0.0
        out["overhead_factor_by_process"] = factors
        out["stages_us_per_record_scaled"] = {s: round(v, 2) for s, v in scaled.items()}
        if inproc is not None and factors.get("verifier"):
            out["stages_us_per_record_estimate"] = _estimate(by_role, factors, per, inproc)
    if show_unmatched:
        out["other_top_us_per_record"] = {k: round(v * per, 2) for k, v in attr["other_top_s"].items()}  # type: ignore[attr-defined]
    return out


def _estimate(by_role: dict[str, dict[str, float]], factors: dict[str, float | None], per: float,
              inproc: dict[str, float]) -> dict[str, float]:
    """The best estimate: the main process's stages scaled (overhead ~1.5x, little distortion);
    in the verifier process, the stages timed unprofiled in-process, and the rest of its CPU
    (IPC, the batch hash, its start) split as its scaled profile splits it."""
    out: dict[str, float] = {}
    for role, rs in by_role.items():
        factor = factors.get(role)
        if not factor:
            continue
        scaled = {s: v * per / factor for s, v in rs.items()}
        if role == "verifier":
            total = sum(scaled.values())
            fixed = {s: inproc[s] for s in UNPROFILED_STAGES}
            rest_scaled = sum(v for s, v in scaled.items() if s not in fixed)
            rest = max(0.0, total - sum(fixed.values()))
            scaled = {s: fixed[s] if s in fixed else (v / rest_scaled * rest if rest_scaled else 0.0)
                      for s, v in scaled.items()}
        for s, v in scaled.items():
            out[s] = out.get(s, 0.0) + v
    return {s: round(v, 2) for s, v in out.items()}


def table(setup: str, a: dict[str, Any]) -> str:
    raw = a["stages_us_per_record_raw"]
    scaled = a.get("stages_us_per_record_scaled", {})
    calls = a.get("calls_per_record", {})
    estimate = a.get("stages_us_per_record_estimate", {})
    est_total = sum(estimate.values()) or 1.0
    lines = [f"{setup}: plain {a.get('plain_total_us_per_record')} µs/record "
             f"(by process {a.get('plain_process_us_per_record')}), profiled {a['profiled_total_us_per_record']}, "
             f"overhead by process {a.get('overhead_factor_by_process')}, stages sum "
             f"{a['stages_sum_us_per_record']}, unaccounted {a['unaccounted_share']:.1%}",
             f"  {'stage':<16}{'raw µs':>10}{'py calls':>10}{'scaled µs':>11}{'estimate µs':>13}{'share':>8}"]
    for s in STAGES:
        lines.append(f"  {s:<16}{raw.get(s, 0):>10.2f}{calls.get(s, 0):>10.1f}{scaled.get(s, 0):>11.2f}"
                     f"{estimate.get(s, 0):>13.2f}{estimate.get(s, 0) / est_total:>8.1%}")
    return "\n".join(lines)


def from_profiles(root: Path, show_unmatched: bool) -> list[dict[str, Any]]:
    """Attribute kept profiles again (after a change of RULES), with the runs' totals kept beside them."""
    results = []
    for meta_path in sorted(root.glob("*/meta.json")):
        meta = json.loads(meta_path.read_text())
        a = analyse(meta.get("plain"), meta["profiled"], meta_path.parent, show_unmatched, meta.get("inproc"))
        print(table(meta["setup"], a))
        if show_unmatched:
            print("  'other', by function:", json.dumps(a["other_top_us_per_record"], indent=1))
        results.append({"setup": meta["setup"], "plain": meta["plain"], "profiled": meta["profiled"], **a,
                        "inproc": meta.get("inproc")})
    return results


def measure(work: Path, setups: list[str], branches: list[Branch], policy: Policy, timeout: float,
            profiles: Path, show_unmatched: bool = False, inproc: dict[str, float] | None = None,
            ) -> list[dict[str, Any]]:
    results = []
    for setup in setups:
        name = setup.replace(":", "-")
        print(f"  {setup}: plain run", flush=True)
        plain = drain(work / f"{name}-plain", setup, branches, policy, timeout, None)
        print(f"  {setup}: profiled run", flush=True)
        prof_dir = profiles / name
        prof_dir.mkdir(parents=True, exist_ok=True)
        profiled = drain(work / f"{name}-profiled", setup, branches, policy, timeout, prof_dir)
        (prof_dir / "meta.json").write_text(json.dumps({"setup": setup, "plain": plain, "profiled": profiled,
                                                        "inproc": inproc}))
        a = analyse(plain, profiled, prof_dir, show_unmatched, inproc)
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
        results = from_profiles(args.from_profiles, args.show_unmatched)
        if args.results is not None:  # only when asked: the default file holds the last full run
            record.Run("centre-cpu", args.results).write({"reattributed_from": str(args.from_profiles),
                                                          "runs": results})
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
        inproc = unprofiled_checks(branches)
        print(f"  verifier stages in this process, unprofiled, µs/record: {json.dumps(inproc)}", flush=True)
        results = measure(work, args.setups, branches, policy, args.timeout, args.profiles or work / "profiles",
                          args.show_unmatched, inproc)
        run.write({"branches": args.branches, "backlog": args.backlog, "per_batch": args.per_batch,
                   "import_cpu_s": round(imports, 3), "unprofiled_check_us_per_record": inproc,
                   "runs": results})


if __name__ == "__main__":
    main()

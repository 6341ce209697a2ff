"""Soak: the whole branch under mixed load for a long time; does the agent stay flat?

Real peers (tests/peers/mixed.py): Mosquitto restarted every few minutes, the reference
receiver, `coopagent run` with two RTSP cameras recording, a dock scanner and scale on pty
pairs doing receivings, two tills posting sales, and a clip asked by the centre every minute.
Every `--sample-s` it samples the agent process's RSS, the PSS of the agent and its children
(ffmpeg recorders), open descriptors, threads, and the backlog. At the end it drains, stops
the agent cleanly and checks the centre: records lost and duplicated (both must be 0), clips
complete and verified, no half-written file left, the buffer's integrity_check.

Growth per hour is the least-squares slope over the samples after the warm-up (the first
`--warmup-s`: SQLite's page caches and the status page's event ring fill), and again over
the second half of the run alone (the camera rings, `ring_minutes` = 10 here, are full by then).

Run: .venv/bin/python -m bench.bench_soak --minutes 60
Writes OUT.json (summary and every sample) and OUT.csv (samples); OUT defaults to
docs/bench-results/soak-<minutes>min.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from tests.peers.mixed import LoadPlan, MixedBranch, sample


def slope_per_hour(samples: list[dict[str, Any]], key: str, after_s: float) -> float | None:
    """Least-squares slope of `key` against time, per hour, over samples taken after `after_s`."""
    pts = [(s["t_s"], s[key]) for s in samples if s["t_s"] >= after_s and s.get(key) is not None]
    if len(pts) < 3:
        return None
    n = len(pts)
    mx = sum(t for t, _ in pts) / n
    my = sum(v for _, v in pts) / n
    den = sum((t - mx) ** 2 for t, _ in pts)
    if den == 0:
        return None
    return float(sum((t - mx) * (v - my) for t, v in pts) / den * 3600)


def run(minutes: float, sample_s: float, warmup_s: float, plan: LoadPlan, workdir: Path,
        log: Any = sys.stdout) -> dict[str, Any]:
    mb = MixedBranch(workdir, plan).start()
    samples: list[dict[str, Any]] = []
    try:
        pid = mb.start_agent()
        mb.start_load()
        t0 = time.monotonic()
        end = t0 + minutes * 60
        while True:
            now = time.monotonic()
            st = mb.status()
            s = {"t_s": round(now - t0, 1), **sample(pid),
                 "backlog_records": st["backlog"]["records"] if st else None,
                 "backlog_batches": (st["last_seq"] - st["acked_seq"]) if st else None,
                 "broker_connected": st["broker"]["connected"] if st else None,
                 "sales_acked": len(mb.acked_sales()), "load1": os.getloadavg()[0]}
            samples.append(s)
            print(json.dumps(s), file=log, flush=True)
            if now >= end:
                break
            time.sleep(min(sample_s, max(0.0, end - time.monotonic())))  # noqa: TID251 - the sampling period
        mb.stop_load()
        drain_t0 = time.monotonic()
        mb.settle(timeout=600)
        drain_s = time.monotonic() - drain_t0
        assert mb.branch.kill_agent_process(signal.SIGTERM) == 0, "the agent did not stop cleanly"
        verdict = mb.verdict()
        agent_log = mb.branch.agent_log()
    finally:
        mb.close()
    problems = verdict.problems()
    # no kills here: every delivery note scanned and every weight placed reached the centre
    if (verdict.notes_sent, verdict.weights_placed) != (verdict.notes_at_centre, verdict.weights_at_centre):
        problems.append(f"device records: {verdict.notes_sent} notes scanned, {verdict.notes_at_centre} at the "
                        f"centre; {verdict.weights_placed} weights placed, {verdict.weights_at_centre} at the centre")
    after = min(warmup_s, max(0.0, samples[-1]["t_s"] / 3))
    keys = ("rss_mb", "pss_tree_mb", "uss_tree_mb", "fds", "fds_tree", "threads", "backlog_records")
    tail = [s for s in samples if s["t_s"] >= after]
    return {
        "minutes": minutes, "sample_s": sample_s, "warmup_s": after, "plan": plan.__dict__,
        "growth_per_hour": {k: slope_per_hour(samples, k, after) for k in keys},
        # the second half alone: what is left once every bounded cache and ring has filled
        "growth_per_hour_second_half": {k: slope_per_hour(samples, k, samples[-1]["t_s"] / 2) for k in keys},
        "first_after_warmup": {k: tail[0][k] for k in keys} if tail else {},
        "last": {k: samples[-1][k] for k in keys},
        "max": {k: max((s[k] for s in samples if s[k] is not None), default=None) for k in keys},
        "broker_restarts": mb.flapper.restarts if mb.flapper else 0,
        "sales_failures": sum(t.failures for t in mb.tills),
        "sales_refused": [r for t in mb.tills for r in t.refused][:10],
        "drain_s": round(drain_s, 1),
        "verdict": verdict.summary(), "problems": problems,
        "agent_errors": [ln for ln in agent_log.splitlines() if " ERROR " in ln or "Traceback" in ln][:20],
        "uptime": Path("/proc/loadavg").read_text().strip(), "cpus": os.cpu_count(),
        "samples": samples,
    }


def write(result: dict[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    with open(out.with_suffix(".csv"), "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(result["samples"][0]))
        w.writeheader()
        w.writerows(result["samples"])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--minutes", type=float, default=60.0, help="how long the load runs")
    p.add_argument("--sample-s", type=float, default=10.0, help="sampling period")
    p.add_argument("--warmup-s", type=float, default=300.0, help="left out of the growth slope")
    p.add_argument("--broker-every-s", type=float, default=180.0, help="Mosquitto restarted this often")
    p.add_argument("--clip-every-s", type=float, default=60.0, help="the centre asks a clip this often")
    p.add_argument("--tills", type=int, default=2)
    p.add_argument("--post-every-s", type=float, default=0.5, help="each till posts a sale this often")
    p.add_argument("--cameras", type=int, default=2)
    p.add_argument("--out", type=Path, default=None, help="OUT.json and OUT.csv (default docs/bench-results/soak-Nmin)")
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir, removed after")
    a = p.parse_args()
    plan = LoadPlan(tills=a.tills, post_every_s=a.post_every_s, cameras=a.cameras, clip_every_s=a.clip_every_s,
                    broker_every_s=a.broker_every_s)
    out = a.out or Path(f"docs/bench-results/soak-{a.minutes:g}min")
    with tempfile.TemporaryDirectory(prefix="soak-") as tmp:
        result = run(a.minutes, a.sample_s, a.warmup_s, plan, a.workdir or Path(tmp), log=sys.stderr)
    write(result, out)
    brief = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(brief, indent=1, default=str))
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    raise SystemExit(main())

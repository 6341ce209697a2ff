"""Kills under mixed load, the full run: N SIGKILLs of the agent at random moments while the
whole branch works (tests/peers/mixed.py; the CI version is tests/e2e/test_kills.py).

Run: .venv/bin/python -m bench.bench_kills --kills 100
Prints the report and writes it to OUT (default docs/bench-results/kills-N.json); exits 1 when
anything was lost, duplicated, incomplete or left half-written.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

from tests.peers.mixed import KILLS_PLAN, MixedBranch, kill_loop


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--seed", type=int, default=KILLS_PLAN.seed, help="the kill moments' random seed")
    p.add_argument("--out", type=Path, default=None)
    p.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir, removed after")
    a = p.parse_args()
    plan = KILLS_PLAN.__class__(**{**KILLS_PLAN.__dict__, "seed": a.seed})
    out = a.out or Path(f"docs/bench-results/kills-{a.kills}.json")
    with tempfile.TemporaryDirectory(prefix="kills-") as tmp:
        mb = MixedBranch(a.workdir or Path(tmp), plan).start()
        try:
            report = kill_loop(mb, a.kills, log=lambda s: print(s, file=sys.stderr, flush=True))
        finally:
            mb.close()
    report.update({"plan": plan.__dict__, "loadavg": Path("/proc/loadavg").read_text().strip(),
                   "cpus": os.cpu_count(), "finished": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())})
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(json.dumps(report, indent=1, default=str))
    return 1 if report["problems"] or report["last_rc"] != 0 else 0


if __name__ == "__main__":
    raise SystemExit(main())

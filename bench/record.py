"""The raw results of each benchmark's last run, committed where the next reader finds them.

Every bench writes `docs/bench-results/NAME.json` when it finishes (`--results PATH` writes
elsewhere, `--results -` nowhere): its results as measured, the exact command line, the start
and end time, the git commit and whether the tree had uncommitted changes, and the machine
(CPU model, cores, memory, kernel, Python, SQLite) with the load average before and after,
because on a shared machine a figure means little without it. The next run overwrites the
file; git keeps the earlier ones. `bench/results/` stays scratch (gitignored).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = ROOT / "docs" / "bench-results"


def add_argument(ap: argparse.ArgumentParser) -> None:
    ap.add_argument(
        "--results",
        default=None,
        metavar="PATH",
        help="where to write the raw results (default docs/bench-results/NAME.json; '-' for nowhere)",
    )


def _git(*args: str) -> str | None:
    try:
        out = subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip()


def _meminfo_mb() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) // 1024
    except OSError:
        pass
    return None


def _cpu_model() -> str | None:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return None


def command_line() -> str:
    """The command as typed: the interpreter's own argv, with the BENCH_* variables set."""
    env = [f"{k}={shlex.quote(v)}" for k, v in sorted(os.environ.items()) if k.startswith("BENCH_")]
    return " ".join([*env, *map(shlex.quote, sys.orig_argv)])


class Run:
    """Started when the bench starts (the load before it), written when it ends."""

    def __init__(self, name: str, results: str | None = None) -> None:
        self.name = name
        self.target = results
        self.started = dt.datetime.now(dt.UTC)
        self.load_before = os.getloadavg()

    def path(self) -> Path | None:
        if self.target == "-":
            return None
        return Path(self.target) if self.target else RESULTS_DIR / f"{self.name}.json"

    def document(self, results: dict[str, Any]) -> dict[str, Any]:
        dirty = _git("status", "--porcelain", "--untracked-files=no")
        return {
            "bench": self.name,
            "command": command_line(),
            "started": self.started.isoformat(timespec="seconds"),
            "finished": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
            "git": {
                "commit": _git("rev-parse", "HEAD"),
                "uncommitted_changes": None if dirty is None else bool(dirty),
            },
            "machine": {
                "cpu": _cpu_model(),
                "cores": os.cpu_count(),
                "memory_mb": _meminfo_mb(),
                "kernel": platform.release(),
                "python": platform.python_version(),
                "sqlite": sqlite3.sqlite_version,
                "load_before": [round(x, 2) for x in self.load_before],
                "load_after": [round(x, 2) for x in os.getloadavg()],
            },
            "results": results,
        }

    def write(self, results: dict[str, Any]) -> Path | None:
        path = self.path()
        if path is None:
            return None
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(self.document(results), indent=2, default=str) + "\n")
        print(f"raw results: {path}", flush=True)
        return path

"""Process accounting for benchmarks, from /proc: a process tree's CPU seconds and its PSS.

CPU of a tree over a window = (sum over the tree at the end) - (sum over the tree at the start)
of utime+stime+cutime+cstime: a child that exits in the window is reaped by its parent, whose
cutime/cstime then carry its whole life, so restarts and short ffprobe runs are counted too.
Memory is PSS (smaps_rollup): RSS counts each shared library page once per process (an ffmpeg
maps ~40 MB of them), PSS shares them out, so a sum of PSS over processes is what they cost.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def children(pid: int) -> list[int]:
    out: list[int] = []
    try:
        for task in Path(f"/proc/{pid}/task").iterdir():
            try:
                out += [int(c) for c in (task / "children").read_text().split()]
            except OSError:
                continue
    except OSError:
        pass
    return out


def tree(pid: int) -> list[int]:
    """pid and all its descendants alive now."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        if Path(f"/proc/{p}").exists():
            out.append(p)
            todo += children(p)
    return out


def _stat(pid: int) -> list[str] | None:
    """The fields of /proc/PID/stat after the command name (which may hold spaces); None if it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None


def cpu_total_s(pid: int) -> float:
    """utime+stime+cutime+cstime of one process in seconds; 0 if it is gone."""
    fields = _stat(pid)
    return sum(int(x) for x in fields[11:15]) / TICK if fields else 0.0


def own_cpu_s(pid: int) -> float:
    """utime+stime of one process in seconds (not its reaped children); 0 if it is gone."""
    fields = _stat(pid)
    return (int(fields[11]) + int(fields[12])) / TICK if fields else 0.0


def live_cpu_s(pid: int) -> float:
    """utime+stime of a process and of its descendants alive now (a server and its backends, a receiver
    and its verifier)."""
    return sum(own_cpu_s(p) for p in tree(pid))


def exited(pid: int) -> bool:
    """Whether pid is a zombie (exited, not yet reaped) or gone."""
    fields = _stat(pid)
    return fields is None or fields[0] == "Z"


def pss_mb(pid: int) -> float:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


def comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return "?"


@dataclass
class Group:
    """A set of processes measured together: roots plus (if follow) their descendants."""

    name: str
    roots: list[int]
    follow: bool = True

    def pids(self) -> list[int]:
        if not self.follow:
            return [p for p in self.roots if Path(f"/proc/{p}").exists()]
        out: list[int] = []
        for r in self.roots:
            out += tree(r)
        return out

    def cpu_s(self) -> float:
        return sum(cpu_total_s(p) for p in self.pids())

    def cpu_by_name(self) -> dict[str, float]:
        """CPU seconds by process name ('root' for the roots; a reaped child's time is its parent's)."""
        out: dict[str, float] = {}
        for p in self.pids():
            name = "root" if p in self.roots else comm(p)
            out[name] = out.get(name, 0.0) + cpu_total_s(p)
        return out

    def pss(self) -> dict[str, float]:
        """PSS in MB by process name (comm; 'root' for the roots themselves), plus 'total'."""
        out: dict[str, float] = {}
        for p in self.pids():
            name = "root" if p in self.roots else comm(p)
            out[name] = out.get(name, 0.0) + pss_mb(p)
        out["total"] = sum(out.values())
        out["processes"] = float(len(self.pids()))
        return out

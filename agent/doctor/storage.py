"""Disk and buffer checks: free space, how many days of outage it holds at the current rate, integrity."""

from __future__ import annotations

import os
import shutil
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

from agent.doctor.context import Context, buffer_ro
from buffer.diskpolicy import Thresholds
from core.doctor import Finding, error, ok, skipped, warning

# Below this the buffer can no longer seal batches safely (SQLite needs room for its WAL).
FREE_ERROR_BYTES = 64 * 1024 * 1024
# Days of central outage the free space must hold: a week (retention_hours' default, and a
# long weekend plus the time to send a technician); under a day is an error.
OUTAGE_WARN_DAYS = 7.0
OUTAGE_ERROR_DAYS = 1.0


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def free_bytes(path: Path) -> int:
    st = os.statvfs(_existing(path))
    return st.f_bavail * st.f_frsize


def growth_bytes_per_day(conn: sqlite3.Connection, now_ms: int) -> tuple[float, str]:
    """Bytes a day at the current rate: records of the last hour (or of the last day, whichever
    is busier: the last hour may be night) times the bytes a record takes in a sealed batch."""
    last_h = conn.execute("SELECT count(*) FROM records WHERE at >= ?", (now_ms - 3_600_000,)).fetchone()[0]
    last_d = conn.execute("SELECT count(*) FROM records WHERE at >= ?", (now_ms - 86_400_000,)).fetchone()[0]
    per_day = max(last_h * 24.0, float(last_d))
    n, size = conn.execute("SELECT coalesce(sum(n_records), 0), coalesce(sum(length(cose)), 0) FROM batches").fetchone()
    if not n:
        n, size = conn.execute("SELECT count(*), coalesce(sum(length(body)), 0) FROM records "
                               "WHERE body IS NOT NULL").fetchone()
    per_record = size / n if n else 0.0
    # SQLite's pages, indexes and the records table row add about as much again as the CBOR.
    per_record *= 2
    return per_day * per_record, f"{per_day:.0f} records/day, ~{per_record:.0f} bytes each"


def disk_checks(c: Context) -> Iterator[Finding]:
    cfg = c.cfg
    data_dir = Path(cfg.agent.data_dir)
    where = _existing(data_dir)
    free = free_bytes(data_dir)
    mib = free / 2**20
    free_fix = (f"free space on the file system of {where} (df -h {where}; old files, journal: "
                "journalctl --vacuum-size=200M) or give the PC a bigger disk")
    if free < FREE_ERROR_BYTES:
        yield error("disk.free", f"{mib:.0f} MiB free on {where}: the buffer cannot store records (API 507)", free_fix)
    else:
        yield ok("disk.free", f"{mib:.0f} MiB free on {where}")
    yield from reserve_checks(c, free, where, free_fix)
    room = float(free)
    db = cfg.db_path
    if cfg.buffer.max_db_mb:
        size = db.stat().st_size if db.exists() else 0
        room = min(room, cfg.buffer.max_db_mb * 2**20 - size)
    try:
        with buffer_ro(cfg) as conn:
            if conn is None:
                yield skipped("disk.outage-days", "no buffer yet, so no rate to measure")
                return
            per_day, how = growth_bytes_per_day(conn, int(time.time() * 1000))
    except sqlite3.Error as exc:
        yield skipped("disk.outage-days", f"the buffer cannot be read ({exc})")
        return
    if per_day <= 0:
        yield ok("disk.outage-days", "no records in the last day: nothing grows")
        return
    days = max(room, 0) / per_day
    span = f"{days:.1f} days" if days < 3650 else "more than 10 years"  # a quiet branch's rate says little more
    msg = f"room for {span} without the centre ({how}, {per_day / 2**20:.1f} MiB/day)"
    fix = (free_fix + (f"; or raise [buffer] max_db_mb ({cfg.buffer.max_db_mb})" if cfg.buffer.max_db_mb else "")
           + f": {OUTAGE_WARN_DAYS:.0f} days of outage should fit")
    if days < OUTAGE_ERROR_DAYS:
        yield error("disk.outage-days", msg, fix)
    elif days < OUTAGE_WARN_DAYS:
        yield warning("disk.outage-days", msg, fix)
    else:
        yield ok("disk.outage-days", msg)


def reserve_checks(c: Context, free: int, where: Path, free_fix: str) -> Iterator[Finding]:
    """The disk policy's thresholds (buffer.diskpolicy): the running agent's level when it answers
    (it knows what it deleted), else free space against [disk] warn_mb and reserve_mb; and any
    evidence the centre lacked that was deleted in the last day (gap records in the buffer)."""
    d = c.cfg.disk
    t = Thresholds(d.warn_mb * 2**20, d.reserve_mb * 2**20)
    running = (c.status or {}).get("disk")
    level = str(running["level"]) if running else t.level(free)
    mib = free // 2**20
    fix = (free_fix + "; or give video less room: lower [recording] ring_mb or ring_minutes, or [media] quota_mb, "
           f"so recording fits beside the {d.reserve_mb} MiB kept for records")
    if level == "refusing":
        yield error("disk.reserve", f"{mib} MiB free on {where}: the disk is full and no media is left to delete: "
                    "records are refused (API 507)", fix)
    elif level == "evidence_pending":
        yield error("disk.reserve", f"{mib} MiB free on {where}: clips the centre did not have yet were deleted so "
                    "that records could be stored (gap records say which)", fix)
    elif level == "low":
        yield warning("disk.reserve", f"{mib} MiB free on {where}, below [disk] warn_mb ({d.warn_mb} MiB): below "
                      f"{d.reserve_mb} MiB recording, snapshots and confirmed clips will be deleted", fix)
    elif level != "ok":
        what = "nothing left to delete before unconfirmed clips" if level == "below_reserve" else \
            f"deleting media (deepest so far: {level})"
        yield warning("disk.reserve", f"{mib} MiB free on {where}, below the {d.reserve_mb} MiB kept for records "
                      f"([disk] reserve_mb): {what}", fix)
    elif t.warn_bytes > shutil.disk_usage(where).total // 2:
        # A default reserve on a small disk: the policy would keep deleting every recording.
        yield warning("disk.reserve", f"[disk] warn_mb ({d.warn_mb} MiB) is more than half of the "
                      f"{shutil.disk_usage(where).total // 2**20} MiB disk at {where}: recording would be deleted "
                      "as soon as it is made", "lower [disk] reserve_mb and warn_mb to fit this disk")
    else:
        yield ok("disk.reserve", f"{mib} MiB free, warning below {d.warn_mb} MiB, {d.reserve_mb} MiB kept for records")
    try:
        gaps = c.recent_records(("gap",), 24 * 60)
    except sqlite3.Error as exc:
        yield skipped("disk.evidence-deleted", f"the buffer cannot be read ({exc})")
        return
    lost = [g for g in gaps if g.get("data", {}).get("class") == "evidence_pending"]
    if lost:
        cams = sorted({str(g["data"].get("camera")) for g in lost})
        yield error("disk.evidence-deleted", f"{len(lost)} pieces of evidence the centre did not have were deleted "
                    f"under disk pressure in the last 24 h (cameras: {', '.join(cams)})", fix)
    else:
        yield ok("disk.evidence-deleted", "no evidence lost to disk pressure in the last 24 h")


def buffer_checks(c: Context) -> Iterator[Finding]:
    fid = "buffer.integrity"
    fix = (f"stop the agent (systemctl stop coopagent), make a support bundle and keep a copy of {c.cfg.db_path} "
           "for the helpdesk; do not delete it: unacknowledged records are only there")
    try:
        with buffer_ro(c.cfg) as conn:
            if conn is None:
                yield skipped(fid, f"no buffer yet at {c.cfg.db_path} (the agent creates it at its first start)")
                return
            rows = [r[0] for r in conn.execute("PRAGMA quick_check(5)").fetchall()]
    except sqlite3.Error as exc:
        yield error(fid, f"{c.cfg.db_path} cannot be read as a database: {exc}", fix)
        return
    if rows == ["ok"]:
        yield ok(fid, f"{c.cfg.db_path}: quick_check ok")
    else:
        yield error(fid, f"{c.cfg.db_path} is damaged: {'; '.join(rows)}", fix)

"""The compliance page of one society: which branches a ministry should call today, and why.

One row per device of the society: silent for more than N minutes, batches received late
(long after sealing), gaps and chain breaks, a clock off the centre's or not synchronized
(from its latest signed status), and stock-takes left open too long. Thresholds are the
`[web]` config's; the page can sort by any column and export the same rows as CSV.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass
from typing import Any

from receiver.database import Database
from receiver.web.config import WebSection
from receiver.web.fmt import ts

COLUMNS = ("device", "branch", "last_batch", "silent_min", "late_batches_24h", "missing_batches", "chain_breaks",
           "clock", "open_stocktakes", "problems")


@dataclass
class Row:
    device: str
    branch: str
    last_batch: str
    silent_min: int | None
    late_batches_24h: int
    missing_batches: int
    chain_breaks: int
    clock: str
    open_stocktakes: int
    problems: int


def _clock(status_json: str | None, limit_ms: int) -> tuple[str, bool]:
    """(what the latest status says about the clock, whether it is off)."""
    if not status_json:
        return "no status received", True
    clock = json.loads(status_json).get("clock")
    if not isinstance(clock, dict):
        return "status carries no clock", False
    off = clock.get("centre_offset_ms")
    if clock.get("synchronized") is False:
        return "NOT synchronized" + (f", {off} ms off" if off is not None else ""), True
    if isinstance(off, int) and abs(off) > limit_ms:
        return f"{off} ms off the centre", True
    return ("synchronized" if clock.get("synchronized") else "unknown") + (
        f", {off} ms" if off is not None else ""), False


def report(rdb: Database, society: str, cfg: WebSection, now_ms: int) -> list[Row]:
    out: list[Row] = []
    devs = rdb.execute(
        "SELECT did, dev, last_batch_at, contiguous, highest_seen, status_json FROM devices WHERE dev LIKE ? "
        "ORDER BY dev",
        (society + "/%",),
    ).fetchall()
    late_ms = cfg.late_minutes * 60_000
    stock_ms = cfg.stocktake_open_hours * 3_600_000
    for did, dev, last_at, contiguous, highest, status_json in devs:
        branch = dev.split("/")[1]
        silent = None if last_at is None else int((now_ms - int(last_at)) // 60_000)
        late = int(rdb.execute(
            "SELECT count(*) FROM batches WHERE did = ? AND received_at > ? AND received_at - sealed > ?",
            (did, now_ms - 86_400_000, late_ms),
        ).fetchone()[0])
        held = int(rdb.execute("SELECT count(*) FROM pending WHERE did = ?", (did,)).fetchone()[0])
        missing = max(0, int(highest) - int(contiguous) - held)
        breaks = int(rdb.execute("SELECT count(*) FROM chain_breaks WHERE did = ?", (did,)).fetchone()[0])
        clock, clock_off = _clock(status_json, cfg.clock_off_ms)
        # A stock-take is open when its latest count_session record says open, and it opened long ago.
        open_st = int(rdb.execute(
            "SELECT count(*) FROM record_search o WHERE o.did = ? AND o.kind = 'count_session' AND o.state = 'open' "
            "AND o.at < ? AND NOT EXISTS (SELECT 1 FROM record_search c WHERE c.did = o.did "
            "AND c.kind = 'count_session' AND c.doc = o.doc AND c.state = 'closed')",
            (did, now_ms - stock_ms),
        ).fetchone()[0])
        problems = sum((silent is None or silent > cfg.silent_minutes, late > 0, missing > 0, breaks > 0, clock_off,
                        open_st > 0))
        out.append(Row(dev, branch, ts(last_at), silent, late, missing, breaks, clock, open_st, problems))
    return out


def sort_rows(rows: list[Row], key: str, descending: bool) -> list[Row]:
    if key not in COLUMNS:
        key = "problems"

    def k(r: Row) -> tuple[int, Any]:
        v = getattr(r, key)
        return (0, v) if v is not None else (1, 0)  # None (never seen) sorts last ascending, first descending

    return sorted(rows, key=k, reverse=descending)


def to_csv(rows: list[Row]) -> str:
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, lineterminator="\r\n")  # RFC 4180 line ends
    w.writeheader()
    for r in rows:
        w.writerow(asdict(r))
    return buf.getvalue()

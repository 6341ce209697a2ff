"""The search index: the fields people search by, pulled out of the signed batch bytes at store time.

`records` is only an index of where each record sits (its content stays in `batches.cose`,
the signed bytes kept once), so nothing in it says which receipt, till, GTIN or document a
record is about. `record_search` holds one row per stored record with those fields, and
`record_gtins` one row per (record, GTIN) since a sale has many lines. The receiver's worker
fills both after the batch is committed and acked (`Writer.index_stored`, when it is idle or
the oldest waits longer than INDEX_MAX_LAG_S: ingest first, search a little later); `backfill`
fills them for rows stored before the index existed or before a crash, at every start.

`flag` marks the exceptions an auditor looks at first: voids, refunds, waste, adjustments,
stock-take variances, and clips the centre asked for (a media record whose reason names a
command). The indexes were chosen by measurement over 10 million rows on PostgreSQL
(bench/bench_search.py, docs/benchmarks.md "Search").
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import cbor2

from receiver.database import Database

log = logging.getLogger(__name__)

# did, seq, pos, id, kind, at, society, branch, flag, receipt, till, doc, camera, ref, state, t0, t1, total
SearchRow = tuple[
    int, int, int, str, str, int, str, str, "str | None", "str | None", "str | None", "str | None",
    "str | None", "str | None", "str | None", "int | None", "int | None", "int | None",
]
SEARCH_COLUMNS = (
    "did", "seq", "pos", "id", "kind", "at", "society", "branch", "flag", "receipt", "till", "doc",
    "camera", "ref", "state", "t0", "t1", "total",
)
_COLS, _MARKS = ", ".join(SEARCH_COLUMNS), ", ".join("?" * len(SEARCH_COLUMNS))
INSERT_SEARCH = (
    f"INSERT INTO record_search ({_COLS}) VALUES ({_MARKS}) "  # noqa: S608 - our own column names
    "ON CONFLICT (did, seq, pos) DO NOTHING"
)
INSERT_GTIN = "INSERT INTO record_gtins (gtin, at, did, seq, pos) VALUES (?, ?, ?, ?, ?) ON CONFLICT DO NOTHING"

# The exception flags, in the words the pages show.
FLAGS = {
    "void": "void",
    "refund": "refund",
    "waste": "waste",
    "adjustment": "stock adjustment",
    "variance": "stock-take variance",
    "requested": "clip or snapshot requested by the centre",
}


def _text(v: Any) -> str | None:
    if v is None or isinstance(v, (dict, list, bytes)):
        return None
    return str(v)[:200]


def mapping(v: Any) -> dict[str, Any]:
    """v if it is a map, else an empty one (a kind's optional map field)."""
    return v if isinstance(v, dict) else {}


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _has_variance(data: Mapping[str, Any]) -> bool:
    """A closed stock-take whose data names a non-zero variance (in total or for any GTIN)."""
    v = data.get("variance")
    if v:
        return True
    totals = data.get("totals")
    if isinstance(totals, dict):
        return any(isinstance(t, dict) and t.get("variance") for t in totals.values())
    return False


def extract(rec: Mapping[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """The searchable fields of one record, and its GTINs (a record the receiver accepted: checked by wire)."""
    kind = rec.get("kind")
    data = rec.get("data")
    data = data if isinstance(data, dict) else {}
    f: dict[str, Any] = {}
    gtins: list[str] = []
    if kind == "sale":
        f["receipt"], f["till"] = _text(data.get("receipt")), _text(data.get("till"))
        f["total"] = _int(data.get("total"))
        f["flag"] = "void" if data.get("void") else "refund" if data.get("refund") else None
        gtins = [str(ln["gtin"]) for ln in data.get("lines") or [] if isinstance(ln, dict) and ln.get("gtin")]
    elif kind == "stock_move":
        f["doc"], f["state"] = _text(data.get("doc")), _text(data.get("type"))
        f["flag"] = {"waste": "waste", "adjust": "adjustment"}.get(str(data.get("type")))
        gtins = [str(data["gtin"])] if data.get("gtin") else []
    elif kind == "count":
        f["doc"] = _text(data.get("session"))
        gtins = [str(data["gtin"])] if data.get("gtin") else []
    elif kind == "count_session":
        f["doc"], f["state"] = _text(data.get("session")), _text(data.get("state"))
        f["flag"] = "variance" if data.get("state") == "closed" and _has_variance(data) else None
    elif kind == "scan":
        gtins = [str(data["gtin"])] if data.get("gtin") else []
    elif kind == "media":
        reason = mapping(data.get("reason"))
        f["camera"], f["t0"], f["t1"] = _text(data.get("camera")), _int(data.get("start")), _int(data.get("end"))
        f["doc"] = _text(data.get("media"))
        f["ref"] = _text(reason.get("record") or reason.get("command"))
        f["flag"] = "requested" if reason.get("command") else None
    elif kind == "gap":
        f["camera"], f["t0"], f["t1"] = _text(data.get("camera")), _int(data.get("start")), _int(data.get("end"))
        f["doc"], f["state"] = _text(data.get("media")), _text(data.get("what"))
    elif kind == "device_event":
        detail = mapping(data.get("detail"))
        f["state"] = _text(data.get("event"))
        f["ref"] = _text(detail.get("command"))
        f["camera"] = _text(detail.get("camera"))
    return f, sorted(set(gtins))


def split_dev(dev: str) -> tuple[str, str]:
    society, branch, _ = dev.split("/", 2)
    return society, branch


def rows_for(did: int, dev: str, seq: int, records: Sequence[Mapping[str, Any]],
             positions: Iterable[int] | None = None) -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
    """record_search and record_gtins rows of a batch's records (only `positions`, if given: the stored ones)."""
    society, branch = split_dev(dev)
    wanted = None if positions is None else set(positions)
    rows: list[tuple[Any, ...]] = []
    grows: list[tuple[Any, ...]] = []
    for pos, rec in enumerate(records):
        if wanted is not None and pos not in wanted:
            continue
        f, gtins = extract(rec)
        at = int(rec["at"])
        rows.append((did, seq, pos, str(rec["id"]), str(rec["kind"]), at, society, branch, f.get("flag"),
                     f.get("receipt"), f.get("till"), f.get("doc"), f.get("camera"), f.get("ref"), f.get("state"),
                     f.get("t0"), f.get("t1"), f.get("total")))
        grows.extend((g, at, did, seq, pos) for g in gtins)
    return rows, grows


def batch_records(cose: bytes) -> list[dict[str, Any]]:
    """The records array of a stored batch (its bytes were verified before they were stored)."""
    payload = cbor2.loads(cbor2.loads(cose).value[2])
    return list(payload["records"])


def index_batch(db: Database, did: int, dev: str, seq: int, cose: bytes, all_new: bool) -> None:
    """Index a batch just stored, in the writer's transaction. all_new=False: some ids were stored before,
    so only the positions `records` kept for this batch are indexed (the first copy of an id wins)."""
    positions = None
    if not all_new:
        positions = [r[0] for r in db.execute("SELECT pos FROM records WHERE did = ? AND seq = ?", (did, seq))]
    rows, grows = rows_for(did, dev, seq, batch_records(cose), positions)
    if rows:
        db.executemany(INSERT_SEARCH, rows)
    if grows:
        db.executemany(INSERT_GTIN, grows)


def backfill_step(db: Database, after: tuple[int, int], chunk: int) -> tuple[int, tuple[int, int] | None]:
    """Index up to `chunk` stored batches after (did, seq) that have no search rows; one transaction.

    Returns (records indexed, the cursor for the next step, or None when nothing is left).
    """
    todo = db.execute(
        "SELECT b.did, b.seq, d.dev FROM batches b JOIN devices d ON d.did = b.did "
        "WHERE (b.did > ? OR (b.did = ? AND b.seq > ?)) AND NOT EXISTS "
        "(SELECT 1 FROM record_search s WHERE s.did = b.did AND s.seq = b.seq) "
        "ORDER BY b.did, b.seq LIMIT ?",
        (after[0], after[0], after[1], chunk),
    ).fetchall()
    if not todo:
        return 0, None
    done = 0
    db.begin()
    try:
        for did, seq, dev in todo:
            cose = db.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq)).fetchone()[0]
            positions = [r[0] for r in db.execute("SELECT pos FROM records WHERE did = ? AND seq = ?", (did, seq))]
            rows, grows = rows_for(did, dev, seq, batch_records(bytes(cose)), positions)
            if rows:
                db.executemany(INSERT_SEARCH, rows)
            if grows:
                db.executemany(INSERT_GTIN, grows)
            done += len(rows)
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return done, (int(todo[-1][0]), int(todo[-1][1]))


def backfill(db: Database, *, chunk: int = 200) -> int:
    """Index every stored batch that has no row in record_search yet; one transaction per `chunk` batches.

    Safe to run again (rows already there are skipped) and while the receiver runs on PostgreSQL;
    on SQLite run it with the receiver stopped (the file keeps one writer: receiver/db.py).
    Returns how many records were indexed.
    """
    done = 0
    cursor: tuple[int, int] | None = (0, 0)
    while cursor is not None:
        n, cursor = backfill_step(db, cursor, chunk)
        done += n
        if cursor is not None:
            log.info("search index: %d records indexed so far", done)
    return done


@dataclass(frozen=True)
class Grants:
    """What an authority may see: None for a dimension means everything (the admin's own authority)."""

    societies: frozenset[str] | None
    kinds: frozenset[str] | None

    def allows(self, society: str, kind: str) -> bool:
        return (self.societies is None or society in self.societies) and (self.kinds is None or kind in self.kinds)


@dataclass
class Query:
    """One search: every field optional; times in epoch ms; newest first."""

    society: str | None = None
    branch: str | None = None
    kind: str | None = None
    since: int | None = None
    until: int | None = None
    receipt: str | None = None
    till: str | None = None
    gtin: str | None = None
    doc: str | None = None
    exceptions: bool = False
    limit: int = 50
    before: tuple[int, int, int, int] | None = None  # (at, did, seq, pos) of the last row shown: the next page


def _in(col: str, values: frozenset[str], where: list[str], params: list[Any]) -> None:
    if not values:
        where.append("1 = 0")
        return
    where.append(f"{col} IN ({', '.join('?' * len(values))})")
    params.extend(sorted(values))


def search(db: Database, q: Query, grants: Grants) -> list[dict[str, Any]]:
    """Rows of record_search matching q within the grants, newest first (keyset pagination on `before`).

    With a GTIN the query is driven from record_gtins (gtin, at, ...): a GTIN is rare among all
    records, so walking the newest records and probing each would read far more rows.
    """
    where: list[str] = []
    params: list[Any] = []
    t = "g" if q.gtin else "s"  # the table whose (at, did, seq, pos) order drives the plan
    if q.gtin:
        where.append("g.gtin = ?")
        params.append(q.gtin)
        if q.society:
            # A common GTIN in one branch: narrow record_gtins by the branch's devices first (its
            # (gtin, did, at) index), not by walking all of the GTIN's rows newest first (704 ms p95
            # at 10M rows in bench_search's first run). Device ids hold no LIKE wildcards.
            where.append("g.did IN (SELECT did FROM devices WHERE dev LIKE ?)")
            params.append(f"{q.society}/{q.branch}/%" if q.branch else f"{q.society}/%")
    if grants.societies is not None:
        _in("s.society", grants.societies, where, params)
    if grants.kinds is not None:
        _in("s.kind", grants.kinds, where, params)
    for col, val in (("society", q.society), ("branch", q.branch), ("kind", q.kind), ("receipt", q.receipt),
                     ("till", q.till), ("doc", q.doc)):
        if val:
            where.append(f"s.{col} = ?")
            params.append(val)
    if q.since is not None:
        where.append(f"{t}.at >= ?")
        params.append(q.since)
    if q.until is not None:
        where.append(f"{t}.at < ?")
        params.append(q.until)
    if q.exceptions:
        where.append("s.flag IS NOT NULL")
    if q.before is not None:
        # `at <= ?` first: an OR alone is no index bound, and the next page then scanned from the newest
        # row (963 ms at 10M rows, bench_search's first run); with it the scan starts at the page's edge.
        where.append(f"{t}.at <= ? AND ({t}.at < ? OR ({t}.did, {t}.seq, {t}.pos) < (?, ?, ?))")
        params.extend([q.before[0], q.before[0], q.before[1], q.before[2], q.before[3]])
    source = "record_search s"
    if q.gtin:
        source = "record_gtins g JOIN record_search s ON s.did = g.did AND s.seq = g.seq AND s.pos = g.pos"
    sql = (
        "SELECT s.did, s.seq, s.pos, s.id, s.kind, s.at, s.society, s.branch, s.flag, s.receipt, s.till, s.doc, "  # noqa: S608
        f"s.camera, s.total, d.dev FROM {source} JOIN devices d ON d.did = s.did"
        + (" WHERE " + " AND ".join(where) if where else "")
        + f" ORDER BY {t}.at DESC, {t}.did DESC, {t}.seq DESC, {t}.pos DESC LIMIT ?"
    )
    params.append(max(1, min(q.limit, 500)))
    keys = ("did", "seq", "pos", "id", "kind", "at", "society", "branch", "flag", "receipt", "till", "doc",
            "camera", "total", "dev")
    return [dict(zip(keys, r, strict=True)) for r in db.execute(sql, params)]

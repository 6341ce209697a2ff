"""The evidence view's search over 10 million records on PostgreSQL, and which indexes earn their place.

Starts a throwaway PostgreSQL 15 (tests/peers/postgres.py: shared_buffers 32 MB, fsync off),
migrates the receiver's schema, drops the search index's secondary indexes, and loads N
records into `record_search` (and their GTINs into `record_gtins`) by binary COPY: 1,000
branches of 20 societies over 30 days; 80 % sales (1-3 lines, 0.5 % voids, 0.3 % refunds),
stock moves (20 % waste, 10 % adjustments), counts, stock-takes, scans, device events, media.

Then the web application's own queries (receiver.search.search, the code the pages run)
are timed, each REPS times with fresh random parameters, under three index sets:

* pk: only the primary keys (what a table without a search design would have);
* migration: the indexes of receiver/pg.py's search migration;
* extra: migration plus candidates that were not kept ((till, at), (kind, society, at)), to
  show whether they would pay.

and prints p50/p95 per query and set, and the EXPLAIN (ANALYZE, BUFFERS) of the migration
set's plan for each query.

    .venv/bin/python -m bench.bench_search --records 10000000
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import time
from collections.abc import Callable
from typing import Any

import psycopg

from receiver.pg import PgDatabase, migrate
from receiver.search import Grants, Query, search
from tests.peers.postgres import Postgres

T0 = 1_764_000_000_000
DAY = 86_400_000
DAYS = 30
SOCIETIES = [f"soc-{i:02d}" for i in range(20)]
BRANCHES = [(s, f"br-{j:02d}") for s in SOCIETIES for j in range(50)]
GTINS = [f"0629104{i:07d}" for i in range(20_000)]
SECONDARY = [
    "record_search_at", "record_search_branch", "record_search_society", "record_search_flag_branch",
    "record_search_kind", "record_search_receipt", "record_search_doc",
    "record_search_flag", "record_search_ref", "record_search_span",
]
EXTRA = [
    "CREATE INDEX x_till ON record_search (till, at) WHERE till IS NOT NULL",
    "CREATE INDEX x_kind_soc ON record_search (kind, society, at)",
]
COLS = ["did", "seq", "pos", "id", "kind", "at", "society", "branch", "flag", "receipt", "till", "doc", "camera",
        "ref", "state", "t0", "t1", "total"]
TYPES = ["int4", "int8", "int4", "text", "text", "int8", "text", "text", "text", "text", "text", "text", "text",
         "text", "text", "int8", "int8", "int8"]


def gtin_pick(rng: random.Random) -> str:
    # A few GTINs sell a lot (bread, milk), most rarely: Pareto-like by squaring a uniform draw.
    return GTINS[int(rng.random() ** 3 * len(GTINS))]


def load(conn: psycopg.Connection[Any], gconn: psycopg.Connection[Any], n: int) -> None:
    """record_search by COPY on conn, record_gtins by COPY on gconn (a connection runs one COPY at a time)."""
    rng = random.Random(11)
    conn.execute("INSERT INTO devices (did, dev) SELECT g, 'x' || g FROM generate_series(1, %s) g", (len(BRANCHES),))
    with conn.cursor() as cur:
        cur.executemany("UPDATE devices SET dev = %s WHERE did = %s",
                        [(f"{s}/{b}/agent-1", i + 1) for i, (s, b) in enumerate(BRANCHES)])
    seqs = [0] * len(BRANCHES)
    t = time.perf_counter()
    with conn.cursor() as cur, cur.copy(f"COPY record_search ({', '.join(COLS)}) FROM STDIN (FORMAT BINARY)") as cp, \
            gconn.cursor() as gcur:
        cp.set_types(TYPES)
        gtin_rows: list[tuple[str, int, int, int, int]] = []
        for i in range(n):
            b = rng.randrange(len(BRANCHES))
            did = b + 1
            seqs[b] += 1
            seq, pos = seqs[b], 0
            society, branch = BRANCHES[b]
            at = T0 + rng.randrange(DAYS * DAY)
            r = rng.random()
            flag = receipt = till = doc = camera = ref = state = None
            t0 = t1 = total = None
            if r < 0.80:
                kind, receipt, till = "sale", f"R{did}-{seq}", str(rng.randrange(1, 9))
                total = rng.randrange(100, 50_000)
                v = rng.random()
                flag = "void" if v < 0.005 else "refund" if v < 0.008 else None
                for g in {gtin_pick(rng) for _ in range(rng.randrange(1, 4))}:  # one row per GTIN (search.py)
                    gtin_rows.append((g, at, did, seq, pos))
            elif r < 0.85:
                kind, doc = "stock_move", f"D{did}-{rng.randrange(10**6)}"
                v = rng.random()
                state = "waste" if v < 0.2 else "adjust" if v < 0.3 else "receive"
                flag = {"waste": "waste", "adjust": "adjustment"}.get(state)
                gtin_rows.append((gtin_pick(rng), at, did, seq, pos))
            elif r < 0.88:
                kind, doc = "count", f"ST{did}-{rng.randrange(1000)}"
                gtin_rows.append((gtin_pick(rng), at, did, seq, pos))
            elif r < 0.885:
                kind, doc, state = "count_session", f"ST{did}-{rng.randrange(1000)}", rng.choice(["open", "closed"])
                flag = "variance" if state == "closed" and rng.random() < 0.3 else None
            elif r < 0.96:
                kind = "scan"
            elif r < 0.98:
                kind, state = "device_event", rng.choice(["online", "offline", "clock_jump", "command"])
            elif r < 0.995:
                kind, camera, t0 = "media", f"cam-{rng.randrange(4)}", at - 10_000
                t1, doc = at + 10_000, f"m{did}-{seq}"
                flag = "requested" if rng.random() < 0.1 else None
                ref = f"cmd-{did}-{seq}" if flag else None
            else:
                kind, camera, t0, t1, state = "gap", f"cam-{rng.randrange(4)}", at - 60_000, at, "media"
            cp.write_row((did, seq, pos, f"{did:04d}-{seq:012d}", kind, at, society, branch, flag, receipt, till,
                          doc, camera, ref, state, t0, t1, total))
            if len(gtin_rows) >= 200_000:
                _copy_gtins(gcur, gtin_rows)
                gtin_rows = []
            if i and i % 1_000_000 == 0:
                print(f"  {i:,} rows loaded ({time.perf_counter() - t:.0f} s)", flush=True)
        _copy_gtins(gcur, gtin_rows)
    print(f"loaded {n:,} records in {time.perf_counter() - t:.0f} s", flush=True)


def _copy_gtins(cur: psycopg.Cursor[Any], rows: list[tuple[str, int, int, int, int]]) -> None:
    with cur.copy("COPY record_gtins (gtin, at, did, seq, pos) FROM STDIN (FORMAT BINARY)") as cp:
        cp.set_types(["text", "int8", "int4", "int8", "int4"])
        for row in rows:
            cp.write_row(row)


ALL = Grants(None, None)


def queries(rng: random.Random, n: int) -> dict[str, Callable[[], tuple[Query, Grants]]]:
    def branch() -> tuple[str, str]:
        return BRANCHES[rng.randrange(len(BRANCHES))]

    def day() -> int:
        return T0 + rng.randrange(DAYS) * DAY

    def receipt() -> str:
        did = rng.randrange(1, len(BRANCHES) + 1)
        return f"R{did}-{rng.randrange(1, max(2, n // len(BRANCHES)))}"

    return {
        "exceptions (all)": lambda: (Query(exceptions=True), ALL),
        "exceptions, partner: 1 society, sales": lambda: (
            Query(exceptions=True), Grants(frozenset({rng.choice(SOCIETIES)}), frozenset({"sale"}))),
        "exceptions of a branch": lambda: (Query(exceptions=True, society=(b := branch())[0], branch=b[1]), ALL),
        "receipt": lambda: (Query(receipt=receipt()), ALL),
        "till + branch + day": lambda: (
            Query(society=(b := branch())[0], branch=b[1], till=str(rng.randrange(1, 9)),
                  since=(d := day()), until=d + DAY), ALL),
        "branch + day": lambda: (
            Query(society=(b := branch())[0], branch=b[1], since=(d := day()), until=d + DAY), ALL),
        "kind stock_move + day": lambda: (Query(kind="stock_move", since=(d := day()), until=d + DAY), ALL),
        "GTIN (any)": lambda: (Query(gtin=gtin_pick(rng)), ALL),
        "GTIN + branch": lambda: (Query(gtin=gtin_pick(rng), society=(b := branch())[0], branch=b[1]), ALL),
        "document": lambda: (Query(doc=f"D{rng.randrange(1, len(BRANCHES) + 1)}-{rng.randrange(10**6)}"), ALL),
        "newest 50 of a society, page 20": lambda: (
            Query(society=rng.choice(SOCIETIES), before=(T0 + DAYS * DAY - 20 * 3_600_000, 0, 0, 0)), ALL),
    }


def measure(db: PgDatabase, reps: int, timeout_ms: int) -> dict[str, list[float]]:
    db.conn.execute(f"SET statement_timeout = {timeout_ms}")
    rng = random.Random(5)
    out: dict[str, list[float]] = {}
    for name, make in queries(rng, ARGS.records).items():
        times: list[float] = []
        for _ in range(reps):
            q, g = make()
            t = time.perf_counter()
            try:
                search(db, q, g)
                times.append((time.perf_counter() - t) * 1000)
            except psycopg.errors.QueryCanceled:
                times.append(float("inf"))
        out[name] = times
    db.conn.execute("SET statement_timeout = 0")
    return out


def p(xs: list[float], q: float) -> float:
    s = sorted(xs)
    return s[min(len(s) - 1, int(q * len(s)))]


class Capture:
    """The database as search() sees it, keeping the SQL it ran (for EXPLAIN)."""

    kind = "postgresql"
    errors = (psycopg.Error,)

    def __init__(self, db: PgDatabase):
        self.db = db
        self.captured: list[tuple[str, list[Any]]] = []

    def execute(self, sql: str, params: Any = ()) -> Any:
        self.captured.append((sql, list(params)))
        return self.db.execute(sql, params)


def explain(db: PgDatabase) -> None:
    rng = random.Random(9)
    for name, make in queries(rng, ARGS.records).items():
        q, g = make()
        cap = Capture(db)
        search(cap, q, g)  # type: ignore[arg-type]
        sql, params = cap.captured[0]
        plan = db.execute("EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) " + sql, params).fetchall()
        print(f"\n-- {name}\n" + "\n".join(r[0] for r in plan))


def main() -> None:
    global ARGS
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=10_000_000)
    ap.add_argument("--reps", type=int, default=40)
    ap.add_argument("--pk-reps", type=int, default=3, help="repetitions without secondary indexes (slow); 0 skips")
    ap.add_argument("--no-extra", action="store_true", help="skip the candidate indexes that were not kept")
    ARGS = ap.parse_args()
    pg = Postgres().start()
    try:
        with psycopg.connect(pg.url(), autocommit=True) as c:
            # shared_buffers is fixed on the server's command line (32 MB, for the tests): the OS page cache
            # holds the rest. Sorts and index builds get room for themselves.
            c.execute("ALTER SYSTEM SET work_mem = '16MB'")
            c.execute("ALTER SYSTEM SET maintenance_work_mem = '256MB'")
            c.execute("SELECT pg_reload_conf()")
        dbname = pg.new_database()
        conn = psycopg.connect(pg.url(dbname), autocommit=True)
        gconn = psycopg.connect(pg.url(dbname), autocommit=True)
        migrate(conn)
        index_sql = {r[0]: r[1] for r in conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'record_search'")}
        for name in SECONDARY:
            conn.execute(f"DROP INDEX {name}")
        gtin_index = conn.execute(
            "SELECT indexdef FROM pg_indexes WHERE indexname = 'record_gtins_device'").fetchone()[0]
        conn.execute("DROP INDEX record_gtins_device")
        load(conn, gconn, ARGS.records)
        gconn.close()
        conn.execute("VACUUM ANALYZE record_search")
        conn.execute("VACUUM ANALYZE record_gtins")
        db = PgDatabase(conn, pg.url(dbname), None)
        print(f"load average before measuring: {os.getloadavg()}", flush=True)
        results: dict[str, dict[str, list[float]]] = {}
        if ARGS.pk_reps:
            results["pk"] = measure(db, ARGS.pk_reps, 10_000)
        t = time.perf_counter()
        for name in SECONDARY:
            conn.execute(index_sql[name])
        conn.execute(gtin_index)
        conn.execute("ANALYZE record_search")
        conn.execute("ANALYZE record_gtins")
        print(f"migration's indexes built in {time.perf_counter() - t:.0f} s", flush=True)
        results["migration"] = measure(db, ARGS.reps, 10_000)
        print(f"load average: {os.getloadavg()}", flush=True)
        explain(db)
        if not ARGS.no_extra:
            for sql in EXTRA:
                conn.execute(sql)
            conn.execute("ANALYZE record_search")
            results["extra"] = measure(db, ARGS.reps, 10_000)
        size = conn.execute("SELECT pg_size_pretty(pg_total_relation_size('record_search')), "
                            "pg_size_pretty(pg_total_relation_size('record_gtins')), "
                            "(SELECT count(*) FROM record_gtins)").fetchone()
        print(f"\nrecord_search {size[0]} with indexes; record_gtins {size[1]} ({size[2]:,} rows)")
        print(f"\n{'query':40s} " + " ".join(f"{k + ' p50':>14s} {k + ' p95':>14s}" for k in results))
        names = list(results["migration"])
        for name in names:
            cells = []
            for k in results:
                xs = results[k][name]
                cells.append(f"{p(xs, 0.5):14.1f} {p(xs, 0.95):14.1f}")
            print(f"{name:40s} " + " ".join(cells))
        allm = [x for xs in results["migration"].values() for x in xs]
        print(f"\nall queries, migration indexes: p50 {statistics.median(allm):.1f} ms, p95 {p(allm, 0.95):.1f} ms, "
              f"max {max(allm):.1f} ms ({len(allm)} queries)")
        print(f"load average after: {os.getloadavg()}")
        conn.close()
    finally:
        pg.destroy()


ARGS: argparse.Namespace

if __name__ == "__main__":
    main()

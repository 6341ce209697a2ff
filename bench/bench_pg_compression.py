"""PostgreSQL's CPU for the signed batch bytes: pglz (the default) against lz4 (migration 5).

Why: the ingest benchmark showed PostgreSQL spending 5.4 µs a record even on raw COPY with
no keys or indexes. A batch's bytes (~128 KB for 500 records) are TOASTed and compressed
on the way in, so this bench COPYs the fleet's real sealed batches into a table shaped like
`batches`, once per compression method, alternating, in a durable server (fsync on), one
transaction per 20 batches as the receiver groups them, and reads the server's CPU from
/proc and the table's size.

  .venv/bin/python -m bench.bench_pg_compression --branches 40 --backlog 10000
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import psycopg

from bench import record
from bench.bench_fleet import make_branches, seal_backlog
from bench.fleet import Policy
from bench.procs import live_cpu_s
from tests.peers.postgres import Postgres

TYPES = ["int4", "int8", "bytea", "int8", "int4", "int8", "bytea"]


def run(rows: list[tuple[Any, ...]], records: int, methods: list[str], group: int) -> list[dict[str, Any]]:
    pg = Postgres(durable=True).start()
    out = []
    try:
        assert pg.proc is not None
        with psycopg.connect(pg.url("postgres")) as conn:
            for method in methods:
                conn.execute(
                    "DROP TABLE IF EXISTS b; CREATE TABLE b (did int, seq bigint, hash bytea, sealed bigint, "
                    "n int, received_at bigint, cose bytea)"
                )
                conn.execute(f"ALTER TABLE b ALTER COLUMN cose SET COMPRESSION {method}")  # a name from our list
                conn.commit()
                cpu0, t0 = live_cpu_s(pg.proc.pid), time.perf_counter()
                for i in range(0, len(rows), group):
                    with conn.cursor() as cur, cur.copy("COPY b FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(TYPES)
                        for r in rows[i : i + group]:
                            cp.write_row(r)
                    conn.commit()
                seconds, cpu = time.perf_counter() - t0, live_cpu_s(pg.proc.pid) - cpu0
                size = conn.execute("SELECT pg_total_relation_size('b')").fetchone()
                result = {
                    "method": method,
                    "seconds": round(seconds, 2),
                    "postgres_cpu_us_per_record": round(cpu / records * 1e6, 2),
                    "table_mb": round((size[0] if size else 0) / 1e6, 1),
                    "raw_mb": round(sum(len(r[6]) for r in rows) / 1e6, 1),
                }
                print("  " + str(result), flush=True)
                out.append(result)
    finally:
        pg.destroy()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--branches", type=int, default=40)
    ap.add_argument("--backlog", type=int, default=10000, help="records each branch holds")
    ap.add_argument("--per-batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2, help="each method this many times, alternating")
    record.add_argument(ap)
    args = ap.parse_args()
    rec = record.Run("pg-compression", args.results)
    branches = make_branches(args.branches, Policy(window=4))
    seal_backlog(branches, args.backlog, args.per_batch)
    rows = [
        (did, seq, b"\0" * 32, 1, args.per_batch, 1, cose)
        for did, b in enumerate(branches, start=1)
        for seq, cose in enumerate(b.batches, start=1)
    ]
    runs = run(rows, args.branches * args.backlog, ["pglz", "lz4"] * args.rounds, 20)
    rec.write({"runs": runs})


if __name__ == "__main__":
    main()

"""The receiver's record index into PostgreSQL: executemany against binary COPY (docs/benchmarks.md).

Starts a throwaway PostgreSQL 15 (tests/peers/postgres.py), then inserts N records in batches
of 500, one transaction per batch (as the receiver commits a group), in three ways:

* executemany: `INSERT ... ON CONFLICT (did, id) DO NOTHING`, psycopg 3's pipelined executemany;
* copy+merge: binary COPY into a temporary staging table, then one `INSERT ... SELECT ... ON
  CONFLICT DO NOTHING` (what idempotency needs: COPY itself cannot skip a duplicate);
* copy (bare): binary COPY straight into the table, the upper bound that cannot be idempotent;
* store: what the receiver runs, `receiver.pg.PgDatabase.insert_stored` on the migrated schema,
  one batch row (with 1 KB standing in for its signed bytes) and its record index per
  transaction (binary COPY of each, then the ids new to `record_keys` into `records`,
  partitioned by month).

    .venv/bin/python -m bench.bench_pg_store --records 200000
"""

from __future__ import annotations

import argparse
import random
import time
import uuid
from collections.abc import Callable

import psycopg

from bench import record
from tests.peers.postgres import Postgres

TABLE = """
CREATE TABLE records (did INTEGER NOT NULL, id TEXT NOT NULL, seq BIGINT NOT NULL, pos INTEGER NOT NULL,
                      kind TEXT NOT NULL, at BIGINT NOT NULL, src TEXT NOT NULL, PRIMARY KEY (did, id))
"""
Row = tuple[int, str, int, int, str, int, str]


def batches(n: int, size: int) -> list[list[Row]]:
    rng = random.Random(7)
    out: list[list[Row]] = []
    for seq in range(1, n // size + 1):
        out.append(
            [
                (1, str(uuid.UUID(int=rng.getrandbits(128), version=4)), seq, i, "sale",
                 1_764_000_000_000 + rng.randrange(10**9), "api:pos-1")
                for i in range(size)
            ]
        )
    return out


def via_executemany(conn: psycopg.Connection, rows: list[Row]) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO records (did, id, seq, pos, kind, at, src) VALUES (%s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (did, id) DO NOTHING",
            rows,
        )


def via_copy_merge(conn: psycopg.Connection, rows: list[Row]) -> None:
    with conn.cursor() as cur:
        cur.execute("CREATE TEMPORARY TABLE IF NOT EXISTS stage (LIKE records) ON COMMIT DELETE ROWS")
        with cur.copy("COPY stage (did, id, seq, pos, kind, at, src) FROM STDIN (FORMAT BINARY)") as cp:
            cp.set_types(["int4", "text", "int8", "int4", "text", "int8", "text"])
            for r in rows:
                cp.write_row(r)
        cur.execute("INSERT INTO records SELECT * FROM stage ON CONFLICT (did, id) DO NOTHING")


def via_copy(conn: psycopg.Connection, rows: list[Row]) -> None:
    with conn.cursor() as cur, cur.copy(
        "COPY records (did, id, seq, pos, kind, at, src) FROM STDIN (FORMAT BINARY)"
    ) as cp:
        cp.set_types(["int4", "text", "int8", "int4", "text", "int8", "text"])
        for r in rows:
            cp.write_row(r)


def run_store(url: str, data: list[list[Row]]) -> float:
    from receiver.pg import PgDatabase

    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP SCHEMA public CASCADE")
        conn.execute("CREATE SCHEMA public")
    db = PgDatabase.connect(url, None, writer=True)
    try:
        db.execute("INSERT INTO devices (did, dev) VALUES (1, 'bench/bench/bench')")
        t0 = time.perf_counter()
        for seq, rows in enumerate(data, start=1):  # batches() numbers the rows' seq from 1 too
            db.begin()
            db.insert_stored([(1, seq, seq.to_bytes(32, "big"), 0, len(rows), 0, b"\0" * 1024)], [rows])
            db.commit()
        dt = time.perf_counter() - t0
        n = db.execute("SELECT count(*) FROM records").fetchone()[0]
    finally:
        db.close()
    total = sum(len(b) for b in data)
    assert n == total, (n, total)
    print(f"{'store':12s} {total} records in {dt:6.2f} s: {total / dt:9,.0f} records/s")
    return total / dt


def run(url: str, name: str, fn: Callable[[psycopg.Connection, list[Row]], None], data: list[list[Row]]) -> float:
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("DROP TABLE IF EXISTS records")
        conn.execute(TABLE)
        conn.autocommit = False
        t0 = time.perf_counter()
        for rows in data:
            fn(conn, rows)
            conn.commit()
        dt = time.perf_counter() - t0
        n = conn.execute("SELECT count(*) FROM records").fetchone()
    total = sum(len(b) for b in data)
    assert n is not None and n[0] == total, (name, n, total)
    rate = total / dt
    print(f"{name:12s} {total} records in {dt:6.2f} s: {rate:9,.0f} records/s")
    return rate


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--batch", type=int, default=500)
    ap.add_argument("--rounds", type=int, default=2)
    record.add_argument(ap)
    args = ap.parse_args()
    rec = record.Run("pg-store", args.results)
    data = batches(args.records, args.batch)
    pg = Postgres()
    pg.start()
    rounds: list[dict[str, float]] = []
    try:
        url = pg.url()
        for _ in range(args.rounds):
            rounds.append({
                "executemany": round(run(url, "executemany", via_executemany, data)),
                "copy+merge": round(run(url, "copy+merge", via_copy_merge, data)),
                "copy (bare)": round(run(url, "copy (bare)", via_copy, data)),
                "PgDatabase.insert_stored": round(run_store(url, data)),
            })
    finally:
        pg.destroy()
    rec.write({"records": args.records, "batch": args.batch, "records_per_s_by_round": rounds})


if __name__ == "__main__":
    main()

"""The floor of centre ingest: raw binary COPY of the same rows the receivers store, for bench_fleet.

The same batches the fleet sealed are decoded up front (not timed) into the rows the receiver
writes (the batch with its exact bytes; the record index: id, seq, position, kind, time, source),
then COPYed into plain tables without keys or checks in a durable PostgreSQL (fsync on), the
batch bytes compressed as the receiver's schema does (lz4, migration 5), one
transaction per 20 batches as the receiver groups them. No verification, no chain, no
idempotency: what PostgreSQL itself can take on this machine.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import cbor2
import psycopg

from bench.fleet import Branch
from bench.procs import live_cpu_s
from tests.peers.postgres import Postgres

TABLES = """
CREATE TABLE batches (did INTEGER, seq BIGINT, hash BYTEA, sealed BIGINT, n_records INTEGER, received_at BIGINT,
                      cose BYTEA COMPRESSION lz4);
CREATE TABLE records (did INTEGER, id TEXT, seq BIGINT, pos INTEGER, kind TEXT, at BIGINT, src TEXT);
"""


def raw_copy(branches: list[Branch], group: int = 20) -> dict[str, Any]:
    work: list[tuple[tuple[Any, ...], list[tuple[Any, ...]]]] = []
    now = int(time.time() * 1000)
    for did, b in enumerate(branches, start=1):
        for seq, cose in enumerate(b.batches, start=1):
            payload = cbor2.loads(cbor2.loads(cose).value[2])
            recs = [(did, r["id"], seq, pos, r["kind"], r["at"], r["src"]) for pos, r in enumerate(payload["records"])]
            work.append(((did, seq, hashlib.sha256(cose).digest(), payload["sealed"], len(recs), now, cose), recs))
    pg = Postgres(durable=True).start()
    try:
        assert pg.proc is not None
        with psycopg.connect(pg.url("postgres")) as conn:
            conn.execute(TABLES)
            conn.commit()
            pg_cpu0, own0 = live_cpu_s(pg.proc.pid), time.process_time()
            t0 = time.perf_counter()
            for i in range(0, len(work), group):
                with conn.cursor() as cur:
                    with cur.copy("COPY batches FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["int4", "int8", "bytea", "int8", "int4", "int8", "bytea"])
                        for row, _ in work[i : i + group]:
                            cp.write_row(row)
                    with cur.copy("COPY records FROM STDIN (FORMAT BINARY)") as cp:
                        cp.set_types(["int4", "text", "int8", "int4", "text", "int8", "text"])
                        for _, recs in work[i : i + group]:
                            for r in recs:
                                cp.write_row(r)
                conn.commit()
            elapsed = time.perf_counter() - t0
            pg_cpu, own = live_cpu_s(pg.proc.pid) - pg_cpu0, time.process_time() - own0
        n = sum(len(r) for _, r in work)
    finally:
        pg.destroy()
    result = {"setup": "raw COPY", "records": n, "seconds": round(elapsed, 1), "records_per_s": round(n / elapsed),
              "postgres_cpu_us_per_record": round(pg_cpu / n * 1e6, 1),
              "client_cpu_us_per_record": round(own / n * 1e6, 1), "load": os.getloadavg()[0]}
    print("  " + str(result), flush=True)
    return result

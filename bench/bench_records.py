"""CPU cost per record of the ingest path before SQLite: validation and CBOR encoding.

    .venv/bin/python -m bench.bench_records [--records 20000] [--repeats 7] [--batch 100]

Measures CPU time (time.process_time, so other load on the machine does not count) per
record for wire.records.normalize_records, buffer.store.encode_record, and both in a row
as buffer.store.Store.prepare runs them, on bench_ingest's sale records (500 repeating
GTINs, 1-4 lines) in requests of --batch records. Records are what the API hands over: a
JsonRecords list of values fresh from orjson. Each figure is the best of --repeats passes
over all records (the minimum is the least disturbed by other work on the machine); the
plain-list line is the path for sources that hand over Python objects (drivers, the agent).
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from typing import Any

import orjson

from bench import record
from bench.bench_ingest import catalogue, sale
from buffer.store import encode_record
from wire.records import JsonRecords, NormRecord, normalize_records


def _requests(n: int, batch: int) -> list[list[dict[str, Any]]]:
    gtins = catalogue()
    records = [sale(gtins, i) for i in range(n)]
    # Round-trip through JSON as the API does, so values are exactly what orjson produces.
    fresh = orjson.loads(orjson.dumps(records))
    return [fresh[i : i + batch] for i in range(0, n, batch)]


def _best_us(fn: Callable[[], object], n: int, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        best = min(best, time.process_time() - t0)
    return best / n * 1e6


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    ap.add_argument("--records", type=int, default=20000)
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--batch", type=int, default=100)
    record.add_argument(ap)
    args = ap.parse_args(argv)
    run = record.Run("records", args.results)

    requests = _requests(args.records, args.batch)
    n = sum(len(r) for r in requests)
    normed: list[list[NormRecord]] = [normalize_records(JsonRecords(r), "api") for r in requests]

    def norm_json() -> None:
        for r in requests:
            normalize_records(JsonRecords(r), "api")

    def norm_plain() -> None:
        for r in requests:
            normalize_records(r, "api")

    def encode() -> None:
        for batch in normed:
            for rec in batch:
                encode_record(rec)

    def both() -> None:
        for r in requests:
            for rec in normalize_records(JsonRecords(r), "api"):
                encode_record(rec)

    norm_json()  # warm caches (GTIN check, key orders) as a running agent has them
    rows = [
        ("normalize_records (JsonRecords)", _best_us(norm_json, n, args.repeats)),
        ("encode_record", _best_us(encode, n, args.repeats)),
        ("both (as Store.prepare)", _best_us(both, n, args.repeats)),
        ("normalize_records (plain list)", _best_us(norm_plain, n, args.repeats)),
    ]
    print(f"{n} sale records, {args.batch} a request, best of {args.repeats}, CPU us per record:")
    for name, us in rows:
        print(f"  {name:34s} {us:7.2f}")
    run.write({"records": n, "batch": args.batch, "repeats": args.repeats,
               "cpu_us_per_record": {name: round(us, 3) for name, us in rows}})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

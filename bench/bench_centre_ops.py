"""What running the centre costs (issue 10 §4): the per branch read behind the metrics, a scrape, a retention pass.

A store holding N branches (each its own key, B batches of R sale records, a status with a
backlog) is filled through the receiver's own Writer, then:

  read     receiver.metrics.read_branches: the metrics thread's whole-fleet read (median of 5)
  render   the per branch gauges rendered as exposition text, once per refresh (median of 5)
  scrape   what one GET /metrics costs: the process registry plus that text (median of 5)
  judge    one retention pass (dry run: the same SQL and decoding, rolled back) judging
           batch_limit batches, every one past its kind's days

  .venv/bin/python -m bench.bench_centre_ops --branches 1000
  .venv/bin/python -m bench.bench_centre_ops --branches 1000 --postgres   # throwaway PostgreSQL 15
"""

from __future__ import annotations

import argparse
import hashlib
import json
import statistics
import tempfile
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from wire.cose import dumps_deterministic, sign1
from wire.keys import generate_key_file, public_pem


def batches_for(dev: str, key: Ed25519PrivateKey, n_batches: int, per: int) -> list[bytes]:
    prev, out = b"\x00" * 32, []
    for seq in range(1, n_batches + 1):
        recs = [
            {"id": f"{seq}-{i}", "kind": "sale", "at": 1_764_000_000_000 + i, "src": "api:pos-1",
             "data": {"receipt": f"R{seq}-{i}", "till": 1, "total": 500, "currency": "KWD",
                      "lines": [{"gtin": "06291041500213", "qty": 2, "unit_price": 250, "amount": 500}]}}
            for i in range(per)
        ]
        p = {"v": 1, "dev": dev, "seq": seq, "prev": prev, "sealed": 1_764_000_000_000 + seq, "records": recs}
        cose = sign1(dumps_deterministic(p), key)
        prev = hashlib.sha256(cose).digest()
        out.append(cose)
    return out


def median_s(fn: object, runs: int = 5) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()  # type: ignore[operator]
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--branches", type=int, default=1000)
    ap.add_argument("--batches", type=int, default=2, help="batches per branch")
    ap.add_argument("--records", type=int, default=50, help="records per batch")
    ap.add_argument("--postgres", action="store_true")
    args = ap.parse_args()

    from prometheus_client import generate_latest

    from receiver.config import ReceiverConfig
    from receiver.database import open_database
    from receiver.keys import DeviceRegistry
    from receiver.metrics import ReceiverMetrics, read_branches
    from receiver.retention import Retention
    from receiver.writer import Writer

    tmp = Path(tempfile.mkdtemp(prefix="bench-ops-"))
    pg = None
    try:
        generate_key_file(tmp / "central.pem")
        (tmp / "keys").mkdir()
        section: dict[str, object] = {"db": str(tmp / "rx.sqlite3"), "key_file": str(tmp / "central.pem"),
                                      "media_dir": str(tmp / "media"), "devices_dir": str(tmp / "keys"),
                                      "metrics_max_branches": args.branches}
        if args.postgres:
            from tests.peers.postgres import Postgres

            pg = Postgres().start()
            (tmp / "pg.password").write_text(pg.password)
            section["database_url"] = pg.url(pg.new_database(), with_password=False)
            section["database_password_file"] = str(tmp / "pg.password")
        devs = []
        for b in range(args.branches):
            dev = f"soc-{b % 10}/branch-{b}/agent-1"
            key = Ed25519PrivateKey.generate()
            (tmp / "keys" / (dev.replace("/", ".") + ".pem")).write_text(public_pem(key.public_key()))
            devs.append((dev, key))
        cfg = ReceiverConfig.model_validate({
            "receiver": section,
            "retention": {"enabled": True, "kinds": {"sale": 30}, "batch_limit": 500},
        })
        writer = Writer(open_database(cfg.receiver, writer=True), DeviceRegistry(cfg), 1000)
        t0 = time.perf_counter()
        for dev, key in devs:
            writer.begin()
            for cose in batches_for(dev, key, args.batches, args.records):
                writer.on_batch(dev, f"coop/v1/{dev}/batch", cose)
            status = {"v": 1, "dev": dev, "at": int(time.time() * 1000), "state": "online", "version": "b",
                      "backlog": {"records": 10, "batches": 1, "media_bytes": 0}, "acked_seq": args.batches,
                      "components": {}}
            writer.on_status(dev, f"coop/v1/{dev}/status", sign1(dumps_deterministic(status), key))
            writer.commit()
        fill = time.perf_counter() - t0
        db = writer.db
        n_rows = len(read_branches(db))
        read = median_s(lambda: read_branches(db))
        metrics = ReceiverMetrics(cfg.receiver)
        rows = read_branches(db)
        render = median_s(lambda: metrics.update(rows))
        scrape_bytes = len(generate_latest(metrics.registry) + metrics.branch_text)
        scrape = median_s(lambda: generate_latest(metrics.registry) + metrics.branch_text)
        ret = Retention(cfg.retention, cfg.receiver.media_dir)

        def judge() -> int:
            db.begin()
            try:
                return ret.run(db, int(time.time() * 1000), dry_run=True).batches
            finally:
                db.rollback()

        judged = judge()
        judge_s = median_s(judge, 3)
        print(json.dumps({
            "store": db.kind, "branches": n_rows, "batches": args.branches * args.batches,
            "records_per_batch": args.records, "fill_s": round(fill, 2),
            "read_branches_ms": round(read * 1000, 1), "render_branches_ms": round(render * 1000, 1),
            "scrape_ms": round(scrape * 1000, 1),
            "scrape_kib": round(scrape_bytes / 1024), "retention_batches_judged": judged,
            "retention_pass_ms": round(judge_s * 1000, 1),
            "retention_ms_per_batch": round(judge_s * 1000 / max(judged, 1), 2),
        }, indent=2))
        db.close()
    finally:
        if pg is not None:
            pg.destroy()


if __name__ == "__main__":
    main()

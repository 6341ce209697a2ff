"""Receiver throughput: verify + store records/s with 500-record batches.

Two figures, side by side in one run:
  core    the worker's own path (check_batch + Writer in group commits, synchronous=FULL),
          fed from memory: the ceiling of the receiver itself.
  broker  the same batches published to a real Mosquitto (started here on a free port)
          and drained by a running Receiver, timed from the first publish to the last
          signed ack: what the lead's 1,000,000-record drain sees on the central side.

  .venv/bin/python -m bench.bench_receiver --records 200000
  .venv/bin/python -m bench.bench_receiver --records 200000 --postgres   # the PostgreSQL store
                   (a throwaway PostgreSQL 15 from tests/peers/postgres.py, fsync=off)
  .venv/bin/python -m bench.bench_receiver --records 200000 --postgres --resend
          then every batch published again (an impatient agent's resend), followed by one new
          batch: the receiver's CPU to re-ack what it already stored
"""

from __future__ import annotations

import argparse
import hashlib
import random
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench import record
from bench.procs import children, own_cpu_s
from wire.cose import dumps_deterministic, kid_for, protected_header, sign1
from wire.keys import generate_key_file, public_pem

DEV = "bench-soc/branch-1/agent-1"


def make_batches(n_records: int, per_batch: int, key: Ed25519PrivateKey, random_ids: bool = False) -> list[bytes]:
    """Ids are time-ordered (UUIDv7, as the agent assigns them) unless random_ids (UUIDv4, the worst case
    for the (device, id) index)."""
    rng = random.Random(42)
    ms = 1_764_000_000_000
    prot = protected_header(kid_for(key.public_key()))
    prev = b"\x00" * 32
    out: list[bytes] = []
    for seq in range(1, n_records // per_batch + 1):
        recs = [
            {
                "id": new_id(rng, ms + seq, random_ids),
                "kind": "sale",
                "at": 1_764_000_000_000 + i,
                "src": "api:pos-3",
                "data": {
                    "receipt": f"R{seq}-{i}",
                    "till": 3,
                    "total": 500,
                    "currency": "KWD",
                    "lines": [{"gtin": "06291041500213", "qty": 2, "unit_price": 250, "amount": 500}],
                },
            }
            for i in range(per_batch)
        ]
        payload = {
            "v": 1,
            "dev": DEV,
            "seq": seq,
            "prev": prev,
            "sealed": 1_764_000_000_000 + seq,
            "records": recs,
        }
        cose = sign1(dumps_deterministic(payload), key, protected=prot)
        prev = hashlib.sha256(cose).digest()
        out.append(cose)
    return out


def new_id(rng: random.Random, ms: int, random_ids: bool) -> str:
    if random_ids:
        return str(uuid.UUID(int=rng.getrandbits(128), version=4))
    # UUIDv7 layout (RFC 9562): 48-bit ms timestamp, version 7, random bits.
    return str(uuid.UUID(int=(ms << 80) | (7 << 76) | (rng.getrandbits(12) << 64) | (2 << 62) | rng.getrandbits(62)))


def write_config(tmp: Path, key: Ed25519PrivateKey, port: int, store: str = "", name: str = "rx.toml") -> Path:
    """store: [receiver] lines choosing PostgreSQL (database_url, database_password_file); SQLite when empty."""
    if not (tmp / "central.pem").exists():
        generate_key_file(tmp / "central.pem")
    (tmp / "dev.pem").write_text(public_pem(key.public_key()))
    cfg = tmp / name
    cfg.write_text(
        f'[receiver]\ndb = "rx.sqlite3"\nkey_file = "central.pem"\nmedia_dir = "media"\n'
        f'broker = "mqtt://127.0.0.1:{port}"\nclient_id = "bench-rx"\n{store}\n'
        f'[[devices]]\nid = "{DEV}"\npublic_key = "dev.pem"\n'
    )
    return cfg


def bench_core(cfg_path: Path, batches: list[bytes], group: int) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of the core path: check_batch and the Writer, in this process."""
    from receiver.config import load_receiver_config
    from receiver.database import Database, open_database
    from receiver.db import SqliteDatabase
    from receiver.keys import DeviceRegistry
    from receiver.writer import Writer

    cfg = load_receiver_config(cfg_path)
    db: Database = (
        open_database(cfg.receiver, writer=True)
        if cfg.receiver.database_url
        else SqliteDatabase.connect(cfg.receiver.db.with_name("core.sqlite3"), writer=True)
    )
    w = Writer(db, DeviceRegistry(cfg), 10_000)
    topic = f"coop/v1/{DEV}/batch"
    n_rec = len(batches) * 500
    c0 = time.process_time()
    t0 = time.perf_counter()
    for i in range(0, len(batches), group):
        w.begin()
        for cose in batches[i : i + group]:
            w.on_batch(DEV, topic, cose)
        w.commit()
    elapsed = time.perf_counter() - t0
    cpu = time.process_time() - c0
    print(f"  core: {n_rec / cpu:,.0f} records per CPU-second; CPU {cpu:.2f} s, wall {elapsed:.2f} s")
    stored = w.db.execute("SELECT count(*) FROM records").fetchone()[0]
    w.db.close()
    assert stored == len(batches) * 500, stored
    return elapsed, cpu


def _cpu_s(pid: int) -> tuple[float, float]:
    """(utime + stime of the receiver process, of its live children: the verifier), from /proc."""
    return own_cpu_s(pid), sum(own_cpu_s(c) for c in children(pid))


def bench_broker(
    cfg_path: Path, batches: list[bytes], port: int, resend: bytes | None = None
) -> tuple[float, float, float, float, tuple[float, float, float] | None]:
    """`coop-receiver run` as its own process, as in production; the batches are published from here.

    Returns (seconds from the first publish to the signed ack of the last seq, receiver CPU seconds,
    of which in its verifier process, receiver peak RSS in MB, and for `resend` (one new batch that
    follows `batches`): the same three figures for publishing every batch again, then it).
    """
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from receiver.config import load_receiver_config
    from receiver.keys import load_central_key
    from tests.peers.net import wait_for
    from wire.cose import verify1

    cfg = load_receiver_config(cfg_path)
    central = load_central_key(cfg.receiver.key_file).public_key()
    keys = {kid_for(central): central}
    last = len(batches)
    want = [last]
    done = threading.Event()
    proc = subprocess.Popen(
        [sys.executable, "-c", "from receiver.cli import main; main()", "run", "--config", str(cfg_path)],
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[str] = []
    threading.Thread(target=lambda: lines.extend(proc.stderr or []), daemon=True).start()
    try:
        wait_for(lambda: any("coop-receiver running" in ln for ln in lines), timeout=30, what="receiver")
        main0, child0 = _cpu_s(proc.pid)

        def on_msg(c: Any, u: Any, msg: mqtt.MQTTMessage) -> None:
            if verify1(bytes(msg.payload), keys).payload.get("seq") == want[0]:
                done.set()

        agent = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="bench-agent", protocol=mqtt.MQTTv5)
        agent.on_message = on_msg
        agent.max_inflight_messages_set(64)
        agent.connect("127.0.0.1", port)
        agent.subscribe(f"coop/v1/{DEV}/ack", qos=1)
        agent.loop_start()
        t0 = time.perf_counter()
        for cose in batches:
            agent.publish(f"coop/v1/{DEV}/batch", cose, qos=1)
        ok = done.wait(600)
        elapsed = time.perf_counter() - t0
        main1, child1 = _cpu_s(proc.pid)
        child = child1 - child0
        cpu = main1 - main0 + child
        status = Path(f"/proc/{proc.pid}/status").read_text()
        hwm = int(next(ln for ln in status.splitlines() if ln.startswith("VmHWM:")).split()[1]) / 1024
        again = None
        if resend is not None and ok:
            done.clear()
            want[0] = last + 1
            t1 = time.perf_counter()
            for cose in [*batches, resend]:
                agent.publish(f"coop/v1/{DEV}/batch", cose, qos=1)
            ok = done.wait(600)
            main2, child2 = _cpu_s(proc.pid)
            again = (time.perf_counter() - t1, main2 - main1 + child2 - child1, child2 - child1)
        agent.disconnect()
        agent.loop_stop()
        assert ok, "no ack of the last batch"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
        if proc.stderr is not None:
            proc.stderr.close()
    return elapsed, cpu, child, hwm, again


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--records", type=int, default=200_000)
    ap.add_argument("--group", type=int, default=20, help="batches per commit in the core run")
    ap.add_argument("--skip-broker", action="store_true")
    ap.add_argument("--random-ids", action="store_true", help="UUIDv4 record ids (worst case for the index)")
    ap.add_argument("--postgres", action="store_true", help="store in a throwaway PostgreSQL 15, not SQLite")
    record.add_argument(ap)
    ap.add_argument("--resend", action="store_true", help="broker run: then publish every batch again")
    args = ap.parse_args()
    rec = record.Run("receiver-postgres" if args.postgres else "receiver", args.results)
    results: dict[str, Any] = {"records": 0}
    key = Ed25519PrivateKey.generate()
    t = time.perf_counter()
    batches = make_batches(args.records, 500, key, args.random_ids)
    n = len(batches) * 500
    results["records"] = n
    print(
        f"{len(batches)} batches of 500 records made in {time.perf_counter() - t:.1f} s "
        f"({sum(map(len, batches)) / len(batches) / 1024:.0f} KiB each)"
    )
    tmp = Path(tempfile.mkdtemp(prefix="bench-rx-"))
    mosq = None
    pg = None
    try:
        from tests.peers.net import free_port, port_open, wait_for
        from tests.peers.postgres import Postgres

        port = free_port()

        def store() -> str:  # a fresh database for each run
            if pg is None:
                return ""
            (tmp / "pg.password").write_text(pg.password)
            url = pg.url(pg.new_database(), with_password=False)
            return f'database_url = "{url}"\ndatabase_password_file = "pg.password"'

        if args.postgres:
            pg = Postgres().start()
        el, core_cpu = bench_core(write_config(tmp, key, port, store(), "core.toml"), batches, args.group)
        cfg = write_config(tmp, key, port, store())
        results["core"] = {"seconds": round(el, 3), "records_per_s": round(n / el), "group": args.group,
                           "cpu_s": round(core_cpu, 3), "records_per_cpu_s": round(n / core_cpu)}
        print(
            f"core   (check_batch + Writer, {args.group} batches a commit): {n} records in {el:.2f} s = "
            f"{n / el:,.0f} records/s"
        )
        if not args.skip_broker:
            (tmp / "mosq.conf").write_text(
                f"listener {port} 127.0.0.1\nallow_anonymous true\n"
                "max_queued_messages 100000\nmax_inflight_messages 0\n"
            )
            mosq = subprocess.Popen(
                [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c", str(tmp / "mosq.conf")],
                stderr=subprocess.DEVNULL,
            )
            wait_for(lambda: port_open(port), what="mosquitto")
            extra = None
            if args.resend:
                extra = batches[-1]
                batches = batches[:-1]
                n = len(batches) * 500
            el, cpu, child, hwm, again = bench_broker(cfg, batches, port, extra)
            results["broker"] = {"seconds": round(el, 3), "records_per_s": round(n / el),
                                 "receiver_cpu_s": round(cpu, 3), "verifier_cpu_s": round(child, 3),
                                 "records_per_cpu_s": round(n / cpu), "receiver_peak_rss_mb": round(hwm)}
            print(
                f"broker (Mosquitto -> coop-receiver run -> signed ack of the last seq): {n} records in {el:.2f} s"
                f" = {n / el:,.0f} records/s; receiver CPU {cpu:.2f} s ({child:.2f} s of it in the verifier process)"
                f" = {n / cpu:,.0f} records per CPU-second;"
                f" receiver peak RSS {hwm:.0f} MB"
            )
            if again is not None:
                print(
                    f"resend (every batch again, then one new): {n} records re-acked in {again[0]:.2f} s;"
                    f" receiver CPU {again[1]:.2f} s ({again[2]:.2f} s of it in the verifier process)"
                )
                results["resend"] = {"seconds": round(again[0], 3), "receiver_cpu_s": round(again[1], 3),
                                     "verifier_cpu_s": round(again[2], 3)}
        results["bench_max_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
        print(f"max RSS of this process: {results['bench_max_rss_mb']} MB")
    finally:
        if mosq is not None:
            mosq.terminate()
            mosq.wait()
        if pg is not None:
            pg.destroy()
        shutil.rmtree(tmp, ignore_errors=True)
    rec.write(results)


if __name__ == "__main__":
    sys.exit(main())

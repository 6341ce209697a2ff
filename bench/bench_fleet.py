"""The centre under a fleet of branches (bench/fleet.py): storms, steady load, ingest, faults.

Every scenario starts its own peers (a real Mosquitto with the broker settings of
docs/centre-deployment.md, a real PostgreSQL 15 with fsync on, `coop-receiver run` processes
as in production) and checks at the end that every batch of every branch is stored exactly
once (records counted in the database against what the fleet sealed). Results go to stdout
and, as JSON, to docs/bench-results/fleet-SCENARIO.json (bench/record.py).

  # the reconnect storm: today's receiver (SQLite, 1 process) beside PostgreSQL with 2 receivers
  .venv/bin/python -m bench.bench_fleet storm --branches 1000 --backlog 7200 --setups sqlite:1 pg:2
  # the same storm with impatient branches (fixed 15 s resend timer, reconnecting every 60 s)
  .venv/bin/python -m bench.bench_fleet storm --branches 1000 --backlog 7200 --setups pg:2 --impatient
  # both in one run, one sealing of the backlog (what docs/benchmarks.md shows)
  .venv/bin/python -m bench.bench_fleet storm --branches 1000 --backlog 7200 --setups sqlite:1 pg:2 --then-impatient
  # 1,000 branches at 2 records/s for 10 minutes: seal -> ack latency and receiver memory
  .venv/bin/python -m bench.bench_fleet steady --branches 1000 --rate 2 --minutes 10 --setups pg:2
  # centre ingest through 1, 2, 3 receivers against raw COPY of the same rows
  .venv/bin/python -m bench.bench_fleet ingest --branches 100 --backlog 10000 --setups pg:1 pg:2 pg:3
  # faults under the 1,000-branch load: SIGKILL a receiver every 30 s, SIGTERM another, restart
  # PostgreSQL and the broker once; then every batch of every branch must be stored exactly once
  .venv/bin/python -m bench.bench_fleet faults --branches 1000 --rate 2 --minutes 10 --setups pg:2
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import record
from bench.fleet import Branch, Fleet, Policy, write_device_keys
from bench.procs import live_cpu_s, tree
from receiver.keys import load_central_key
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.peers.postgres import Postgres
from wire.keys import generate_key_file

PREFIX = "coop/v1"
SHARE_GROUP = "coop-centre"

DEPLOYMENT = Path(__file__).resolve().parent.parent / "docs" / "centre-deployment.md"


def broker_settings() -> str:
    """The mosquitto.conf block of docs/centre-deployment.md section 3, as written there (one source)."""
    text = DEPLOYMENT.read_text()
    block = text.split("## 3.", 1)[1].split("```conf\n", 1)[1].split("```", 1)[0]
    return "\n".join(ln for ln in block.splitlines() if not ln.startswith(("persistence ", "autosave")))


def proc_mem_mb(pid: int, field_name: str = "VmRSS") -> float:
    try:
        for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
            if ln.startswith(field_name + ":"):
                return int(ln.split()[1]) / 1024
    except OSError:
        pass
    return 0.0


class Sampler(threading.Thread):
    """Peak memory of the broker and of the receivers (each with its verifier child), every 0.5 s."""

    def __init__(self, broker: Callable[[], int | None], receivers: Callable[[], list[int]]):
        super().__init__(daemon=True)
        self.broker = broker
        self.receivers = receivers
        self.broker_peak = 0.0
        self.receiver_peak = 0.0  # the largest single receiver (process tree)
        self.receivers_peak = 0.0  # all receivers together
        self._halt = threading.Event()

    def run(self) -> None:
        while not self._halt.wait(0.5):
            pid = self.broker()
            if pid:
                self.broker_peak = max(self.broker_peak, proc_mem_mb(pid))
            trees = [sum(proc_mem_mb(p) for p in tree(r)) for r in self.receivers()]
            if trees:
                self.receiver_peak = max(self.receiver_peak, max(trees))
                self.receivers_peak = max(self.receivers_peak, sum(trees))

    def stop(self) -> None:
        self._halt.set()
        self.join()


@dataclass
class Centre:
    """Broker, database and receivers of one setup ("sqlite:1", "pg:2")."""

    work: Path
    store: str
    n: int
    branches: list[Branch]
    broker: Mosquitto | None = None
    pg: Postgres | None = None
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    cfgs: list[Path] = field(default_factory=list)
    dburl: str = ""

    def start(self) -> Centre:
        self.work.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(self.work / "broker", extra=broker_settings(), persistence=True,
                                max_queued=int(broker_settings().split("max_queued_messages", 1)[1].split()[0])).start()
        if self.store == "pg":
            self.pg = Postgres(durable=True).start()
            self.dburl = self.pg.url("postgres", with_password=False)
            (self.work / "db.password").write_text(self.pg.password + "\n")
            os.chmod(self.work / "db.password", 0o600)
        if not (self.work / "central.pem").exists():
            generate_key_file(self.work / "central.pem")
        write_device_keys(self.branches, self.work / "devices")
        for i in range(self.n):
            self.cfgs.append(self._config(i))
        for i in range(self.n):
            self.start_receiver(i)
        return self

    def _config(self, i: int) -> Path:
        assert self.broker is not None
        store = (f'database_url = "{self.dburl}"\ndatabase_password_file = "db.password"\n'
                 if self.store == "pg" else 'db = "rx.sqlite3"\n')
        shared = f'shared_group = "{SHARE_GROUP}"\nsession_expiry_s = 60\n' if self.n > 1 else ""
        cfg = self.work / f"rx{i}.toml"
        cfg.write_text(
            f'[receiver]\n{store}key_file = "central.pem"\nmedia_dir = "media"\ndevices_dir = "devices"\n'
            f'broker = "{self.broker.url}"\nclient_id = "centre-rx{i}"\n{shared}log_level = "info"\n'
        )
        return cfg

    def start_receiver(self, i: int) -> None:
        log = open(self.work / f"rx{i}.log", "ab")  # noqa: SIM115 - handed to the child
        argv = [sys.executable, "-c", "from receiver.cli import main; main()", "run", "--config", str(self.cfgs[i])]
        proc = subprocess.Popen(argv, stdout=log, stderr=log)
        log.close()
        if i < len(self.procs):
            self.procs[i] = proc
        else:
            self.procs.append(proc)
        wait_for(lambda: "running" in (self.work / f"rx{i}.log").read_text(errors="replace")
                 or proc.poll() is not None, timeout=60, what=f"receiver {i}")
        if proc.poll() is not None:
            raise RuntimeError((self.work / f"rx{i}.log").read_text()[-3000:])

    def peer_cpu(self) -> dict[str, float]:
        """CPU seconds so far of the broker and of PostgreSQL (the postmaster and its backends)."""
        out = {}
        if self.broker is not None and self.broker.proc is not None:
            out["broker"] = live_cpu_s(self.broker.proc.pid)
        if self.pg is not None and self.pg.proc is not None:
            out["postgres"] = live_cpu_s(self.pg.proc.pid)
        return out

    def central_public(self) -> Any:
        return load_central_key(self.work / "central.pem").public_key()

    def stop(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=30)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if self.broker is not None:
            self.broker.stop()
        if self.pg is not None:
            self.pg.destroy()

    def stored(self) -> tuple[int, int]:
        """(records, batches) in the database."""
        if self.store == "pg":
            import psycopg

            assert self.pg is not None
            with psycopg.connect(self.pg.url("postgres")) as conn:
                r = conn.execute("SELECT count(*) FROM records").fetchone()
                b = conn.execute("SELECT count(*) FROM batches").fetchone()
        else:
            import sqlite3

            with sqlite3.connect(self.work / "rx.sqlite3") as conn:
                r = conn.execute("SELECT count(*) FROM records").fetchone()
                b = conn.execute("SELECT count(*) FROM batches").fetchone()
        assert r is not None and b is not None
        return int(r[0]), int(b[0])


def make_branches(n: int, policy: Policy, central: Any = None) -> list[Branch]:
    """central None: a throwaway key until reset() gives each centre's own."""
    if central is None:
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        central = Ed25519PrivateKey.generate().public_key()
    return [Branch(i, PREFIX, central, policy) for i in range(n)]


def seal_backlog(branches: list[Branch], records: int, per_batch: int) -> None:
    t0 = time.perf_counter()
    now = int(time.time() * 1000) - 3_600_000
    for b in branches:
        left = records
        while left > 0:
            k = min(per_batch, left)
            b.seal(k, now)
            left -= k
            now += 1
    print(f"  sealed {len(branches)} x {records} records in {time.perf_counter() - t0:.1f} s", flush=True)


def reset(branches: list[Branch], central: Any, policy: Policy) -> None:
    """The same sealed backlog, a new session state (for the next setup in the same run)."""
    from wire.messages import CentralVerifier

    for b in branches:
        b.client = None
        b.connected = False
        b.tried = False
        b.acked = 0
        b.next_send = 1
        b.ever_sent = 0
        b.inflight.clear()
        b.reconnect_at = 0.0
        b.policy = policy
        b.resend_wait = policy.first_wait
        b.verifier = CentralVerifier(central, b.dev)
        b.done_commands.clear()
        b.sealed_at = [time.monotonic()] * len(b.batches)


def storm_once(work: Path, setup: str, branches: list[Branch], policy: Policy, timeout: float) -> dict[str, Any]:
    store, n = setup.split(":")
    centre = Centre(work / setup.replace(":", "-"), store, int(n), branches)
    # The central key must exist before the branches learn it: make it first, then start.
    (centre.work).mkdir(parents=True, exist_ok=True)
    if not (centre.work / "central.pem").exists():
        generate_key_file(centre.work / "central.pem")
    central = centre.central_public()
    reset(branches, central, policy)
    centre.start()
    fleet = Fleet(branches, "127.0.0.1", centre.broker.port if centre.broker else 0)
    sampler = Sampler(lambda: centre.broker.proc.pid if centre.broker and centre.broker.proc else None,
                      lambda: [p.pid for p in centre.procs if p.poll() is None])
    sampler.start()
    total_records = sum(b.total_records for b in branches)
    try:
        cpu0 = sum(live_cpu_s(p.pid) for p in centre.procs)
        others0 = centre.peer_cpu()
        own0 = time.process_time()
        t0 = time.monotonic()
        fleet.connect_all()
        connected_at: list[float] = []

        def tick(now: float) -> None:
            if not connected_at and fleet.totals.connects >= len(branches):
                connected_at.append(now - t0)

        ok = fleet.run_until(lambda: all(b.done for b in branches), timeout, tick)
        elapsed = time.monotonic() - t0
        cpu = sum(live_cpu_s(p.pid) for p in centre.procs) - cpu0
        fleet_cpu = time.process_time() - own0
        others = {k: v - others0.get(k, 0.0) for k, v in centre.peer_cpu().items()}
        sampler.stop()
        records, batches = centre.stored()
        result = {
            "setup": setup, "policy": policy.resend, "resend_s": policy.resend_s,
            "reconnect_every_s": policy.reconnect_every_s, "branches": len(branches),
            "records": total_records, "drained": ok, "seconds": round(elapsed, 1),
            "records_per_s": round(sum(b.acked_records for b in branches) / elapsed),
            "all_connected_s": round(connected_at[0], 2) if connected_at else None,
            "connects": fleet.totals.connects, "connect_failures": fleet.totals.connect_failures,
            "published": fleet.totals.published, "resent": fleet.totals.resent, "acks": fleet.totals.acks,
            "resend_commands": fleet.totals.resend_commands, "commands": fleet.totals.commands,
            "receiver_cpu_us_per_record": round(cpu / max(1, records) * 1e6, 1),
            "fleet_cpu_s": round(fleet_cpu, 1), "load": os.getloadavg()[0],
            **{f"{k}_cpu_us_per_record": round(v / max(1, records) * 1e6, 1) for k, v in others.items()},
            "broker_peak_mb": round(sampler.broker_peak), "receiver_peak_mb": round(sampler.receiver_peak),
            "receivers_peak_mb": round(sampler.receivers_peak),
            "stored_records": records, "stored_batches": batches,
            # Against what was sealed by the end: the answers to the centre's commands are records too.
            "sealed_records": sum(b.total_records for b in branches),
            "exactly_once": records == sum(b.total_records for b in branches)
            and batches == sum(len(b.batches) for b in branches),
        }
    finally:
        if sampler.is_alive():
            sampler.stop()
        fleet.close()
        centre.stop()
    print("  " + json.dumps(result), flush=True)
    return result


def raise_fd_limit() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def main(argv: list[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("scenario", choices=["storm", "steady", "ingest", "faults"])
    ap.add_argument("--branches", type=int, default=1000)
    ap.add_argument("--backlog", type=int, default=7200, help="records each branch holds (storm, ingest)")
    ap.add_argument("--per-batch", type=int, default=500)
    ap.add_argument("--setups", nargs="+", default=["sqlite:1", "pg:2"], help="STORE:RECEIVERS, e.g. pg:2")
    ap.add_argument("--impatient", action="store_true", help="fixed resend timer, frequent reconnects")
    ap.add_argument("--then-impatient", action="store_true",
                    help="storm: after the setups, the same backlog again with impatient branches on the last one")
    ap.add_argument("--resend-s", type=float, default=15.0)
    ap.add_argument("--reconnect-every-s", type=float, default=60.0, help="impatient branches only")
    ap.add_argument("--window", type=int, default=4)
    ap.add_argument("--rate", type=float, default=2.0, help="records/s per branch (steady)")
    ap.add_argument("--seal-s", type=float, default=2.0, help="steady: a batch every so often per branch")
    ap.add_argument("--minutes", type=float, default=10.0, help="steady: duration")
    ap.add_argument("--kill-every-s", type=float, default=30.0, help="faults: SIGKILL a receiver this often")
    ap.add_argument("--timeout", type=float, default=1800.0)
    record.add_argument(ap)
    args = ap.parse_args(argv)
    raise_fd_limit()
    policy = Policy(window=args.window, resend="impatient" if args.impatient else "patient",
                    resend_s=args.resend_s, reconnect_every_s=args.reconnect_every_s if args.impatient else None)
    name = "fleet-" + args.scenario + ("-impatient" if args.impatient else "")
    run = record.Run(name, args.results)
    with tempfile.TemporaryDirectory(prefix="coop-fleet-") as tmp:
        work = Path(tmp)
        if args.scenario in ("storm", "ingest"):
            branches = make_branches(args.branches, policy)
            seal_backlog(branches, args.backlog, args.per_batch)
            results = [storm_once(work, s, branches, policy, args.timeout) for s in args.setups]
            if args.scenario == "storm" and args.then_impatient:
                # The same sealed backlog again, now with impatient branches, on the last setup.
                impatient = Policy(window=args.window, resend="impatient", resend_s=args.resend_s,
                                   reconnect_every_s=args.reconnect_every_s)
                results.append(storm_once(work / "impatient", args.setups[-1], branches, impatient, args.timeout))
            if args.scenario == "ingest":
                from bench.fleet_copy import raw_copy

                results.append(raw_copy(branches))
            run.write({"runs": results})
        elif args.scenario == "steady":
            from bench.fleet_steady import steady

            results = [steady(work, s, args, policy) for s in args.setups]
            run.write({"runs": results})
        else:
            from bench.fleet_steady import faults

            results = [faults(work, s, args, policy) for s in args.setups]
            run.write({"runs": results})


if __name__ == "__main__":
    main()

"""Steady load and faults under it, for bench/bench_fleet.py.

steady: every branch seals a batch every `seal_s` holding `rate * seal_s` records (its start
spread over the first interval, so 1,000 branches do not seal in step), for `minutes`; the
figure is seal -> signed ack latency of the batches sealed after a 30 s warm-up, and the
receivers' peak memory.

faults: the same load while the centre is hurt: one receiver SIGKILLed (and started again)
every `kill_every_s`, another sent SIGTERM once (it must exit within 10 s) and started again,
PostgreSQL restarted once, the broker restarted once. Then sealing stops, the fleet drains,
and every branch's batches are compared with what the database holds: each seq stored
exactly once, with the same bytes (so every chain verifies and nothing a branch forgot after
an ack is missing).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from bench.bench_fleet import Centre, Sampler, make_branches, reset
from bench.fleet import Branch, Fleet, Policy, percentile
from wire.keys import generate_key_file

WARMUP_S = 30.0


class Sealer:
    """Seals each branch's next batch when it is due."""

    def __init__(self, branches: list[Branch], rate: float, seal_s: float):
        self.branches = branches
        self.per_batch = max(1, round(rate * seal_s))
        self.seal_s = seal_s
        t0 = time.monotonic()
        self.due = [t0 + seal_s * i / len(branches) for i in range(len(branches))]
        self.on = True

    def tick(self, fleet: Fleet, now: float) -> None:
        if not self.on:
            return
        ms = int(time.time() * 1000)
        for i, b in enumerate(self.branches):
            if now >= self.due[i]:
                self.due[i] += self.seal_s
                b.seal(self.per_batch, ms)
                fleet.pump(b)


def _centre(work: Path, setup: str, branches: list[Branch], policy: Policy) -> Centre:
    store, n = setup.split(":")
    centre = Centre(work / setup.replace(":", "-"), store, int(n), branches)
    centre.work.mkdir(parents=True, exist_ok=True)
    generate_key_file(centre.work / "central.pem")
    reset(branches, centre.central_public(), policy)
    return centre.start()


def steady(work: Path, setup: str, args: argparse.Namespace, policy: Policy) -> dict[str, Any]:
    branches = make_branches(args.branches, policy, None)
    centre = _centre(work, setup, branches, policy)
    assert centre.broker is not None
    fleet = Fleet(branches, "127.0.0.1", centre.broker.port)
    sampler = Sampler(lambda: centre.broker.proc.pid if centre.broker and centre.broker.proc else None,
                      lambda: [p.pid for p in centre.procs if p.poll() is None])
    try:
        fleet.connect_all(per_second=200)
        sealer = Sealer(branches, args.rate, args.seal_s)
        t0 = time.monotonic()
        fleet.run_until(lambda: time.monotonic() - t0 >= WARMUP_S, WARMUP_S + 5, lambda now: sealer.tick(fleet, now))
        fleet.totals.latencies.clear()
        sampler.start()
        duration = args.minutes * 60
        t1 = time.monotonic()
        fleet.run_until(lambda: time.monotonic() - t1 >= duration, duration + 5,
                        lambda now: sealer.tick(fleet, now))
        lat = list(fleet.totals.latencies)
        sealer.on = False
        fleet.run_until(lambda: all(b.done for b in branches), 120)
        sampler.stop()
        records, batches = centre.stored()
        sealed = sum(b.total_records for b in branches)
        result = {
            "setup": setup, "branches": len(branches), "rate_per_branch": args.rate, "seal_s": args.seal_s,
            "minutes": args.minutes, "batches_measured": len(lat),
            "p50_ms": round(percentile(lat, 50) * 1000), "p99_ms": round(percentile(lat, 99) * 1000),
            "max_ms": round(max(lat) * 1000) if lat else None,
            "receiver_peak_mb": round(sampler.receiver_peak), "receivers_peak_mb": round(sampler.receivers_peak),
            "broker_peak_mb": round(sampler.broker_peak), "resent": fleet.totals.resent,
            "stored_records": records, "sealed_records": sealed, "exactly_once": records == sealed,
            "load": os.getloadavg()[0],
        }
    finally:
        if sampler.is_alive():
            sampler.stop()
        fleet.close()
        centre.stop()
    print("  " + json.dumps(result), flush=True)
    return result


def stored_hashes(centre: Centre) -> dict[str, dict[int, bytes]]:
    """dev -> seq -> SHA-256 of the stored batch bytes (a seq stored twice would fail the primary key)."""
    sql = "SELECT d.dev, b.seq, b.cose FROM batches b JOIN devices d ON d.did = b.did"
    out: dict[str, dict[int, bytes]] = {}
    if centre.store == "pg":
        import psycopg

        assert centre.pg is not None
        with psycopg.connect(centre.pg.url("postgres")) as conn:
            rows = conn.execute(sql).fetchall()
    else:
        import sqlite3

        with sqlite3.connect(centre.work / "rx.sqlite3") as conn:
            rows = conn.execute(sql).fetchall()
    for dev, seq, cose in rows:
        out.setdefault(dev, {})[int(seq)] = hashlib.sha256(bytes(cose)).digest()
    return out


def faults(work: Path, setup: str, args: argparse.Namespace, policy: Policy) -> dict[str, Any]:
    branches = make_branches(args.branches, policy, None)
    centre = _centre(work, setup, branches, policy)
    assert centre.broker is not None and centre.n >= 2
    fleet = Fleet(branches, "127.0.0.1", centre.broker.port)
    events: list[str] = []
    term_exit_s: list[float] = []
    try:
        fleet.connect_all(per_second=200)
        sealer = Sealer(branches, args.rate, args.seal_s)
        duration = args.minutes * 60
        t0 = time.monotonic()
        plan = {"pg": duration * 0.35, "broker": duration * 0.65, "term": duration * 0.5}
        next_kill = t0 + args.kill_every_s

        def hurt(now: float) -> None:
            nonlocal next_kill
            sealer.tick(fleet, now)
            el = now - t0
            if now >= next_kill:
                next_kill += args.kill_every_s
                p = centre.procs[0]
                os.kill(p.pid, signal.SIGKILL)
                p.wait()
                events.append(f"{el:.0f}s SIGKILL receiver 0")
                centre.start_receiver(0)
            if "term" in plan and el >= plan["term"]:
                del plan["term"]
                p = centre.procs[1]
                s = time.monotonic()
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                    term_exit_s.append(time.monotonic() - s)
                    events.append(f"{el:.0f}s SIGTERM receiver 1: exited in {term_exit_s[-1]:.1f} s")
                except Exception:  # noqa: BLE001 - recorded as the failure it is
                    events.append(f"{el:.0f}s SIGTERM receiver 1: still running after 10 s")
                    p.kill()
                    p.wait()
                centre.start_receiver(1)
            if "pg" in plan and el >= plan["pg"] and centre.pg is not None:
                del plan["pg"]
                centre.pg.stop()
                centre.pg.start()
                events.append(f"{el:.0f}s PostgreSQL restarted")
            if "broker" in plan and el >= plan["broker"] and centre.broker is not None:
                del plan["broker"]
                centre.broker.restart()
                events.append(f"{el:.0f}s broker restarted")

        fleet.run_until(lambda: time.monotonic() - t0 >= duration, duration + 60, hurt)
        sealer.on = False
        drained = fleet.run_until(lambda: all(b.done for b in branches), args.timeout)
        stored = stored_hashes(centre)
        missing = duplicates_or_wrong = 0
        for b in branches:
            have = stored.get(b.dev, {})
            for seq, cose in enumerate(b.batches, start=1):
                h = have.get(seq)
                if h is None:
                    missing += 1
                elif h != hashlib.sha256(cose).digest():
                    duplicates_or_wrong += 1
            duplicates_or_wrong += len([s for s in have if s > len(b.batches)])
        records, batches = centre.stored()
        sealed = sum(b.total_records for b in branches)
        result = {
            "setup": setup, "branches": len(branches), "minutes": args.minutes, "events": events,
            "sigterm_exit_s": term_exit_s, "drained": drained, "sealed_batches": sum(len(b.batches) for b in branches),
            "missing_batches": missing, "wrong_batches": duplicates_or_wrong, "stored_records": records,
            "sealed_records": sealed, "exactly_once": records == sealed and missing == 0 and duplicates_or_wrong == 0,
            "resent": fleet.totals.resent, "load": os.getloadavg()[0],
        }
    finally:
        fleet.close()
        centre.stop()
    print("  " + json.dumps(result), flush=True)
    return result

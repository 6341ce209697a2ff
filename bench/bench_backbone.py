"""Backbone benchmarks: drain of a 1M-record backlog, end-to-end rate, latency at 100 rec/s, RSS.

Real processes on loopback: Mosquitto, `coop-receiver run`, `coopagent run`; the load
comes from this process over HTTP. Run: .venv/bin/python -m bench.bench_backbone [drain|e2e|latency|all]
Sizes: BENCH_DRAIN_RECORDS (1000000), BENCH_E2E_SECONDS (20), BENCH_LATENCY_SECONDS (30),
BENCH_API_WORKERS, BENCH_WINDOW. Results are printed and written to docs/bench-results/backbone-WHAT.json
(bench/record.py).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from agent.demo import free_port, port_open, wait
from bench import record
from bench.procs import live_cpu_s, pss_mb, tree
from wire.keys import generate_key_file, load_private_key, public_pem

DEVICE = "bench-soc/branch-1/agent-1"
BIN = Path(sys.executable).parent


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree_pss_mb(pid: int) -> float:
    """Proportional set size of a process and its descendants (with [api] workers, the agent
    and its worker processes)."""
    return sum(pss_mb(p) for p in tree(pid))


def all_acked(site: Site) -> bool:
    acked, last = site.acked_and_last()
    return acked >= last


def sale(i: int) -> dict[str, Any]:
    return {"kind": "sale", "data": {"receipt": f"R-{i}", "till": "3", "currency": "KWD", "total": 1250,
                                     "lines": [{"gtin": "09506000134352", "qty": 1, "unit_price": 1250,
                                                "amount": 1250}]}}


class Site:
    """Broker, receiver and agent as separate processes under one temp dir."""

    def __init__(self, root: Path, **agent_over: Any):
        self.root = root
        self.mqtt_port = free_port()
        self.api_port = free_port()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        generate_key_file(root / "agent-data" / "device_key.pem")
        central = generate_key_file(root / "central_key.pem")
        (root / "central.pub.pem").write_text(public_pem(central.public_key()))
        dev = load_private_key(root / "agent-data" / "device_key.pem")
        (root / "device.pub.pem").write_text(public_pem(dev.public_key()))
        self.token = secrets.token_urlsafe(16)
        (root / "api.token").write_text(self.token)
        (root / "api.token").chmod(0o600)
        cfg: dict[str, Any] = {
            "agent": {"device": DEVICE, "data_dir": str(root / "agent-data"), "log_level": "warning"},
            "uplink": {"broker": f"mqtt://127.0.0.1:{self.mqtt_port}", "central_key": str(root / "central.pub.pem"),
                       "backoff_min_s": 0.2, "backoff_max_s": 1.0},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token_file": str(root / "api.token"),
                    "workers": int(os.environ.get("BENCH_API_WORKERS", "0"))},
        }
        for k, v in agent_over.items():
            cfg.setdefault(k, {}).update(v)
        self.agent_cfg = root / "agent.toml"
        self.agent_cfg.write_text(tomli_w.dumps(cfg))
        self.rx_cfg = root / "receiver.toml"
        self.rx_cfg.write_text(tomli_w.dumps({
            "receiver": {"db": str(root / "receiver.sqlite3"), "broker": f"mqtt://127.0.0.1:{self.mqtt_port}",
                         "key_file": str(root / "central_key.pem"), "media_dir": str(root / "rx-media"),
                         "log_level": "warning"},
            "devices": [{"id": DEVICE, "public_key": str(root / "device.pub.pem")}]}))
        (root / "mosquitto.conf").write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            "max_queued_messages 100000\n" + ("user root\n" if os.geteuid() == 0 else ""))

    def spawn(self, name: str, args: list[str]) -> None:
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115
        self.procs[name] = subprocess.Popen(args, stdout=log, stderr=log)
        log.close()

    def start_broker(self) -> None:
        self.spawn("mosquitto", [shutil.which("mosquitto") or "/usr/sbin/mosquitto", "-c",
                                 str(self.root / "mosquitto.conf")])
        wait(lambda: port_open(self.mqtt_port), 10, "mosquitto")

    def start_receiver(self) -> None:
        self.spawn("receiver", [str(BIN / "coop-receiver"), "run", "--config", str(self.rx_cfg)])

    def start_agent(self) -> None:
        self.spawn("agent", [str(BIN / "coopagent"), "run", "--config", str(self.agent_cfg)])
        wait(lambda: port_open(self.api_port), 30, "agent API")

    def db(self) -> sqlite3.Connection:
        return sqlite3.connect(f"file:{self.root / 'agent-data' / 'buffer.sqlite3'}?mode=ro", uri=True)

    def acked_and_last(self) -> tuple[int, int]:
        c = self.db()
        try:
            m = dict(c.execute("SELECT key, value FROM meta").fetchall())
            return int(m["acked_seq"]), int(m["last_seq"])
        finally:
            c.close()

    def stop(self) -> None:
        for name in ("agent", "receiver", "mosquitto"):
            p = self.procs.get(name)
            if p and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(20)
                except subprocess.TimeoutExpired:
                    p.kill()


def prefill(site: Site, n: int) -> float:
    """Put n sale records into the agent's buffer through the Store itself (the same code path
    the API uses after HTTP), sealing them into batches; returns seconds taken."""
    from agent.config.loader import load_config
    from buffer.store import Store
    from buffer.writer import SealOptions
    from wire.cose import Signer
    cfg = load_config(site.agent_cfg)
    store = Store(cfg.db_path, Signer(load_private_key(cfg.agent.key_path)),
                  SealOptions(DEVICE, cfg.buffer.batch_max_records, cfg.buffer.batch_max_age_s,
                              cfg.uplink.max_payload_bytes, 0)).start()
    t0 = time.perf_counter()
    futs = []
    for i in range(0, n, 1000):
        futs.append(store.submit_nowait([sale(j) for j in range(i, min(n, i + 1000))], "api:bench"))
        if len(futs) > 20:
            futs.pop(0).result()
    for f in futs:
        f.result()
    store.close()
    return time.perf_counter() - t0


def bench_drain(n: int) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-drain-"))
    window = int(os.environ.get("BENCH_WINDOW", "0"))
    site = Site(root, **({"uplink": {"inflight_window": window}} if window else {}))
    try:
        t_fill = prefill(site, n)
        _, last = site.acked_and_last()
        site.start_broker()
        site.start_receiver()
        wait(lambda: "coop-receiver running" in (root / "receiver.log").read_text(errors="replace"), 30,
             "the receiver's subscriptions")
        peak = 0.0
        site.start_agent()
        t0 = time.perf_counter()
        while True:
            acked, last = site.acked_and_last()
            peak = max(peak, rss_mb(site.procs["agent"].pid))
            if acked >= last:
                break
            if time.perf_counter() - t0 > 600:
                raise SystemExit("drain did not finish in 10 minutes")
            time.sleep(0.1)
        dt = time.perf_counter() - t0
        cpu = {name: round(live_cpu_s(p.pid), 1) for name, p in site.procs.items()}  # with their children
        rx = sqlite3.connect(f"file:{root / 'receiver.sqlite3'}?mode=ro", uri=True)
        stored = rx.execute("SELECT count(*) FROM records").fetchone()[0]
        rx.close()
        return {"records": n, "batches": last, "prefill_s": round(t_fill, 1), "drain_s": round(dt, 2),
                "records_per_s": round(n / dt), "receiver_stored": stored, "agent_peak_rss_mb": round(peak, 1),
                "cpu_s": cpu}
    finally:
        site.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_e2e(seconds: float, clients: int = 4, per_request: int = 100) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-e2e-"))
    site = Site(root)
    try:
        site.start_broker()
        site.start_receiver()
        site.start_agent()
        sent = [0] * clients
        stop = threading.Event()

        def worker(k: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{site.api_port}", timeout=60,
                              headers={"Authorization": f"Bearer {site.token}"}) as c:
                i = 0
                while not stop.is_set():
                    r = c.post("/v1/records", json={"records": [sale(k * 10**8 + i + j) for j in range(per_request)]})
                    if r.status_code != 201:
                        raise SystemExit(f"API {r.status_code}: {r.text}")
                    i += per_request
                    sent[k] += per_request

        threads = [threading.Thread(target=worker, args=(k,)) for k in range(clients)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        peak = peak_tree = 0.0
        while time.perf_counter() - t0 < seconds:
            peak = max(peak, rss_mb(site.procs["agent"].pid))
            peak_tree = max(peak_tree, tree_pss_mb(site.procs["agent"].pid))
            time.sleep(0.2)
        stop.set()
        for t in threads:
            t.join()
        t_sent = time.perf_counter() - t0
        wait(lambda: all_acked(site), 120, "acks", 0.02)
        t_acked = time.perf_counter() - t0
        total = sum(sent)
        return {"records": total, "post_s": round(t_sent, 2), "acked_s": round(t_acked, 2),
                "records_per_s_to_central_ack": round(total / t_acked), "clients": clients,
                "records_per_request": per_request, "agent_peak_rss_mb": round(peak, 1),
                "agent_tree_peak_pss_mb": round(peak_tree, 1),
                "api_workers": int(os.environ.get("BENCH_API_WORKERS", "0"))}
    finally:
        site.stop()
        shutil.rmtree(root, ignore_errors=True)


def bench_latency(seconds: float, rate: float = 100.0) -> dict[str, Any]:
    root = Path(tempfile.mkdtemp(prefix="bench-lat-"))
    site = Site(root)
    try:
        site.start_broker()
        site.start_receiver()
        site.start_agent()
        sent: list[tuple[str, int]] = []
        peak = 0.0
        with httpx.Client(base_url=f"http://127.0.0.1:{site.api_port}", timeout=30,
                          headers={"Authorization": f"Bearer {site.token}"}) as c:
            t0 = time.perf_counter()
            i = 0
            while time.perf_counter() - t0 < seconds:
                target = t0 + i / rate
                delay = target - time.perf_counter()
                if delay > 0:
                    time.sleep(delay)
                at_ms = time.time_ns() // 1_000_000
                r = c.post("/v1/records", json={"records": [sale(i)]})
                sent.append((r.json()["ids"][0], at_ms))
                i += 1
                if i % 100 == 0:
                    peak = max(peak, rss_mb(site.procs["agent"].pid))
        wait(lambda: all_acked(site), 60, "acks", 0.02)
        db = site.db()
        acked = dict(db.execute("SELECT r.id, b.acked_ms FROM records r JOIN batches b ON r.seq = b.seq"))
        db.close()
        lat = sorted(acked[rid] - at for rid, at in sent if rid in acked)
        q = statistics.quantiles(lat, n=100)
        return {"records": len(sent), "rate_per_s": rate, "p50_ms": round(q[49]), "p99_ms": round(q[98]),
                "max_ms": lat[-1], "agent_peak_rss_mb": round(peak, 1)}
    finally:
        site.stop()
        shutil.rmtree(root, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", nargs="?", default="all", choices=["drain", "e2e", "latency", "all"])
    record.add_argument(ap)
    args = ap.parse_args()
    what = args.what
    run = record.Run(f"backbone-{what}", args.results)
    n = int(os.environ.get("BENCH_DRAIN_RECORDS", "1000000"))
    results: dict[str, Any] = {}
    if what in ("drain", "all"):
        results["drain"] = bench_drain(n)
        print("drain", json.dumps(results["drain"]), flush=True)
    if what in ("e2e", "all"):
        results["e2e"] = bench_e2e(float(os.environ.get("BENCH_E2E_SECONDS", "20")))
        print("e2e", json.dumps(results["e2e"]), flush=True)
    if what in ("latency", "all"):
        results["latency"] = bench_latency(float(os.environ.get("BENCH_LATENCY_SECONDS", "30")))
        print("latency", json.dumps(results["latency"]), flush=True)
    run.write(results)


if __name__ == "__main__":
    main()

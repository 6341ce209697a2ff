"""Serial benchmarks: byte-arrival to durable record latency, and parser throughput per core.

    .venv/bin/python bench/bench_serial.py latency [--n 500]
    .venv/bin/python bench/bench_serial.py parsers [--frames 200000]

latency: a simulated scanner writes reads into a real pty pair (socat); the agent's
ScannerDevice reads, frames, interprets and submits each one to the real buffer
(buffer.store.Store: SQLite WAL, synchronous=FULL, group commit). Measured from just before
the simulator's write to the moment submit() returns (the record is on disk). Likewise a
streaming CAS scale for `weight` records (each placement is one record).
parsers: frames/s for each protocol's framer+parser on one core, fed 4 KiB chunks; and the
scanner's framing + interpretation (biip) with and without its read cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from agent.config.loader import parse_config  # noqa: E402
from bench import record  # noqa: E402
from drivers.serial.devices import ScaleDevice, ScannerDevice  # noqa: E402
from drivers.serial.framing import DelimitedFramer  # noqa: E402
from drivers.serial.scales import ScaleConfig, make_protocol  # noqa: E402
from drivers.serial.scanner import ScanInterpreter  # noqa: E402
from drivers.serial.sim import frames  # noqa: E402
from drivers.serial.sim.devices import CasSim, ScannerSim  # noqa: E402
from drivers.serial.sim.pty import PtyLink  # noqa: E402


class TimedSink:
    """Delegates to the real buffer and notes when each submit returned (the commit is durable)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.done: list[tuple[float, dict[str, Any]]] = []
        self.cond = threading.Condition()

    def submit(self, records: Sequence[Mapping[str, Any]], timeout: float | None = None) -> list[str]:
        ids: list[str] = self.inner.submit(records, timeout=timeout)
        t = time.perf_counter()
        with self.cond:
            self.done += [(t, dict(r)) for r in records]
            self.cond.notify_all()
        return ids

    def submit_nowait(self, records: Sequence[Mapping[str, Any]]) -> Any:
        return self.inner.submit_nowait(records)

    def wait(self, kind: str, n: int, timeout: float = 30) -> None:
        with self.cond:
            ok = self.cond.wait_for(lambda: sum(r["kind"] == kind for _, r in self.done) >= n, timeout)
        if not ok:
            raise TimeoutError(f"{kind} #{n} not recorded")


class Ctx:
    def __init__(self, config: Any, sink: TimedSink) -> None:
        self.config, self.records = config, sink

    def device_event(self, device: str, event: str, detail: Any = None, src: str = "agent") -> None:
        self.records.submit([{"kind": "device_event", "src": src,
                              "data": {"device": device, "event": event, "detail": dict(detail or {})}}])

    def set_health(self, component: str, health: str) -> None:
        pass


def real_buffer(root: Path) -> Any:
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from buffer.store import Store
    from buffer.writer import SealOptions
    from wire.cose import Signer

    opts = SealOptions(device="bench/branch-1/agent-1", batch_max_records=500, batch_max_age_s=1.0,
                       max_payload_bytes=256 * 1024, max_db_bytes=0)
    return Store(root / "buffer.sqlite3", Signer(Ed25519PrivateKey.generate()), opts).start()


def pct(xs: list[float], p: float) -> float:
    return sorted(xs)[min(len(xs) - 1, int(round(p / 100 * (len(xs) - 1))))]


def report(name: str, lat_ms: list[float]) -> dict[str, Any]:
    out = {"n": len(lat_ms), "p50_ms": round(statistics.median(lat_ms), 2), "p90_ms": round(pct(lat_ms, 90), 2),
           "p99_ms": round(pct(lat_ms, 99), 2), "max_ms": round(max(lat_ms), 2)}
    print(f"{name}: n={out['n']} p50={out['p50_ms']:.2f} ms p90={out['p90_ms']:.2f} ms "
          f"p99={out['p99_ms']:.2f} ms max={out['max_ms']:.2f} ms")
    return out


def latency(n: int, interval: float) -> dict[str, Any]:
    out: dict[str, Any] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        store = real_buffer(root)
        sink = TimedSink(store)
        scan_link = PtyLink(root / "tty-scan", root / "dev-scan").start()
        scale_link = PtyLink(root / "tty-scale", root / "dev-scale").start()
        cfg = parse_config({
            "agent": {"data_dir": str(root)},
            "scanners": [{"name": "dock", "port": str(scan_link.agent_side), "mode": "scan-only"}],
            "scales": [{"name": "dock", "port": str(scale_link.agent_side), "protocol": "cas"}],
        })
        ctx = Ctx(cfg, sink)
        stop = threading.Event()
        devs = [ScannerDevice(cfg.scanners[0], ctx, cfg.workflow), ScaleDevice(cfg.scales[0], ctx)]  # type: ignore[arg-type]
        threads = [threading.Thread(target=d.run, args=(stop,)) for d in devs]
        for t in threads:
            t.start()
        scanner = ScannerSim(scan_link.device_side).start()
        scale = CasSim(scale_link.device_side, interval_s=0.01).start()
        try:
            sink.wait("device_event", 2)
            codes = ["]E05901234123457", "]E04006381333931", "]C1010590123412345710LOT\x1d21S"]
            lat: list[float] = []
            for i in range(n):
                t0 = time.perf_counter()
                scanner.scan(codes[i % len(codes)])
                sink.wait("scan", i + 1)
                t1 = [t for t, r in sink.done if r["kind"] == "scan"][i]
                lat.append((t1 - t0) * 1000)
                stop.wait(interval)
            out["scan_ms"] = report("scanner read -> durable scan record", lat)
            wlat: list[float] = []
            for i in range(min(n, 200)):
                scale.place(0)
                stop.wait(0.05)
                t0 = time.perf_counter()
                scale.place(1000 + i)
                sink.wait("weight", i + 1)
                t1 = [t for t, r in sink.done if r["kind"] == "weight"][i]
                wlat.append((t1 - t0) * 1000)
            out["weight_ms"] = report("scale placement (CAS stream, 10 ms frames) -> durable weight record", wlat)
        finally:
            stop.set()
            for t in threads:
                t.join()
            scanner.stop()
            scale.stop()
            scan_link.stop()
            scale_link.stop()
            store.stop()
            store.close()
    return out


def throughput(total: int) -> dict[str, Any]:
    out: dict[str, Any] = {}
    from pydantic import TypeAdapter

    adapter: TypeAdapter[Any] = TypeAdapter(ScaleConfig)
    streams = {
        "mt-sics": frames.mt_sics_weight(1250) + frames.mt_sics_weight(90, stable=False),
        "toledo-8217": frames.toledo_8217_weight(1234) + frames.toledo_8217_status(motion=True),
        "toledo-continuous": frames.toledo_continuous(2500) + frames.toledo_continuous(10, motion=True),
        "cas": frames.cas_22(13500) + frames.cas_22(200, stable=False),
        "line-regex": b"  1.250 kg\r\n? 1.300 kg\r\n",
    }
    for name, pair in streams.items():
        data = pair * (total // 2)
        p = make_protocol(adapter.validate_python({"name": "b", "port": "/dev/null", "protocol": name}))
        t0 = time.process_time()
        n = 0
        for i in range(0, len(data), 4096):
            n += len(p.feed(data[i:i + 4096]))
        dt = time.process_time() - t0
        out[f"parser {name}"] = {"frames_per_s": round(n / dt), "frames": n, "cpu_s": round(dt, 3)}
        print(f"parser {name:<18} {n / dt:>10,.0f} frames/s per core ({n} frames, {dt:.2f} s CPU)")
    wf = parse_config({}).workflow
    codes = [f"]E0{c}" for c in ("5901234123457", "4006381333931", "9506000134352")]
    for label, distinct in (("cached (repeat items)", False), ("uncached (all distinct)", True)):
        si = ScanInterpreter(wf)
        framer = DelimitedFramer(b"\r")
        count = min(total, 20000)
        if distinct:
            from biip.checksums import gs1_standard_check_digit
            items = [f"590{i:09d}" for i in range(count)]
            blob = b"".join(f"]E0{s}{gs1_standard_check_digit(s)}\r".encode() for s in items)
        else:
            blob = b"".join((codes[i % 3] + "\r").encode() for i in range(count))
        t0 = time.process_time()
        n = 0
        for i in range(0, len(blob), 4096):
            for f in framer.feed(blob[i:i + 4096]):
                si.interpret(f)
                n += 1
        dt = time.process_time() - t0
        out[f"scanner {label}"] = {"reads_per_s": round(n / dt), "reads": n, "cpu_s": round(dt, 3)}
        print(f"scanner frame+interpret, {label:<24} {n / dt:>10,.0f} reads/s per core")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("what", choices=["latency", "parsers", "all"])
    ap.add_argument("--n", type=int, default=500, help="reads for the latency run")
    ap.add_argument("--interval", type=float, default=0.02, help="seconds between reads (latency)")
    ap.add_argument("--frames", type=int, default=200_000, help="frames per parser (throughput)")
    record.add_argument(ap)
    args = ap.parse_args()
    run = record.Run(f"serial-{args.what}", args.results)
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    results: dict[str, Any] = {}
    if args.what in ("parsers", "all"):
        results["parsers"] = throughput(args.frames)
    if args.what in ("latency", "all"):
        results["latency"] = latency(args.n, args.interval)
    run.write(results)


if __name__ == "__main__":
    main()

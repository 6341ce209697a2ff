"""Ingest benchmark: the local API against raw SQLite, measured side by side in one run.

    .venv/bin/python -m bench.bench_ingest [--seconds 10] [--workers 0 1 2] [--compare-fastapi] [--breakdown]
                                           [--ceiling]

(a) records/s through POST /v1/records with 100 records a request, against executemany of
    the same rows into a WAL file with synchronous=FULL (goal: >= 25% of raw);
(b) records/s with one record per POST over 8 keep-alive connections (goal: >= 6,300/s,
    3x the ThingsBoard gateway's 1,600-2,100/s on this machine).
The load comes from wrk (a separate process, Lua script for the body); the server is the
real ApiComponent in this process over the real buffer (buffer.store.Store), as in the
agent. Every run checks afterwards that the buffer holds at least every record the API
answered 201 for.

--ceiling runs (b) twice more with API workers, as experiments that say where its limit is,
never as figures for the goal: "nowrite" answers each request as soon as the writer thread
reads it, with no SQLite at all (HTTP, validation, encoding and the round trip to the agent
only); "nosync" is the real buffer with synchronous=NORMAL, i.e. no fsync at COMMIT. It
also reports the CPU of wrk itself, which shares the machine's two cores.

Throughput counts 2xx answers only, and any other answer voids the run (exit status 1 with
the counts): wrk's "Non-2xx or 3xx responses" and socket errors, and the API's own count of
answers by status (coop_api_ingest_requests_total) must show nothing but 201.
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import random
import re
import resource
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import Future
from pathlib import Path
from typing import Any

import orjson
from biip.checksums import gs1_standard_check_digit
from prometheus_client import REGISTRY

from agent.api.server import ApiComponent
from agent.config.model import AgentConfig
from bench import record
from bench.procs import own_cpu_s
from tests.peers.net import free_port, wait_for
from wire.records import normalize_records

TOKEN = "bench-token-0123456789abcdef"
RNG = random.Random(20261129)


def catalogue(n: int = 500) -> list[str]:
    """Valid GTIN-13s under a Kuwaiti-looking prefix: a shop's products repeat all day."""
    out = []
    for _ in range(n):
        payload = "628" + "".join(RNG.choice("0123456789") for _ in range(9))
        out.append(payload + str(gs1_standard_check_digit(payload)))
    return out


def sale(gtins: list[str], i: int) -> dict[str, Any]:
    lines = []
    for _ in range(RNG.randint(1, 4)):
        price = RNG.randint(50, 5000)
        if RNG.random() < 0.2:
            grams = RNG.randint(100, 3000)
            lines.append(
                {
                    "gtin": RNG.choice(gtins),
                    "weight_g": grams,
                    "unit_price": price,
                    "amount": price * grams // 1000,
                }
            )
        else:
            qty = RNG.randint(1, 5)
            lines.append({"gtin": RNG.choice(gtins), "qty": qty, "unit_price": price, "amount": price * qty})
    return {
        "kind": "sale",
        "data": {
            "receipt": f"R-{i:08d}",
            "till": f"till-{i % 6}",
            "lines": lines,
            "total": sum(x["amount"] for x in lines),
            "currency": "KWD",
        },
    }


# ---------------------------------------------------------------- raw SQLite baseline


def raw_sqlite(tmp: Path, records: list[dict[str, Any]], seconds: float) -> float:
    """executemany of the very rows the buffer stores (id, fp, kind, at, CBOR body), 5,000 a commit."""
    from wire.cose import dumps_deterministic

    norm = normalize_records(records, "api")
    rows = [
        (
            r.id,
            r.fingerprint,
            r.kind,
            r.at,
            dumps_deterministic({"id": r.id, "kind": r.kind, "at": r.at, "src": r.src, "data": r.data}),
        )
        for r in norm
    ]
    conn = sqlite3.connect(tmp / "raw.sqlite3", isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=FULL")
    conn.execute(
        "CREATE TABLE records (rowid INTEGER PRIMARY KEY AUTOINCREMENT, id TEXT NOT NULL UNIQUE, "
        "fp BLOB NOT NULL, kind TEXT NOT NULL, at INTEGER NOT NULL, body BLOB, seq INTEGER)"
    )
    done, rnd, sql_s = 0, 0, 0.0
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        batch = [(f"{rnd}-{r[0]}", *r[1:]) for r in rows]  # fresh ids, made outside the timed part
        t0 = time.perf_counter()
        conn.execute("BEGIN")
        conn.executemany("INSERT INTO records(id, fp, kind, at, body) VALUES (?,?,?,?,?)", batch)
        conn.execute("COMMIT")
        sql_s += time.perf_counter() - t0  # only the SQL is the limit we compare against
        done += len(batch)
        rnd += 1
    conn.close()
    return done / sql_s


# ---------------------------------------------------------------- sinks


class Sink:
    """The real buffer (buffer.store.Store) with a fresh device key, in its own folder."""

    def __init__(self, tmp: Path):
        from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

        from buffer.store import Store
        from buffer.writer import SealOptions
        from wire.cose import Signer

        opts = SealOptions(
            device="bench/branch-1/agent-1",
            batch_max_records=500,
            batch_max_age_s=2.0,
            max_payload_bytes=256 * 1024,
            max_db_bytes=0,
        )
        self.sink = Store(tmp / "buffer.sqlite3", Signer(Ed25519PrivateKey.generate()), opts).start()
        self.stop = self.sink.close
        self.path = self.sink.path
        # Instrumentation only: count the writer's groups (commits) to report how many
        # requests share one fsync. Skipped if the buffer's internals change.
        self.groups = self.ops = 0
        writer = self.sink.writer
        inner = getattr(writer, "_group", None)
        if inner is not None:

            def counted(ops: list[Any], *args: Any, **kwargs: Any) -> Any:
                if ops:
                    self.groups += 1
                    self.ops += len(ops)
                return inner(ops, *args, **kwargs)

            writer._group = counted  # type: ignore[method-assign]

    def count(self) -> int:
        with sqlite3.connect(self.path) as c:
            return int(c.execute("SELECT count(*) FROM records").fetchone()[0])


class StandIn:
    """For --breakdown only, never a sink for anything else: answers without storing.

    "null": HTTP and the API's own handler. "validate": plus normalize_records and the buffer's
    record encoding (what Store.submit_nowait does on the loop thread). "handoff": plus the
    answer coming from a second thread, as the buffer's writer thread gives it, but with no
    SQLite at all: the cost of the thread hand-off alone.
    """

    def __init__(self, mode: str):
        self.mode = mode
        self.sink = self
        self.groups = self.ops = 0
        self.q: queue.SimpleQueue[tuple[Future[list[str]], list[str]] | None] = queue.SimpleQueue()
        self.thread = threading.Thread(target=self._answer, name="stand-in", daemon=True)
        if mode == "handoff":
            self.thread.start()

    def _answer(self) -> None:
        while (item := self.q.get()) is not None:
            item[0].set_result(item[1])

    def submit_nowait(self, records: Any) -> Future[list[str]]:
        from buffer.store import encode_record

        fut: Future[list[str]] = Future()
        ids = ["-"] * len(records)
        if self.mode != "null":
            norm = normalize_records(records, "agent")
            for r in norm:
                encode_record(r)
            ids = [r.id for r in norm]
        if self.mode == "handoff":
            self.q.put((fut, ids))
        else:
            fut.set_result(ids)
        return fut

    def submit(self, records: Any, timeout: float | None = None) -> list[str]:
        return self.submit_nowait(records).result(timeout)

    def stop(self) -> None:
        if self.thread.is_alive():
            self.q.put(None)
            self.thread.join(5)

    def count(self) -> int:
        return -1


BREAKDOWN = {
    "null": "answers at once",
    "validate": "validates+encodes, answers at once",
    "handoff": "validates+encodes, answers from a second thread (no SQLite)",
}

class NullWriter:
    """For --ceiling only, never a sink for anything else: the buffer's writer thread without
    SQLite. It reads the API worker links (buffer.writer.OpSource) as the writer does and
    resolves every request at once, then runs the after-group hooks that send the answers."""

    def __init__(self) -> None:
        self.sink = self
        self.groups = self.ops = 0
        self.hooks: list[Any] = []
        self.changes: queue.SimpleQueue[tuple[bool, Any]] = queue.SimpleQueue()
        self.wake_r, self.wake_w = os.pipe()
        self.stopping = False
        self.thread = threading.Thread(target=self._run, name="null-writer", daemon=True)
        self.thread.start()

    def attach_source(self, source: Any) -> None:
        self.changes.put((True, source))
        os.write(self.wake_w, b"x")

    def detach_source(self, source: Any) -> None:
        self.changes.put((False, source))
        os.write(self.wake_w, b"x")

    def add_group_hook(self, fn: Any) -> None:
        self.hooks.append(fn)

    def remove_group_hook(self, fn: Any) -> None:
        self.hooks.remove(fn)

    def _run(self) -> None:
        import selectors

        sel = selectors.DefaultSelector()
        sel.register(self.wake_r, selectors.EVENT_READ, None)
        while not self.stopping:
            for key, _ in sel.select(0.5):
                if key.data is None:
                    os.read(self.wake_r, 4096)
                    while not self.changes.empty():
                        add, source = self.changes.get_nowait()
                        if add:
                            sel.register(source.fileno(), selectors.EVENT_READ, source)
                        elif source.fileno() in sel.get_map():
                            sel.unregister(source.fileno())
                            source.close()
                    continue
                ops = key.data.read_ops()
                if ops is None:
                    sel.unregister(key.fd)
                    key.data.close()
                    continue
                for op in ops:
                    op.future.set_result([e.rec.id for e in op.records])
                self.groups += 1
                self.ops += len(ops)
                for fn in self.hooks:
                    fn()

    def stop(self) -> None:
        self.stopping = True
        os.write(self.wake_w, b"x")
        self.thread.join(5)

    def count(self) -> int:
        return -1


def nosync_connection(path: Path) -> sqlite3.Connection:
    """--ceiling "nosync" only: the buffer's connection without fsync at COMMIT (experiment)."""
    from buffer import writer

    conn = writer._open_connection_full(path)  # type: ignore[attr-defined]
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


# ---------------------------------------------------------------- API under wrk

LUA = """
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer %s"
wrk.body = io.open("%s", "rb"):read("*a")
"""


UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}


class FailedAnswers(SystemExit):
    """A run where any request was answered with anything but 2xx, or failed at the socket:
    its rate would count refusals (a 503 is fast) as throughput, so it measures nothing."""


def parse_wrk(out: str) -> dict[str, Any]:
    """wrk's summary. Only 2xx answers count: wrk's own "Requests/sec" includes every answer,
    and "Non-2xx or 3xx responses" (its count of statuses >= 400) are taken out of it."""
    done = re.search(r"(\d+) requests in ([\d.]+)(us|ms|s|m|h),", out)
    if done is None:
        raise SystemExit(f"bench_ingest: cannot read wrk's summary:\n{out}")
    requests, elapsed = int(done.group(1)), float(done.group(2)) * UNITS[done.group(3)]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    bad = int(non2xx.group(1)) if non2xx else 0
    ok = requests - bad
    lat = dict(re.findall(r"^\s+(50|99)%\s+(\S+)", out, re.M))
    return {
        "requests": requests,
        "ok": ok,
        "non2xx": bad,
        "socket_errors": sum(map(int, errors.groups())) if errors else 0,
        "socket_errors_text": errors.group(0) if errors else "",
        "seconds": elapsed,
        "rps": round(ok / elapsed, 1) if elapsed else 0.0,
        "p50": lat.get("50", "?"),
        "p99": lat.get("99", "?"),
    }


def check_answers(result: dict[str, Any], url: str) -> None:
    if result["non2xx"] or result["socket_errors"]:
        raise FailedAnswers(
            f"bench_ingest: {url}: {result['non2xx']} of {result['requests']} answers were not 2xx and "
            f"{result['socket_errors']} requests failed at the socket ({result['socket_errors_text'] or 'none'}); "
            "the run is void: throughput counts 2xx answers only (see the agent's log for why)"
        )


def wrk(url: str, body: bytes, tmp: Path, conns: int, seconds: float, threads: int) -> dict[str, Any]:
    body_file = tmp / f"body-{len(body)}.json"
    body_file.write_bytes(body)
    script = tmp / "post.lua"
    script.write_text(LUA % (TOKEN, body_file))
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run(
        ["wrk", f"-t{threads}", f"-c{conns}", f"-d{seconds:.0f}s", "--latency", "-s", str(script), url],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # wrk is the only child reaped meanwhile
    result = parse_wrk(out)
    check_answers(result, url)
    result["wrk_cpu_s"] = round(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime, 2)
    return result


def ingest_answers() -> dict[str, float]:
    """The API's own count of POST /v1/records answers by status (agent.api.metrics)."""
    out: dict[str, float] = {}
    for metric in REGISTRY.collect():
        if metric.name == "coop_api_ingest_requests":
            for sample in metric.samples:
                if sample.name.endswith("_total"):
                    out[sample.labels["code"]] = sample.value
    return out


def server_saw_only_201(before: dict[str, float], ok: int, url: str) -> None:
    """The server's side of the same rule: every answer it counted was a 201 (workers send their
    counts every 0.5 s, hence the wait); catches any status wrk does not call an error (1xx, 3xx)."""
    def delta() -> dict[str, float]:
        now = ingest_answers()
        return {code: now[code] - before.get(code, 0.0) for code in now if now[code] != before.get(code, 0.0)}

    wait_for(lambda: delta().get("201", 0.0) >= ok, timeout=10, what="the API's count of 201 answers")
    other = {code: n for code, n in delta().items() if code != "201"}
    if other:
        raise FailedAnswers(f"bench_ingest: {url}: the API answered {other} (status: count) besides 201; "
                            "the run is void")


def run_api(
    tmp: Path,
    fast_path: bool,
    body: bytes,
    per_request: int,
    conns: int,
    seconds: float,
    threads: int,
    mode: str = "store",
    workers: int | str = 0,
) -> dict[str, Any]:
    sub = tmp / f"api-{fast_path}-{per_request}-{mode}-w{workers}"
    sub.mkdir()
    (sub / "api.token").write_text(TOKEN)
    cfg = AgentConfig.model_validate(
        {
            "agent": {"data_dir": str(sub)},
            "api": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(sub / "api.token"), "workers": workers},
        }
    )
    sink: Sink | StandIn | NullWriter
    if mode == "nowrite":
        sink = NullWriter()
    elif mode == "nosync":
        from buffer import writer

        writer._open_connection_full = writer.open_connection  # type: ignore[attr-defined]
        writer.open_connection = nosync_connection  # type: ignore[assignment]
        try:
            sink = Sink(sub)
        finally:
            writer.open_connection = writer._open_connection_full  # type: ignore[attr-defined]
    else:
        sink = Sink(sub) if mode == "store" else StandIn(mode)
    comp = ApiComponent(cfg, sink.sink, lambda: {}, lambda: b"", fast_path=fast_path)
    stop = threading.Event()
    thread = threading.Thread(target=comp.run, args=(stop,), name="api")
    thread.start()
    try:
        wait_for(comp.started.is_set, what="api listening", timeout=60)
        pids = [w.proc.pid for w in comp._pool.workers.values()] if comp._pool else []
        main0, workers0 = time.process_time(), sum(map(own_cpu_s, pids))
        answers0 = ingest_answers()
        url = f"http://{cfg.api.listen}/v1/records"
        result: dict[str, Any] = wrk(url, body, sub, conns, seconds, threads)
        server_saw_only_201(answers0, result["ok"], url)
        main_s, workers_s = time.process_time() - main0, sum(map(own_cpu_s, pids)) - workers0
        cpu_s = main_s + workers_s
        result["cpu_s"] = {"agent": round(main_s, 2), "workers": round(workers_s, 2)}
        result["workers"] = workers
        result["server_cpu_pct"] = round(100 * cpu_s / seconds)
        # CPU per record says more than records/s on a machine shared with other work.
        result["server_cpu_us_per_record"] = round(cpu_s * 1e6 / max(1, result["requests"] * per_request), 1)
        result["wrk_cpu_us_per_request"] = round(result["wrk_cpu_s"] * 1e6 / max(1, result["requests"]), 1)
    finally:
        stop.set()
        thread.join(30)
        sink.stop()
    ok = result["ok"]
    if mode not in ("store", "nosync"):
        result["records_per_s"] = round(result["rps"] * per_request)
        return result
    stored = sink.count()
    # wrk counts only the replies it read before its deadline; requests still in flight then
    # were committed too, so the sink may hold a few more than ok * per_request, never fewer.
    assert stored >= ok * per_request, f"lost records: {stored} stored < {ok * per_request} acknowledged"
    result["records_per_s"] = round(result["rps"] * per_request)
    result["requests_per_commit"] = round(sink.ops / sink.groups, 1) if sink.groups else None
    result["stored"] = stored
    return result


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else "")
    ap.add_argument("--seconds", type=float, default=10)
    ap.add_argument("--compare-fastapi", action="store_true", help="also run (b) through FastAPI's routing")
    ap.add_argument("--wrk-threads", type=int, default=1)
    ap.add_argument("--workers", type=lambda v: v if v == "auto" else int(v), nargs="+", default=[0, 1, 2],
                    help="[api] workers values to run (a) and (b) with, side by side (default: 0 1 2; "
                         "'auto' is the default config's choice on this machine)")
    ap.add_argument(
        "--breakdown",
        action="store_true",
        help="also run (b) with a stand-in sink: HTTP+handler only, then + validation and encoding",
    )
    ap.add_argument(
        "--ceiling",
        action="store_true",
        help="also run (b) with 1 and 2 workers with no SQLite at all, and with no fsync (experiments)",
    )
    record.add_argument(ap)
    args = ap.parse_args(argv)
    run = record.Run("ingest", args.results)
    gtins = catalogue()
    records = [sale(gtins, i) for i in range(100)]
    print(f"cpus={os.cpu_count()} load={os.getloadavg()[0]:.2f} seconds={args.seconds}", flush=True)
    report: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="bench-ingest-") as d:
        tmp = Path(d)
        raw = raw_sqlite(tmp, [sale(gtins, i) for i in range(5000)], args.seconds)
        report["raw_sqlite_rows_per_s"] = round(raw)
        print(f"raw SQLite executemany, synchronous=FULL: {raw:,.0f} rows/s", flush=True)
        body100 = orjson.dumps({"records": records})
        body1 = orjson.dumps({"records": records[:1]})
        for workers in args.workers:
            n = AgentConfig.model_validate({"api": {"workers": workers}}).api.effective_workers
            where = f"{n} API worker processes" if n else "in the agent's process"
            if workers == "auto":
                where += " (workers = auto, the default)"
            a = run_api(tmp, True, body100, 100, 8, args.seconds, args.wrk_threads, workers=workers)
            report[f"a_100_per_request_workers_{workers}"] = a
            print(
                f"(a) 100 records/request, 8 connections, {where}: {a['records_per_s']:,} records/s = "
                f"{100 * a['records_per_s'] / raw:.1f}% of raw (goal 25%); p50 {a['p50']} p99 {a['p99']}; "
                f"{a['requests_per_commit']} requests/commit; server CPU {a['server_cpu_pct']}% "
                f"{a['cpu_s']} = {a['server_cpu_us_per_record']} us/record",
                flush=True,
            )
            b = run_api(tmp, True, body1, 1, 8, args.seconds, args.wrk_threads, workers=workers)
            report[f"b_1_per_request_workers_{workers}"] = b
            print(
                f"(b) 1 record/request, 8 keep-alive connections, {where}: {b['records_per_s']:,} records/s "
                f"(goal 6,300); p50 {b['p50']} p99 {b['p99']}; {b['requests_per_commit']} requests/commit; "
                f"server CPU {b['server_cpu_pct']}% {b['cpu_s']} = {b['server_cpu_us_per_record']} us/record; "
                f"wrk {b['wrk_cpu_us_per_request']} us/request",
                flush=True,
            )
        if args.compare_fastapi:
            f = run_api(tmp, False, body1, 1, 8, args.seconds, args.wrk_threads)
            report["b_fastapi_route"] = f
            print(
                f"(b) through FastAPI routing instead of raw ASGI: {f['records_per_s']:,} records/s; "
                f"p50 {f['p50']} p99 {f['p99']}",
                flush=True,
            )
        if args.ceiling:
            for mode, what in (("nowrite", "no SQLite at all"), ("nosync", "synchronous=NORMAL, no fsync")):
                for workers in (1, 2):
                    c = run_api(tmp, True, body1, 1, 8, args.seconds, args.wrk_threads, mode, workers=workers)
                    report[f"b_ceiling_{mode}_workers_{workers}"] = c
                    print(
                        f"(b) ceiling, {workers} API worker(s), {what} (experiment, not the goal's figure): "
                        f"{c['records_per_s']:,} records/s; p50 {c['p50']}; server CPU {c['cpu_s']} = "
                        f"{c['server_cpu_us_per_record']} us/request; wrk {c['wrk_cpu_us_per_request']} us/request",
                        flush=True,
                    )
        if args.breakdown:
            for mode in ("null", "validate", "handoff"):
                m = run_api(tmp, True, body1, 1, 8, args.seconds, args.wrk_threads, mode)
                report[f"b_breakdown_{mode}"] = m
                print(
                    f"(b) breakdown, stand-in sink, {BREAKDOWN[mode]}: "
                    f"{m['records_per_s']:,} requests/s; p50 {m['p50']}; {m['server_cpu_us_per_record']} us/request",
                    flush=True,
                )
    print(json.dumps(report, indent=1))
    run.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())

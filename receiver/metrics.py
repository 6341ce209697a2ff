"""Prometheus metrics of a receiver, on an HTTP endpoint bound to loopback (`[receiver] metrics_port`).

Two kinds:

* What this process did, counted where it happens (small hooks in the writer and the
  server): batches by outcome, records stored, rejections by code, the latency from a
  batch's arrival to its verdict and of each group's commit. Several receivers each export
  their own; sum them in PromQL.
* Per branch state, read from the database every `metrics_refresh_s` by a thread with its
  own read-only connection (receiver/branches.py explains each value). Every receiver of a
  deployment exports the same values: alert on max() by device. The series are bounded:
  at most `metrics_max_branches` devices get their own series (the ones seen most
  recently); beyond that only per-society aggregates are exported, so a country's fleet
  cannot blow up Prometheus.

The alert rules that read these are receiver/alerts.rules.yml (tested by promtool).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.utils import floatToGoString

from receiver.config import ReceiverSection
from receiver.database import Database, open_database

log = logging.getLogger(__name__)

LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


@dataclass(frozen=True)
class BranchRow:
    dev: str
    acked_seq: int
    highest_seen: int
    held: int
    chain_breaks: int
    last_seen_ms: int | None
    backlog_records: int | None
    backlog_batches: int | None
    clock_drift_ms: int | None
    online: bool | None

    @property
    def labels(self) -> list[str]:
        society, branch, device = self.dev.split("/")
        return [society, branch, device]


def read_branches(db: Database) -> list[BranchRow]:
    """Every device's state in four queries (not per device: a thousand branches each scrape)."""
    held = dict(db.execute("SELECT did, count(*) FROM pending GROUP BY did").fetchall())
    breaks = dict(db.execute("SELECT did, count(*) FROM chain_breaks GROUP BY did").fetchall())
    rejected = dict(db.execute("SELECT dev, max(at) FROM rejections GROUP BY dev").fetchall())
    out: list[BranchRow] = []
    for did, dev, contiguous, highest, last_batch, status_json, status_at in db.execute(
        "SELECT did, dev, contiguous, highest_seen, last_batch_at, status_json, status_at FROM devices"
    ):
        st: dict[str, Any] = json.loads(status_json) if status_json else {}
        raw = st.get("backlog")
        backlog: dict[str, Any] = raw if isinstance(raw, dict) else {}
        at = st.get("at")
        seen = [t for t in (last_batch, status_at, rejected.get(dev)) if t]
        out.append(
            BranchRow(
                dev=dev,
                acked_seq=int(contiguous),
                highest_seen=int(highest),
                held=int(held.get(did, 0)),
                chain_breaks=int(breaks.get(did, 0)),
                last_seen_ms=max(seen) if seen else None,
                backlog_records=_int(backlog.get("records")),
                backlog_batches=_int(backlog.get("batches")),
                clock_drift_ms=at - status_at if isinstance(at, int) and status_at else None,
                online=None if not st else st.get("state") == "online",
            )
        )
    return out


def _int(v: Any) -> int | None:
    return v if type(v) is int else None


def _value(v: float) -> str:
    return str(floatToGoString(v))  # type: ignore[no-untyped-call]


# (name, help, value of a row or None when unknown); the per branch gauges, in exposition order.
BRANCH_GAUGES: list[tuple[str, str, Callable[[BranchRow], float | None]]] = [
    ("coop_receiver_branch_last_seen_timestamp_seconds", "last batch, status or rejection (epoch s)",
     lambda r: None if r.last_seen_ms is None else r.last_seen_ms / 1000),
    ("coop_receiver_branch_acked_seq", "highest contiguous seq stored and acked", lambda r: r.acked_seq),
    ("coop_receiver_branch_missing_batches", "seqs missing between the chain head and the highest seen",
     lambda r: max(0, r.highest_seen - r.acked_seq - r.held)),
    ("coop_receiver_branch_held_batches", "verified batches waiting for a missing seq", lambda r: r.held),
    ("coop_receiver_branch_chain_breaks", "batches kept as evidence that did not fit the chain",
     lambda r: r.chain_breaks),
    ("coop_receiver_branch_backlog_records", "records not yet acked, as the branch reports",
     lambda r: r.backlog_records),
    ("coop_receiver_branch_backlog_batches", "batches not yet acked, as the branch reports",
     lambda r: r.backlog_batches),
    ("coop_receiver_branch_clock_drift_seconds", "branch clock minus receipt time of its last status",
     lambda r: None if r.clock_drift_ms is None else r.clock_drift_ms / 1000),
    ("coop_receiver_branch_online", "1 when the last status says online",
     lambda r: None if r.online is None else float(r.online)),
]


def render_branches(rows: list[BranchRow], max_branches: int) -> bytes:
    """The per branch gauges in the text exposition format, bounded (see the module doc).

    Written by hand, once per refresh: prometheus_client's generic formatter took ~0.5 s of
    the receiver's CPU (and GIL) per scrape for 1,000 branches; this takes ~1/50 of that.
    Label values need no escaping: device id parts match [a-z0-9-] (receiver.config.DEVICE_RE).
    """
    rows = sorted(rows, key=lambda r: -(r.last_seen_ms or 0))
    own, rest = rows[:max_branches], rows[max_branches:]
    out: list[str] = []
    labels = [f'society="{s}",branch="{b}",device="{d}"' for s, b, d in (r.labels for r in own)]
    for name, doc, fn in BRANCH_GAUGES:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        for lab, r in zip(labels, own, strict=True):
            v = fn(r)
            if v is not None:
                out.append(f"{name}{{{lab}}} {_value(v)}\n")
    per_society: dict[str, list[BranchRow]] = {}
    for r in rest:
        per_society.setdefault(r.labels[0], []).append(r)
    aggregates: list[tuple[str, str, Callable[[list[BranchRow]], float]]] = [
        ("coop_receiver_society_unlisted_branches", "branches beyond metrics_max_branches, exported per society",
         lambda rs: float(len(rs))),
        ("coop_receiver_society_unlisted_chain_breaks", "chain breaks of the unlisted branches",
         lambda rs: float(sum(r.chain_breaks for r in rs))),
    ]
    for name, doc, agg in aggregates:
        out.append(f"# HELP {name} {doc}\n# TYPE {name} gauge\n")
        out += [f'{name}{{society="{soc}"}} {_value(agg(rs))}\n' for soc, rs in sorted(per_society.items())]
    return "".join(out).encode()


class _Handler(BaseHTTPRequestHandler):
    metrics: ReceiverMetrics  # set on the subclass made per server

    def do_GET(self) -> None:  # noqa: N802 - http.server's name
        if self.path.split("?")[0] not in ("/metrics", "/"):
            self.send_error(404)
            return
        body = generate_latest(self.metrics.registry) + self.metrics.branch_text
        self.send_response(200)
        self.send_header("Content-Type", CONTENT_TYPE_LATEST)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        log.debug("metrics: %s", format % args)


class ReceiverMetrics:
    """The receiver's metrics; `start()` serves them on 127.0.0.1:port and starts the branch reader."""

    def __init__(self, section: ReceiverSection):
        self.section = section
        self.registry = CollectorRegistry()
        r = self.registry
        self.batches = Counter("coop_receiver_batches", "batches judged, by outcome", ["outcome"], registry=r)
        self.records = Counter("coop_receiver_records_stored", "records stored (new ids)", registry=r)
        self.rejections = Counter("coop_receiver_rejections", "messages rejected, by code", ["code"], registry=r)
        self.verify = Histogram("coop_receiver_verify_seconds",
                                "a batch's arrival to its verdict from the verifier process (queue and check)",
                                buckets=LATENCY_BUCKETS, registry=r)
        self.commit = Histogram("coop_receiver_commit_seconds", "a group's judging and durable commit",
                                buckets=LATENCY_BUCKETS, registry=r)
        self.group = Histogram("coop_receiver_group_messages", "messages per committed group",
                               buckets=(1, 2, 5, 10, 20, 50, 100, 200), registry=r)
        self.branch_text = b""  # render_branches of the last snapshot
        self.read_at = 0.0
        self.gauge("coop_receiver_branch_snapshot_age_seconds", "age of the per branch snapshot",
                   lambda: time.monotonic() - self.read_at if self.read_at else float("nan"))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._server: Any = None
        self.port: int | None = None

    # -- hooks (the worker thread) ---------------------------------------------------------

    def rejected(self, code: str) -> None:
        self.rejections.labels(code).inc()

    def stored(self, n_new: int) -> None:
        self.batches.labels("stored").inc()
        self.records.inc(n_new)

    def outcome(self, what: str) -> None:
        self.batches.labels(what).inc()

    def committed(self, messages: int, seconds: float) -> None:
        self.commit.observe(seconds)
        self.group.observe(messages)

    def verified(self, seconds: float) -> None:
        self.verify.observe(seconds)

    # -- lifecycle -------------------------------------------------------------------------

    def gauge(self, name: str, doc: str, fn: Callable[[], float]) -> None:
        Gauge(name, doc, registry=self.registry).set_function(fn)

    def start(self) -> ReceiverMetrics:
        port = self.section.metrics_port
        if port is None:
            return self
        handler = type("Handler", (_Handler,), {"metrics": self})
        self._server = ThreadingHTTPServer(("127.0.0.1", port), handler)
        self._server.daemon_threads = True
        self.port = int(self._server.server_port)
        threading.Thread(target=self._server.serve_forever, name="receiver-metrics-http", daemon=True).start()
        self._thread = threading.Thread(target=self._read_loop, name="receiver-metrics", daemon=True)
        self._thread.start()
        log.info("metrics on http://127.0.0.1:%d/metrics", self.port)
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
            self._thread = None
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def update(self, rows: list[BranchRow]) -> None:
        self.branch_text = render_branches(rows, self.section.metrics_max_branches)
        self.read_at = time.monotonic()

    def _read_loop(self) -> None:
        """Refresh the branch snapshot every metrics_refresh_s, with a read-only connection of its own."""
        db: Database | None = None
        try:
            while True:
                try:
                    if db is None:
                        db = open_database(self.section, writer=False)
                    self.update(read_branches(db))
                    if db.kind == "postgresql":
                        db.rollback()  # end the read's snapshot: autocommit, but be sure
                except Exception as exc:  # the database may be restarting: keep the last snapshot, try again
                    log.warning("metrics: cannot read branch state: %s", exc)
                    if db is not None:
                        db.close()
                        db = None
                if self._stop.wait(self.section.metrics_refresh_s):
                    return
        finally:
            if db is not None:
                db.close()


class NullMetrics(ReceiverMetrics):
    """What the writer calls when metrics are off: nothing."""

    def __init__(self) -> None:  # no registry, no thread
        pass

    def rejected(self, code: str) -> None:
        pass

    def stored(self, n_new: int) -> None:
        pass

    def outcome(self, what: str) -> None:
        pass

    def committed(self, messages: int, seconds: float) -> None:
        pass

    def verified(self, seconds: float) -> None:
        pass


NULL = NullMetrics()

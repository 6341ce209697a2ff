"""Receiving and stock-take: turns scans, weights and command barcodes into stock records.

Each scanner is a "station" with a mode (receive, issue, transfer, waste, count, scan-only),
a document, a location and a one-shot quantity multiplier. An item scan waits up to
workflow.pair_window_s for a stable weight from the scanner's paired scale; then (or at the
next scan, or when the window passes) it becomes a `stock_move` or a `count` line.
All state lives in WorkflowStore, so a restart resumes sessions and pending items.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from uuid6 import uuid7

from core.interfaces import RecordConflict, RecordInvalid, RecordRejected, RecordSink
from drivers.serial.config import ScannerConfig, WorkflowConfig
from drivers.serial.workflows.store import WorkflowStore

log = logging.getLogger(__name__)

MOVE_ENDS = {  # mode -> (from, to) when no location says otherwise
    "receive": ("supplier", None),
    "issue": (None, "issued"),
    "transfer": (None, None),
    "waste": (None, "waste"),
}


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class WorkflowError(Exception):
    """A request the workflow refuses; status is the HTTP status the local API answers with."""

    def __init__(self, message: str, status: int = 409) -> None:
        super().__init__(message)
        self.status = status


class WorkflowEngine:
    def __init__(self, wf: WorkflowConfig, scanners: Sequence[ScannerConfig], data_dir: Path, sink: RecordSink) -> None:
        self.wf = wf
        self.sink = sink
        self.scanners = {s.name: s for s in scanners}
        self.paired: dict[str, list[str]] = {}
        for s in scanners:
            if s.scale:
                self.paired.setdefault(s.scale, []).append(s.name)
        self.doc_re = re.compile(wf.doc_pattern)
        self.store = WorkflowStore(data_dir / wf.db_file)
        self._flush_lock = threading.Lock()

    def close(self) -> None:
        self.store.close()

    # -- inputs ---------------------------------------------------------------------------------
    def on_scan(self, device: str, scan: Mapping[str, Any], at: int, scan_id: str | None = None) -> dict[str, Any]:
        """Apply one read from scanner `device`; returns what happened (for the CLI and logs)."""
        if scan.get("type") == "command":
            if not scan.get("valid"):
                return {"result": "refused", "reason": scan.get("reason")}
            try:
                return self._command(device, str(scan["command"]), scan.get("arg"), at)
            except WorkflowError as exc:
                log.warning("scanner %s: command %s refused: %s", device, scan.get("command"), exc)
                return {"result": "refused", "reason": str(exc)}
        with self.store.tx() as db:
            st = self._station(db, device)
            self._finish_pending(db, st, None)
            outcome = self._item(db, st, scan, at, scan_id)
            self.store.save_station(db, st)
        self.flush()
        return outcome

    def on_weight(self, scale: str, grams: int, at: int) -> dict[str, Any] | None:
        """A stable weight from `scale`: it completes the newest pending item of a paired scanner."""
        with self.store.tx() as db:
            best: dict[str, Any] | None = None
            for device in self.paired.get(scale, []):
                st = self._station(db, device)
                p = st["pending"]
                if p and p["at"] <= at <= p["deadline"] and (best is None or p["at"] > best["pending"]["at"]):
                    best = st
            if best is None:
                return None
            outcome = self._finish_pending(db, best, grams)
            self.store.save_station(db, best)
        self.flush()
        return outcome

    def tick(self, now: int | None = None) -> None:
        """Items whose pairing window has passed become quantity moves (also after a restart)."""
        now = now_ms() if now is None else now
        devices = self.store.stations_with_pending()
        if not devices:
            return
        with self.store.tx() as db:
            for device in devices:
                st = self._station(db, device)
                if st["pending"] and st["pending"]["deadline"] < now:
                    self._finish_pending(db, st, None)
                    self.store.save_station(db, st)
        self.flush()

    # -- stock-take sessions ----------------------------------------------------------------------
    def open_session(
        self,
        location: str,
        device: str,
        *,
        blind: bool | None = None,
        recount: bool = False,
        src: str = "api:local",
        at: int | None = None,
    ) -> dict[str, Any]:
        at = now_ms() if at is None else at
        if device not in self.scanners:
            raise WorkflowError(f"no scanner named {device!r}; configured: {', '.join(self.scanners) or 'none'}", 404)
        with self.store.tx() as db:
            st = self._station(db, device)
            cur = self.store.open_session_of(db, device=device)
            if cur:
                raise WorkflowError(
                    f"scanner {device} already has session {cur['id']} open at {cur['location']}; close it first"
                )
            cur = self.store.open_session_of(db, location=location)
            if cur:
                raise WorkflowError(
                    f"location {location} is already being counted in session {cur['id']} on {cur['device']}"
                )
            recount_of = None
            if recount:
                last = self.store.last_closed(db, location)
                if last is None:
                    raise WorkflowError(f"no closed count at {location} to recount", 404)
                recount_of = last["id"]
            sid = str(uuid7())
            blind = self.wf.blind_count if blind is None else blind
            db.execute(
                "INSERT INTO sessions(id, location, device, state, blind, recount_of, opened_at, opened_by) "
                "VALUES (?, ?, ?, 'open', ?, ?, ?, ?)",
                (sid, location, device, int(blind), recount_of, at, src),
            )
            self._finish_pending(db, st, None)
            st["mode"] = "count"
            self.store.save_station(db, st)
            data: dict[str, Any] = {
                "session": sid,
                "state": "open",
                "locations": [location],
                "device": device,
                "blind": blind,
            }
            if recount_of:
                data["recount_of"] = recount_of
            self.store.enqueue(db, self._record("count_session", data, at, src))
        self.flush()
        log.info("count session %s opened at %s on %s", sid, location, device)
        return data

    def close_session(
        self,
        session_id: str | None = None,
        device: str | None = None,
        *,
        src: str = "api:local",
        at: int | None = None,
    ) -> dict[str, Any]:
        at = now_ms() if at is None else at
        with self.store.tx() as db:
            if session_id is not None:
                sess = self.store.session(db, session_id)
            elif device is not None:
                sess = self.store.open_session_of(db, device=device)
            else:
                raise WorkflowError("name the session or the device", 400)
            if sess is None or sess["state"] != "open":
                raise WorkflowError(f"no open session {'for ' + device if device else session_id}", 404)
            if sess["device"] in self.scanners:
                st = self._station(db, sess["device"])
                self._finish_pending(db, st, None)
                self.store.save_station(db, st)
            n, totals = self.store.totals(db, sess["id"])
            db.execute("UPDATE sessions SET state='closed', closed_at=? WHERE id=?", (at, sess["id"]))
            data: dict[str, Any] = {
                "session": sess["id"],
                "state": "closed",
                "locations": [sess["location"]],
                "device": sess["device"],
                "blind": bool(sess["blind"]),
                "opened_at": sess["opened_at"],
                "lines": n,
                "totals": totals,
            }
            if sess["recount_of"]:
                data["recount_of"] = sess["recount_of"]
            self.store.enqueue(db, self._record("count_session", data, at, src))
        self.flush()
        log.info("count session %s closed: %d lines, %d items", sess["id"], n, len(totals))
        return data

    def status(self) -> dict[str, Any]:
        """Open sessions; a blind session shows how many lines were counted, never quantities."""
        out = []
        for s in self.store.open_sessions():
            with self.store.tx() as db:
                n, totals = self.store.totals(db, s["id"])
            item: dict[str, Any] = {
                "session": s["id"],
                "location": s["location"],
                "device": s["device"],
                "blind": bool(s["blind"]),
                "opened_at": s["opened_at"],
                "lines": n,
            }
            if s["recount_of"]:
                item["recount_of"] = s["recount_of"]
            if not s["blind"]:
                item["totals"] = totals
            out.append(item)
        return {"sessions": out, "outbox": self.store.outbox_size()}

    # -- delivery to the buffer -------------------------------------------------------------------
    def flush(self) -> int:
        """Hand outbox records to the agent's buffer in order; keep them if it refuses (retried by tick)."""
        sent = 0
        with self._flush_lock:
            while True:
                batch = self.store.pending_records()
                if not batch:
                    return sent
                try:
                    self.sink.submit([r for _, r in batch], timeout=10.0)
                except (RecordInvalid, RecordConflict) as exc:
                    # Refused for good: park it, or it would block every record behind it.
                    i = exc.index if exc.index is not None and 0 <= exc.index < len(batch) else 0
                    log.error("workflow record %s refused by the buffer, parked: %s", batch[i][1]["id"], exc)
                    self.store.reject(batch[i][0], str(exc), now_ms())
                    continue
                except (RecordRejected, TimeoutError) as exc:
                    log.warning("workflow records kept for retry (%d waiting): %s", len(batch), exc)
                    return sent
                self.store.delivered(batch[-1][0])
                sent += len(batch)

    # -- internals --------------------------------------------------------------------------------
    def _station(self, db: Any, device: str) -> dict[str, Any]:
        sc = self.scanners.get(device)
        return self.store.station(db, device, sc.mode if sc else "scan-only", sc.location if sc else None)

    def _record(self, kind: str, data: dict[str, Any], at: int, src: str) -> dict[str, Any]:
        return {"id": str(uuid7()), "kind": kind, "at": at, "src": src, "data": data}

    def _command(self, device: str, action: str, arg: Any, at: int) -> dict[str, Any]:
        src = f"scanner:{device}"
        if action in ("count-open", "count-recount"):
            data = self.open_session(str(arg), device, recount=action == "count-recount", src=src, at=at)
            return {"result": "session-open", **data}
        if action == "count-close":
            data = self.close_session(device=device, src=src, at=at)
            return {"result": "session-closed", "session": data["session"], "lines": data["lines"]}
        with self.store.tx() as db:
            st = self._station(db, device)
            self._finish_pending(db, st, None)
            key = {"mode": "mode", "doc": "doc", "loc": "location", "to": "to_loc", "qty": "multiplier"}[action]
            st[key] = arg
            self.store.save_station(db, st)
        self.flush()
        return {"result": "set", key: arg}

    def _item(
        self, db: Any, st: dict[str, Any], scan: Mapping[str, Any], at: int, scan_id: str | None
    ) -> dict[str, Any]:
        mode = st["mode"]
        if mode == "scan-only":
            return {"result": "recorded"}
        if (
            mode in ("receive", "issue", "transfer", "waste")
            and scan.get("type") == "text"
            and self.doc_re.match(str(scan.get("raw", "")).strip())
        ):
            st["doc"] = str(scan["raw"]).strip()
            return {"result": "set", "doc": st["doc"]}
        if not scan.get("valid") or not scan.get("gtin"):
            return {"result": "ignored", "reason": scan.get("reason") or "not an item barcode"}
        item: dict[str, Any] = {
            "gtin": scan["gtin"],
            "qty": st["multiplier"],
            "at": at,
            "mode": mode,
            "doc": st["doc"],
            "location": st["location"],
            "to": st["to_loc"],
        }
        if scan_id:
            item["scan"] = scan_id
        for k in ("price_fils", "price_minor", "batch", "serial", "expiry", "best_before"):
            if k in scan:
                item[k] = scan[k]
        if mode == "count":
            sess = self.store.open_session_of(db, device=st["device"])
            if sess is None:
                return {
                    "result": "ignored",
                    "reason": "no open count session on this scanner (scan CMD:COUNT:OPEN:LOC)",
                }
            item["session"], item["location"] = sess["id"], sess["location"]
        elif not st["doc"]:
            # uplink-v1's stock_move carries `doc`; every move needs its delivery note, transfer
            # or write-off document, so the dock scans it (or CMD:DOC:...) first.
            return {"result": "ignored", "reason": f"{mode}: scan the document first"}
        st["multiplier"] = 1
        if "weight_g" in scan:
            return self._finish(db, st, item, int(scan["weight_g"]))
        sc = self.scanners.get(st["device"])
        if sc and sc.scale and self.wf.pair_window_s > 0:
            item["deadline"] = at + int(self.wf.pair_window_s * 1000)
            st["pending"] = item
            return {"result": "waiting-for-weight", "gtin": item["gtin"]}
        return self._finish(db, st, item, None)

    def _finish_pending(self, db: Any, st: dict[str, Any], weight_g: int | None) -> dict[str, Any] | None:
        item = st["pending"]
        if not item:
            return None
        st["pending"] = None
        return self._finish(db, st, item, weight_g)

    def _finish(self, db: Any, st: dict[str, Any], item: dict[str, Any], weight_g: int | None) -> dict[str, Any]:
        src = f"scanner:{st['device']}"
        measure: dict[str, int] = {"weight_g": weight_g} if weight_g is not None else {"qty": int(item["qty"])}
        extra: dict[str, Any] = {
            k: item[k]
            for k in ("scan", "price_fils", "price_minor", "batch", "serial", "expiry", "best_before")
            if k in item
        }
        if item["mode"] == "count":
            rec = self._record(
                "count",
                {
                    "session": item["session"],
                    "location": item["location"],
                    "gtin": item["gtin"],
                    **measure,
                    **extra,
                },
                item["at"],
                src,
            )
            db.execute(
                "INSERT INTO lines(session, gtin, qty, weight_g, at, record_id) VALUES (?, ?, ?, ?, ?, ?)",
                (
                    item["session"],
                    item["gtin"],
                    measure.get("qty"),
                    measure.get("weight_g"),
                    item["at"],
                    rec["id"],
                ),
            )
        else:
            default_from, default_to = MOVE_ENDS[item["mode"]]
            loc = (
                item["location"]
                or (self.scanners[st["device"]].location if st["device"] in self.scanners else None)
                or "branch"
            )
            frm = default_from or loc
            to = default_to or (item["to"] if item["mode"] == "transfer" else loc) or "unknown"
            rec = self._record(
                "stock_move",
                {
                    "type": item["mode"],
                    "gtin": item["gtin"],
                    **measure,
                    "from": frm,
                    "to": to,
                    "doc": item["doc"],
                    **extra,
                },
                item["at"],
                src,
            )
        self.store.enqueue(db, rec)
        return {"result": rec["kind"], **{k: v for k, v in rec["data"].items() if k != "scan"}}

"""What a record's page shows: the record from its signed batch, the verdicts, the device's clock, its clips and gaps.

Everything is read from the receiver's store and re-checked here, not taken from flags:
the signature is verified again with the registered keys, the chain links on either side
of the batch are recomputed from the stored bytes.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2

from receiver.database import Database
from receiver.keys import DeviceRegistry
from receiver.search import Grants, mapping, split_dev
from wire.batches import Rejected, verify_signed

ZERO = b"\x00" * 32
MAX_SPAN_MS = 7 * 86_400_000  # the longest clip or gap a record's page looks back for


@dataclass
class Verdict:
    ok: bool
    text: str


@dataclass
class Media:
    did: int
    dev: str
    media_id: str
    camera: str
    type: str
    start: int
    end: int
    state: str  # complete | pending | unknown (announced record seen, no chunks yet)
    received: int  # chunks so far
    chunks: int
    reason: str


@dataclass
class Gap:
    camera: str
    start: int | None
    end: int | None
    reason: str


@dataclass
class Request:
    cid: str
    cmd: str
    camera: str
    start: int | None
    end: int | None
    account: str
    at: int
    state: str  # sent | answered | failed | arrived
    detail: str = ""
    media: list[str] = field(default_factory=list)


@dataclass
class RecordView:
    did: int
    dev: str
    society: str
    branch: str
    seq: int
    pos: int
    record: dict[str, Any]
    sealed: int
    received_at: int
    signature: Verdict
    chain: Verdict
    clock: list[str]
    media: list[Media]
    gaps: list[Gap]
    requests: list[Request]


class NotFound(LookupError):
    pass


class NotGranted(PermissionError):
    pass


def plain(v: Any) -> Any:
    """A record's data as JSON-safe values (bytes as hex) for the page."""
    if isinstance(v, bytes):
        return v.hex()
    if isinstance(v, dict):
        return {str(k): plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [plain(x) for x in v]
    return v


def load_record(rdb: Database, registry: DeviceRegistry, media_dir: Path, did: int, seq: int, pos: int, grants: Grants,
                window_ms: int, requests: list[Request]) -> RecordView:
    row = rdb.execute(
        "SELECT d.dev, b.cose, b.sealed, b.received_at, b.hash, d.contiguous, d.status_json, d.status_at "
        "FROM batches b JOIN devices d ON d.did = b.did WHERE b.did = ? AND b.seq = ?",
        (did, seq),
    ).fetchone()
    if row is None or rdb.execute("SELECT 1 FROM records WHERE did = ? AND seq = ? AND pos = ?",
                                  (did, seq, pos)).fetchone() is None:
        raise NotFound(f"no stored record {did}/{seq}/{pos}")
    dev, cose, sealed, received_at, stored_hash, contiguous, status_json, status_at = row
    cose = bytes(cose)
    society, branch = split_dev(dev)
    payload = cbor2.loads(cbor2.loads(cose).value[2])
    rec = payload["records"][pos]
    if not grants.allows(society, rec["kind"]):
        raise NotGranted(f"society {society} / kind {rec['kind']}")
    sig = _signature(registry, dev, cose)
    chain = _chain(rdb, did, seq, cose, bytes(stored_hash), payload["prev"], int(contiguous))
    clock = _clock(rdb, did, int(rec["at"]), int(sealed), int(received_at), status_json, status_at)
    show_media = grants.kinds is None or "media" in grants.kinds
    media, gaps = _media_and_gaps(rdb, media_dir, did, society, branch, str(rec["id"]), int(rec["at"]), window_ms,
                                  requests)
    return RecordView(did, dev, society, branch, seq, pos, plain(rec), int(sealed), int(received_at), sig, chain,
                      clock, media if show_media else [], gaps if show_media else [], requests)


def _signature(registry: DeviceRegistry, dev: str, cose: bytes) -> Verdict:
    keys = registry.keys_for(dev)
    if keys is None:
        return Verdict(False, f"no public key is registered for {dev} now: the signature cannot be checked again")
    try:
        kid, _ = verify_signed(cose, dev, keys)
    except Rejected as exc:
        return Verdict(False, f"signature does NOT verify: {exc.reason}")
    return Verdict(True, f"signature valid: Ed25519, key {kid.hex()} registered for {dev}")


def _chain(rdb: Database, did: int, seq: int, cose: bytes, stored_hash: bytes, prev: bytes,
           contiguous: int) -> Verdict:
    if hashlib.sha256(cose).digest() != stored_hash:
        return Verdict(False, f"batch {seq}: stored bytes do not match their recorded hash")
    if seq == 1:
        before_ok = prev == ZERO
    else:
        r = rdb.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq - 1)).fetchone()
        before_ok = r is not None and hashlib.sha256(bytes(r[0])).digest() == prev
    after = rdb.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq + 1)).fetchone()
    after_ok = after is None or cbor2.loads(cbor2.loads(bytes(after[0])).value[2])["prev"] == stored_hash
    breaks = int(rdb.execute("SELECT count(*) FROM chain_breaks WHERE did = ?", (did,)).fetchone()[0])
    if not before_ok or not after_ok:
        side = "previous" if not before_ok else "next"
        return Verdict(False, f"chain BROKEN at batch {seq}: the link to the {side} batch does not hold")
    text = (f"chain continuous: batch {seq} links to batch {seq - 1 if seq > 1 else 'none (first)'}"
            + (f" and batch {seq + 1} links to it" if after is not None else "")
            + f"; every batch up to {contiguous} is stored")
    if breaks:
        text += f"; {breaks} chain break(s) recorded for this device (see its status)"
    return Verdict(True, text)


def _clock(rdb: Database, did: int, at: int, sealed: int, received_at: int, status_json: str | None,
           status_at: int | None) -> list[str]:
    from receiver.web.fmt import ts

    sealing = (f"{(sealed - at) / 1000:.1f} s later" if sealed >= at else
               f"{(at - sealed) / 1000:.1f} s BEFORE the record's own time: its clock or its source's was off")
    lines = [f"recorded {ts(at)}, sealed {ts(sealed)} ({sealing}), "
             f"received {ts(received_at)} ({(received_at - sealed) / 1000:.1f} s after sealing)"]
    day = 86_400_000
    jumps = rdb.execute(
        "SELECT at, state FROM record_search WHERE did = ? AND kind = 'device_event' AND at BETWEEN ? AND ? "
        "AND state IN ('clock_jump', 'clock_unsynchronized', 'clock_synchronized') ORDER BY at",
        (did, at - day, at + day),
    ).fetchall()
    for j_at, ev in jumps:
        lines.append(f"{ev.replace('_', ' ')} reported at {ts(int(j_at))}")
    if not jumps:
        lines.append("no clock jump or sync change reported within a day of this record")
    if status_json:
        clock = json.loads(status_json).get("clock")
        if isinstance(clock, dict):
            sync = clock.get("synchronized")
            off = clock.get("centre_offset_ms")
            lines.append(
                f"latest status ({ts(status_at or 0)}): NTP "
                + ("synchronized" if sync else "NOT synchronized" if sync is False else "state unknown")
                + (f", {off} ms from the centre's clock" if off is not None else "")
            )
    return lines


def _media_and_gaps(rdb: Database, media_dir: Path, did: int, society: str, branch: str, rid: str, at: int,
                    window_ms: int, requests: list[Request]) -> tuple[list[Media], list[Gap]]:
    """Media and gaps of the branch overlapping [at - window, at + window], or naming this record or a request of it.

    Spans are looked up by their start within MAX_SPAN_MS before the window, so the index range
    stays small however long the branch's history: a gap that began earlier than that (a camera
    dead for over a week) is not shown here, the compliance page is where that shows.
    """
    lo, hi = at - window_ms, at + window_ms
    cids = [r.cid for r in requests]
    refs = [rid, *cids]
    rows = rdb.execute(
        "SELECT s.did, s.seq, s.pos, s.kind, s.camera, s.t0, s.t1, s.doc, s.ref, d.dev FROM record_search s "  # noqa: S608
        "JOIN devices d ON d.did = s.did WHERE s.society = ? AND s.branch = ? AND s.t0 IS NOT NULL "
        "AND s.t0 BETWEEN ? AND ? AND s.kind IN ('media', 'gap') AND (s.t1 >= ? OR s.t1 IS NULL) "
        "UNION SELECT s.did, s.seq, s.pos, s.kind, s.camera, s.t0, s.t1, s.doc, s.ref, d.dev FROM record_search s "
        f"JOIN devices d ON d.did = s.did WHERE s.did = ? AND s.ref IN ({', '.join('?' * len(refs))}) "  # noqa: S608
        "AND s.kind IN ('media', 'gap')",
        (society, branch, lo - MAX_SPAN_MS, hi, lo, did, *refs),
    ).fetchall()
    media: list[Media] = []
    gaps: list[Gap] = []
    for m_did, m_seq, m_pos, kind, camera, t0, t1, doc, _ref, m_dev in sorted(rows, key=lambda r: (r[5], r[7] or "")):
        if kind == "gap":
            rec = _record_data(rdb, m_did, m_seq, m_pos)
            gaps.append(Gap(camera or "?", t0, t1, str(rec.get("reason", ""))))
            continue
        st = rdb.execute("SELECT type, state, chunk, chunks FROM media WHERE did = ? AND media_id = ?",
                         (m_did, doc)).fetchone()
        rec = _record_data(rdb, m_did, m_seq, m_pos)
        reason = mapping(rec.get("reason"))
        why = ("asked for by the centre (command " + str(reason["command"]) + ")" if reason.get("command")
               else "made for this record" if reason.get("record") == rid
               else f"made by rule {reason['rule']}" if reason.get("rule") else "recorded at the branch")
        if st is None:
            media.append(Media(m_did, m_dev, doc, camera or "?", str(rec.get("type")), t0, t1 or t0, "unknown",
                               0, int(rec.get("chunks", 0)), why))
        else:
            got = _chunks_received(media_dir, m_dev, doc) if st[1] != "complete" else int(st[3])
            media.append(Media(m_did, m_dev, doc, camera or "?", st[0], t0, t1 or t0, st[1], got, int(st[3]), why))
    return media, gaps


def _chunks_received(media_dir: Path, dev: str, media_id: str) -> int:
    """Chunks spooled so far of an incomplete file (receiver.media: media_dir/.spool/DEV/MEDIA_ID/INDEX)."""
    d = media_dir / ".spool" / dev / media_id
    return sum(1 for p in d.iterdir() if p.name.isdigit()) if d.is_dir() else 0


def _record_data(rdb: Database, did: int, seq: int, pos: int) -> dict[str, Any]:
    row = rdb.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq)).fetchone()
    if row is None:
        return {}
    data = cbor2.loads(cbor2.loads(bytes(row[0])).value[2])["records"][pos].get("data")
    return data if isinstance(data, dict) else {}


def request_states(rdb: Database, did: int, requests: list[Request]) -> None:
    """Fill each request's state from what the branch sent back: the device_event answer, then the media."""
    for r in requests:
        ans = rdb.execute(
            "SELECT seq, pos FROM record_search WHERE did = ? AND ref = ? AND kind = 'device_event' LIMIT 1",
            (did, r.cid),
        ).fetchone()
        med = rdb.execute(
            "SELECT s.doc, m.state FROM record_search s LEFT JOIN media m ON m.did = s.did AND m.media_id = s.doc "
            "WHERE s.did = ? AND s.ref = ? AND s.kind = 'media'",
            (did, r.cid),
        ).fetchall()
        r.media = [m[0] for m in med]
        if any(m[1] == "complete" for m in med):
            r.state = "arrived"
        elif ans is not None:
            data = _record_data(rdb, did, ans[0], ans[1])
            detail = mapping(data.get("detail"))
            result = detail.get("result")
            if result in ("failed", "error", "refused") or detail.get("error"):
                r.state = "failed"
                r.detail = str(detail.get("error") or detail.get("reason") or result)
            else:
                r.state = "answered"
                r.detail = "the branch made it; its file is on its way" if med else "the branch answered"
        else:
            r.state = "sent"

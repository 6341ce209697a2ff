"""Check one `P/batch` (or `P/status`) message against uplink-v1, everything that can be judged without
the chain (the receiver's side; the agent's buffer builds batches in buffer/sealing.py).

The order of checks follows what each check needs: the COSE structure and kid first (no
key needed), then the signature with that device's key (so nothing unsigned is ever
interpreted), then the payload's shape and its deterministic encoding, then every record.
The chain (seq continuity and prev) needs the store and is judged in receiver/writer.py.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from wire.deterministic import is_deterministic
from wire.kinds import KIND_SET, KINDS, MEDIA_ID_PATTERN, MEDIA_TYPES, RECORD_KEYS
from wire.sign1 import OpenError, open_sign1

MEDIA_ID_RE = re.compile(MEDIA_ID_PATTERN)
ZERO_HASH = b"\x00" * 32  # the prev of seq 1
MAX_RECORD_ID = 128
BATCH_KEYS = frozenset(("v", "dev", "seq", "prev", "sealed", "records"))


class Rejected(Exception):
    """A message refused for `code` (a short stable word, kept in the rejections table) and `reason`."""

    def __init__(self, code: str, reason: str, seq: int | None = None):
        self.code = code
        self.reason = reason
        self.seq = seq
        super().__init__(f"{code}: {reason}")

    def __reduce__(self) -> tuple[type[Rejected], tuple[str, str, int | None]]:
        # Crosses the pipe from the verifier process: pickle it by its fields, not by str(self).
        return (Rejected, (self.code, self.reason, self.seq))


@dataclass(frozen=True)
class Manifest:
    """A `media` record's data: what the chunks on P/media/MEDIA_ID/INDEX must add up to."""

    media: str
    camera: str
    type: str
    start: int
    end: int
    size: int
    sha256: bytes
    chunk: int
    chunks: int
    record_id: str

    @property
    def suffix(self) -> str:
        return MEDIA_TYPES[self.type]


@dataclass
class Batch:
    dev: str
    seq: int
    prev: bytes
    sealed: int
    cose: bytes
    hash: bytes  # SHA-256 of the whole COSE bytes: the next batch's prev
    kid: bytes
    rows: list[tuple[str, str, int, str]]  # (id, kind, at, src); the content stays in the batch's bytes
    media: list[Manifest] = field(default_factory=list)


def _is_int(v: Any) -> bool:
    return type(v) is int  # bool is an int subclass and is not a valid integer here


def verify_signed(cose: bytes, dev: str, keys: Mapping[bytes, Ed25519PublicKey]) -> tuple[bytes, dict[str, Any]]:
    """Verify a signed message (batch or status) of `dev`; returns (kid, payload map)."""
    try:
        kid, payload_bytes = open_sign1(cose, keys)
    except OpenError as exc:
        raise Rejected(exc.code, exc.reason) from None
    try:
        payload = cbor2.loads(payload_bytes)
    except Exception as exc:  # cbor2 raises several types for malformed input
        raise Rejected("bad_cose", f"payload is not CBOR: {exc}") from None
    if not isinstance(payload, dict):
        raise Rejected("bad_payload", "payload is not a CBOR map")
    if payload.get("v") != 1 or not _is_int(payload.get("v")):
        raise Rejected("bad_payload", f"v = {payload.get('v')!r}; this receiver speaks version 1")
    if payload.get("dev") != dev:
        raise Rejected("dev_mismatch", f"payload dev {payload.get('dev')!r} is not the topic's device {dev!r}")
    if not is_deterministic(payload, payload_bytes):
        raise Rejected("not_deterministic", "payload is not in deterministic CBOR encoding (RFC 8949 4.2.1)")
    return kid, payload


def check_status(p: dict[str, Any]) -> None:
    """The fields of a status payload that verify_signed let through (spec: Status); raises Rejected."""
    if type(p.get("at")) is not int:
        raise Rejected("bad_status", f"at = {p.get('at')!r}; must be epoch milliseconds")
    if p.get("state") not in ("online", "offline"):
        raise Rejected("bad_status", f"state = {p.get('state')!r}; must be online or offline")
    for key, kind in (("backlog", dict), ("components", dict), ("version", str)):
        if key in p and not isinstance(p[key], kind):
            raise Rejected("bad_status", f"{key} must be a {kind.__name__}")
    if "acked_seq" in p and type(p["acked_seq"]) is not int:
        raise Rejected("bad_status", "acked_seq must be an integer")


def _manifest(data: Mapping[str, Any], record_id: str) -> Manifest:
    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise Rejected("bad_record", f"media record {record_id}: {key} = {data.get(key)!r}; {what}")

    media = data.get("media")
    need("media", isinstance(media, str) and bool(MEDIA_ID_RE.match(media)), "must match [A-Za-z0-9_-]{1,64}")
    need("camera", isinstance(data.get("camera"), str) and bool(data.get("camera")), "must be a non-empty text")
    need("type", data.get("type") in MEDIA_TYPES, "must be video/mp4 or image/jpeg")
    for key in ("start", "end"):
        need(key, _is_int(data.get(key)), "must be epoch milliseconds (integer)")
    need("size", _is_int(data.get("size")) and data["size"] > 0, "must be a positive integer")
    need("sha256", isinstance(data.get("sha256"), bytes) and len(data["sha256"]) == 32, "must be 32 bytes")
    need("chunk", _is_int(data.get("chunk")) and data["chunk"] > 0, "must be a positive integer")
    need(
        "chunks",
        _is_int(data.get("chunks")) and data["chunks"] == -(-data["size"] // data["chunk"]),
        "must equal ceil(size / chunk)",
    )
    need("reason", isinstance(data.get("reason"), Mapping), "must be a map")
    return Manifest(
        media=data["media"],
        camera=data["camera"],
        type=data["type"],
        start=data["start"],
        end=data["end"],
        size=data["size"],
        sha256=data["sha256"],
        chunk=data["chunk"],
        chunks=data["chunks"],
        record_id=record_id,
    )


def _rows(records: Any, seq: int) -> tuple[list[tuple[str, str, int, str]], list[Manifest]]:
    if not isinstance(records, list) or not records:
        raise Rejected("bad_payload", "records must be a non-empty array", seq)
    rows: list[tuple[str, str, int, str]] = []
    media: list[Manifest] = []
    for i, rec in enumerate(records):
        if type(rec) is not dict:
            raise Rejected("bad_record", f"records[{i}] is not a map", seq)
        if len(rec) != 5 and rec.keys() - RECORD_KEYS:
            raise Rejected(
                "bad_record",
                f"records[{i}] has keys {sorted(rec.keys() - RECORD_KEYS)} that v1 does not "
                "define (extra fields belong in data)",
                seq,
            )
        rid, kind, at, src, data = (
            rec.get("id"),
            rec.get("kind"),
            rec.get("at"),
            rec.get("src"),
            rec.get("data"),
        )
        if type(rid) is not str or not 0 < len(rid) <= MAX_RECORD_ID:
            raise Rejected("bad_record", f"records[{i}].id = {rid!r}; must be a text of 1..{MAX_RECORD_ID}", seq)
        if kind not in KIND_SET:
            raise Rejected("bad_record", f"records[{i}].kind = {kind!r}; version 1 kinds are {sorted(KINDS)}", seq)
        if type(at) is not int:
            raise Rejected("bad_record", f"records[{i}].at = {at!r}; must be epoch milliseconds", seq)
        if type(src) is not str or not src:
            raise Rejected("bad_record", f"records[{i}].src = {src!r}; must be a non-empty text", seq)
        if type(data) is not dict:
            raise Rejected("bad_record", f"records[{i}].data must be a map", seq)
        if kind == "media":
            media.append(_manifest(data, rid))
        rows.append((rid, kind, at, src))
    if len({r[0] for r in rows}) != len(rows):
        raise Rejected("bad_record", "the same record id occurs twice in one batch", seq)
    return rows, media


def check_batch(cose: bytes, dev: str, keys: Mapping[bytes, Ed25519PublicKey]) -> Batch:
    """Everything about one batch that does not depend on the stored chain; raises Rejected."""
    kid, p = verify_signed(cose, dev, keys)
    seq = p.get("seq")
    if not isinstance(seq, int) or isinstance(seq, bool) or seq < 1:
        raise Rejected("bad_payload", f"seq = {seq!r}; must be an integer >= 1")
    if p.keys() != BATCH_KEYS:
        missing, extra = sorted(BATCH_KEYS - p.keys()), sorted(map(str, p.keys() - BATCH_KEYS))
        raise Rejected("bad_payload", f"batch keys: missing {missing}, not in v1 {extra}", seq)
    prev = p["prev"]
    if not isinstance(prev, bytes) or len(prev) != 32:
        raise Rejected("bad_payload", "prev must be 32 bytes (SHA-256)", seq)
    if seq == 1 and prev != ZERO_HASH:
        raise Rejected("chain_break", "seq 1 must have prev = 32 zero bytes", seq)
    if not _is_int(p["sealed"]) or p["sealed"] < 0:
        raise Rejected("bad_payload", f"sealed = {p['sealed']!r}; must be epoch milliseconds", seq)
    rows, media = _rows(p["records"], seq)
    return Batch(
        dev=dev,
        seq=seq,
        prev=prev,
        sealed=p["sealed"],
        cose=cose,
        hash=hashlib.sha256(cose).digest(),
        kid=kid,
        rows=rows,
        media=media,
    )

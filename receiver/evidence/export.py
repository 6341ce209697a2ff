"""Export stored records as one evidence bundle (docs/evidence-bundle-v1.md).

What goes in, per device of the selection: the original COSE_Sign1 batches holding the
records, exactly as stored (the devices' signatures still verify); the chain segment from the
first to the last of those batches as the SHA-256 of every batch in it (the batches between
are not copied by default: at one batch every 2 s a day holds 43,000 of them, up to 256 KiB
each, and they carry other people's records; `full_chain=True` copies them all); the clip or
snapshot of every media record in the bundle, checked against the SHA-256 its record signs;
the device's registered public keys; the centre's public key. The manifest listing every
part's SHA-256 is signed by the centre as exporter.

Media records whose `reason.record` names a selected record (the clip a rule made for a void,
say) are added to the selection: the auditor exporting a void gets its clip with it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, BinaryIO

import cbor2

from receiver.config import DEVICE_RE, DEVICE_RULE, ReceiverConfig, load_receiver_config
from receiver.database import Database
from receiver.evidence.keys import KeyLookup, RegisteredKey, lookup_for
from wire.batches import Rejected, check_batch
from wire.bundle import EXPORTER_KEY, FORMAT, VERSION, BundleWriter, batch_path, key_path, media_path
from wire.cose import Signer
from wire.keys import public_pem
from wire.kinds import MEDIA_TYPES

log = logging.getLogger(__name__)


class ExportError(ValueError):
    """The selection cannot be exported as asked (a record not stored, a device without a key, a
    chain with a hole, a clip that no longer matches its record); the message names which."""


@dataclass
class ExportSummary:
    """What went into the bundle, for the caller's answer and its access log."""

    devices: list[str]
    records: int  # records in the bundle, selected and linked
    linked: int  # media records added because their reason names a selected record
    batches: int  # batches copied whole
    chain: int  # batches the chain segments cover (whole or by hash)
    clips: int  # clip and snapshot files copied
    missing_clips: list[str] = field(default_factory=list)  # "DEV MEDIA_ID": announced, not at the centre
    manifest_sha256: bytes = b""  # identifies the bundle: the manifest lists every part's SHA-256


@dataclass
class _Rec:
    id: str
    seq: int
    pos: int
    kind: str
    at: int
    data: dict[str, Any]
    linked: str | None = None


@dataclass
class _Dev:
    dev: str
    did: int
    records: list[_Rec] = field(default_factory=list)
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)  # seq -> decoded batch payload

    def has(self, rid: str) -> bool:
        return any(r.id == rid for r in self.records)


def default_keys() -> KeyLookup:
    """The receiver's installed config (the CLI's default path), when the caller names no key source."""
    from receiver.config import DEFAULT_CONFIG_PATH

    cfg = load_receiver_config(DEFAULT_CONFIG_PATH) if DEFAULT_CONFIG_PATH.exists() else ReceiverConfig()
    return lookup_for(cfg)


def export_bundle(
    db: Database,
    media_root: Path,
    selection: Sequence[tuple[str, str]],
    exporter: Signer,
    out: BinaryIO | IO[bytes],
    *,
    exporter_name: str,
    keys: KeyLookup | None = None,
    full_chain: bool = False,
    now_ms: int | None = None,
) -> ExportSummary:
    """Write the bundle of `selection` ((device id "S/B/D", record id) pairs) to `out`.

    `keys` gives a device's registered keys (receiver.evidence.keys; default: the installed
    config's). Raises ExportError when a record, device, key or batch is missing or a clip
    found changed on disk; what was written to `out` is then no bundle (the CLI writes to a
    temporary file and renames it only when the export succeeded).
    """
    if not selection:
        raise ExportError("nothing to export: select at least one record")
    lookup = keys or default_keys()
    devs = _load(db, selection)
    for d in devs.values():
        _link_media(db, d)
    created = now_ms if now_ms is not None else int(time.time() * 1000)
    writer = BundleWriter(out, created)
    writer.add_bytes(EXPORTER_KEY, public_pem(exporter.key.public_key()).encode())
    summary = ExportSummary(devices=list(devs), records=0, linked=0, batches=0, chain=0, clips=0)
    entries = []
    for d in devs.values():
        registered = list(lookup(d.dev))
        if not registered:
            raise ExportError(f"device {d.dev} has no registered public key at this centre; its batches cannot be "
                              "checked by anyone: register the key (devices_dir or [[devices]]) first")
        entries.append(_write_device(db, media_root, d, registered, writer, full_chain, summary))
        summary.records += len(d.records)
        summary.linked += sum(r.linked is not None for r in d.records)
    manifest = {"v": VERSION, "format": FORMAT, "exporter": exporter_name, "created": created, "devices": entries}
    cose = writer.finish(manifest, exporter)
    summary.manifest_sha256 = hashlib.sha256(cose).digest()
    log.info("evidence bundle: %d records of %s, %d batches whole, %d clips", summary.records,
             ", ".join(summary.devices), summary.batches, summary.clips)
    return summary


def _payload(db: Database, d: _Dev, seq: int) -> dict[str, Any]:
    p = d.payloads.get(seq)
    if p is None:
        row = db.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (d.did, seq)).fetchone()
        if row is None:
            raise ExportError(f"batch seq {seq} of {d.dev} is not in the centre's chain")
        p = d.payloads[seq] = cbor2.loads(cbor2.loads(bytes(row[0])).value[2])
    return p


def _record(db: Database, d: _Dev, rid: str, linked: str | None = None) -> _Rec:
    row = db.execute("SELECT seq, pos, kind, at FROM records WHERE did = ? AND id = ?", (d.did, rid)).fetchone()
    if row is None:
        raise ExportError(f"record {rid} of {d.dev} is not stored at this centre")
    seq, pos = int(row[0]), int(row[1])
    rec = _payload(db, d, seq)["records"][pos]
    if rec["id"] != rid:  # the index and the signed bytes disagree: the store is damaged
        raise ExportError(f"record {rid} of {d.dev}: batch seq {seq} holds {rec['id']!r} at position {pos}")
    return _Rec(rid, seq, pos, row[2], int(row[3]), dict(rec["data"]), linked)


def _load(db: Database, selection: Sequence[tuple[str, str]]) -> dict[str, _Dev]:
    devs: dict[str, _Dev] = {}
    for dev, rid in selection:
        if not DEVICE_RE.match(dev):
            raise ExportError(f"device {dev!r}: {DEVICE_RULE}")
        d = devs.get(dev)
        if d is None:
            row = db.execute("SELECT did FROM devices WHERE dev = ?", (dev,)).fetchone()
            if row is None:
                raise ExportError(f"device {dev} has nothing stored at this centre")
            d = devs[dev] = _Dev(dev, int(row[0]))
        if not d.has(rid):
            d.records.append(_record(db, d, rid))
    return devs


def _link_media(db: Database, d: _Dev) -> None:
    """Add the media records whose reason names a selected record (a clip rule's clip of a void)."""
    for r in list(d.records):
        if r.kind == "media":
            continue
        rows = db.execute(
            'SELECT record_id FROM media WHERE did = ? AND start <= ? AND "end" >= ? ORDER BY seq, media_id',
            (d.did, r.at, r.at),
        ).fetchall()
        for (mrid,) in rows:
            if d.has(mrid):
                continue
            try:
                m = _record(db, d, mrid, linked=r.id)
            except ExportError as exc:  # a candidate only: the selected records are exported without it
                log.warning("evidence bundle: media record %s of %s not linked: %s", mrid, d.dev, exc)
                continue
            reason = m.data.get("reason")
            if isinstance(reason, dict) and reason.get("record") == r.id:
                d.records.append(m)


def _write_device(
    db: Database,
    media_root: Path,
    d: _Dev,
    registered: list[RegisteredKey],
    writer: BundleWriter,
    full_chain: bool,
    summary: ExportSummary,
) -> dict[str, Any]:
    by_kid = {k.kid: k.key for k in registered}
    seqs = sorted({r.seq for r in d.records})
    first, last = seqs[0], seqs[-1]
    whole = set(range(first, last + 1)) if full_chain else set(seqs)
    hashes: list[bytes] = []
    for seq, digest, cose in _chain_rows(db, d, first, last, whole):
        if seq != first + len(hashes):
            raise ExportError(f"the centre's chain of {d.dev} has no batch seq {first + len(hashes)} (held or "
                              f"missing); continuity from seq {first} to {last} cannot be shown")
        if cose is not None:
            if hashlib.sha256(cose).digest() != digest:
                raise ExportError(f"batch seq {seq} of {d.dev}: the stored bytes no longer match their hash")
            try:
                check_batch(cose, d.dev, by_kid)
            except Rejected as exc:
                raise ExportError(f"batch seq {seq} of {d.dev} does not verify with the device's registered "
                                  f"keys: {exc.reason}") from None
            writer.add_bytes(batch_path(d.dev, seq), cose)
        hashes.append(digest)
    if len(hashes) != last - first + 1:
        raise ExportError(f"the centre's chain of {d.dev} ends before seq {last}")
    for k in registered:
        writer.add_bytes(key_path(d.dev, k.kid), public_pem(k.key).encode())
    media = []
    for r in d.records:
        if r.kind == "media":
            media.append(_write_media(db, media_root, d, r, writer, summary))
    summary.batches += len(whole)
    summary.chain += len(hashes)
    return {
        "dev": d.dev,
        "keys": [_key_entry(d.dev, k) for k in registered],
        "chain": {"first": first, "hashes": hashes},
        "batches": sorted(whole),
        "records": [
            {"id": r.id, "seq": r.seq, "pos": r.pos} | ({"linked": r.linked} if r.linked else {}) for r in d.records
        ],
        "media": media,
    }


def _chain_rows(db: Database, d: _Dev, first: int, last: int, whole: set[int]) -> Any:
    """(seq, hash, cose or None) from first to last: the bytes only of the batches copied whole."""
    for seq, digest in db.execute(
        "SELECT seq, hash FROM batches WHERE did = ? AND seq >= ? AND seq <= ? ORDER BY seq", (d.did, first, last)
    ).fetchall():
        cose = None
        if seq in whole:
            cose = bytes(db.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (d.did, seq)).fetchone()[0])
        yield int(seq), bytes(digest), cose


def _key_entry(dev: str, k: RegisteredKey) -> dict[str, Any]:
    e: dict[str, Any] = {"kid": k.kid, "path": key_path(dev, k.kid), "source": k.source}
    if k.registered is not None:
        e["registered"] = k.registered
    if k.revoked is not None:
        e["revoked"] = k.revoked
    return e


def _write_media(
    db: Database, media_root: Path, d: _Dev, r: _Rec, writer: BundleWriter, summary: ExportSummary
) -> dict[str, Any]:
    media_id, sha = r.data["media"], r.data["sha256"]
    entry: dict[str, Any] = {"media": media_id, "record": r.id}
    row = db.execute("SELECT state FROM media WHERE did = ? AND media_id = ?", (d.did, media_id)).fetchone()
    suffix = MEDIA_TYPES[r.data["type"]]
    src = media_root / d.dev / f"{media_id}{suffix}"
    if row is None or row[0] != "complete" or not src.is_file():
        summary.missing_clips.append(f"{d.dev} {media_id}")
        log.warning("evidence bundle: media %s of %s is not complete at the centre; exported without it",
                    media_id, d.dev)
        return entry
    path = media_path(d.dev, media_id, suffix)
    try:
        writer.add_file(path, src, expect_sha256=sha)
    except ValueError as exc:
        raise ExportError(f"media {media_id} of {d.dev}: {exc}") from None
    summary.clips += 1
    entry["path"] = path
    return entry

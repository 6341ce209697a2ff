"""The device registry's database side: which key may sign which seq, revocations, and key rotation.

uplink-v1 says a device's seq is "kept across key changes" and that the centre registers
public keys out of band; it is silent on how a key changes. Our choice (docs/receiver.md,
"Device registry and key rotation"):

* The rotation is a record in the chain. The agent seals, under its OLD key, a
  `device_event` record `{device: "agent", event: "key_rotated", detail, new_kid, new_key}`
  (`new_key` the raw 32-byte Ed25519 public key, `new_kid` its kid) as the LAST record of
  the last batch the old key signs. Every later batch is signed with the new key; seq and
  prev continue unchanged.
* The centre applies the rotation when that batch is stored in the chain (seq S, after
  every batch before it, so the announcement is proved by the chain): the old key may sign
  seq <= S only, the new key seq >= S + 1. A batch signed by the new key that arrives
  before S is stored is refused as an unknown kid (no ack), and the agent's resend brings it
  again.
* `[receiver] key_rotation = "announced"` (default) trusts the chained announcement, signed
  by the key the centre already trusts. `"registered"` also requires the operator to have
  registered the new key first (`coop-receiver device rotate DEV NEW.pem`); an announcement
  of any other key is refused and recorded, and a later `device rotate` with the announced
  key completes it. A key registered for a rotation never signs before one is announced.
* A revoked key signs nothing any more: its batches are refused (recorded, never acked),
  whatever their seq; what it signed before and was stored stays as evidence.

Keys from the config and devices_dir stay valid from seq 1 with no end unless a row here
says otherwise (a rotation or a revocation annotates them with origin `file`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from typing import Any

import cbor2
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from receiver.database import Database
from wire.batches import Batch
from wire.cose import kid_for

log = logging.getLogger(__name__)

ROTATION_EVENT = "key_rotated"
RejectFn = Callable[[str, str, str, str, "int | None"], None]  # (dev, topic, code, reason, seq)


def now_ms() -> int:
    return int(time.time() * 1000)


def raw_of(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(Encoding.Raw, PublicFormat.Raw)


@dataclass(frozen=True)
class KeyEntry:
    """One key of one device and the seqs it may sign."""

    kid: bytes
    key: Ed25519PublicKey
    valid_from_seq: int | None = 1  # None: registered for a rotation the chain has not announced
    valid_to_seq: int | None = None
    revoked_at: int | None = None
    revoked_reason: str | None = None
    origin: str = "file"
    announced_seq: int | None = None

    def state(self) -> str:
        if self.revoked_at is not None:
            return "revoked"
        if self.valid_from_seq is None:
            return "awaiting rotation"
        if self.valid_to_seq is not None:
            return "retired"
        return "active"

    def as_json(self) -> dict[str, Any]:
        return {
            "kid": self.kid.hex(),
            "state": self.state(),
            "valid_from_seq": self.valid_from_seq,
            "valid_to_seq": self.valid_to_seq,
            "revoked_at": self.revoked_at,
            "revoked_reason": self.revoked_reason,
            "origin": self.origin,
            "announced_seq": self.announced_seq,
        }


def refusal(entry: KeyEntry, seq: int) -> tuple[str, str] | None:
    """Why `entry` may not sign batch `seq` (code, reason), or None when it may."""
    kid = entry.kid.hex()
    if entry.revoked_at is not None:
        return "key_revoked", f"kid {kid} was revoked ({entry.revoked_reason or 'no reason given'})"
    if entry.valid_from_seq is None:
        return "key_not_valid", f"kid {kid} is registered for a rotation that the chain has not announced yet"
    if seq < entry.valid_from_seq:
        return "key_not_valid", f"kid {kid} signs from seq {entry.valid_from_seq}; this batch is seq {seq}"
    if entry.valid_to_seq is not None and seq > entry.valid_to_seq:
        return (
            "key_retired",
            f"kid {kid} was rotated out after seq {entry.valid_to_seq}; seq {seq} must be signed by its successor",
        )
    return None


# -- reading ------------------------------------------------------------------------------


def generation(db: Database) -> int:
    """The registry's generation: it changes with every change (receivers poll it to reload)."""
    row = db.execute("SELECT coalesce(max(id), 0) FROM registry_log").fetchone()
    return int(row[0])


def load_rows(db: Database) -> dict[str, dict[bytes, KeyEntry]]:
    out: dict[str, dict[bytes, KeyEntry]] = {}
    for r in db.execute(
        "SELECT dev, kid, public_key, valid_from_seq, valid_to_seq, revoked_at, revoked_reason, origin, "
        "announced_seq FROM device_keys"
    ):
        kid = bytes(r[1])
        out.setdefault(r[0], {})[kid] = KeyEntry(
            kid=kid,
            key=Ed25519PublicKey.from_public_bytes(bytes(r[2])),
            valid_from_seq=r[3],
            valid_to_seq=r[4],
            revoked_at=r[5],
            revoked_reason=r[6],
            origin=r[7],
            announced_seq=r[8],
        )
    return out


def merge(files: Mapping[bytes, Ed25519PublicKey], rows: Mapping[bytes, KeyEntry]) -> dict[bytes, KeyEntry]:
    """A device's keys: the file keys (valid from seq 1) overlaid with what the database says."""
    out = {kid: KeyEntry(kid=kid, key=k) for kid, k in files.items()}
    out.update(rows)
    return out


def history(db: Database, dev: str | None = None) -> list[dict[str, Any]]:
    sql = "SELECT id, at, dev, kid, action, seq, detail FROM registry_log"
    params: tuple[Any, ...] = ()
    if dev is not None:
        sql += " WHERE dev = ?"
        params = (dev,)
    return [
        {
            "at": r[1],
            "dev": r[2],
            "kid": None if r[3] is None else bytes(r[3]).hex(),
            "action": r[4],
            "seq": r[5],
            "detail": r[6],
        }
        for r in db.execute(sql + " ORDER BY id", params)
    ]


# -- writing (inside the caller's transaction) ---------------------------------------------


def log_change(db: Database, dev: str, kid: bytes | None, action: str, detail: str, seq: int | None = None) -> None:
    db.execute(
        "INSERT INTO registry_log (at, dev, kid, action, seq, detail) VALUES (?, ?, ?, ?, ?, ?)",
        (now_ms(), dev, kid, action, seq, detail),
    )


def upsert(db: Database, dev: str, e: KeyEntry) -> None:
    db.execute(
        "INSERT INTO device_keys (dev, kid, public_key, valid_from_seq, valid_to_seq, revoked_at, revoked_reason, "
        "origin, added_at, announced_seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
        "ON CONFLICT (dev, kid) DO UPDATE SET valid_from_seq = excluded.valid_from_seq, "
        "valid_to_seq = excluded.valid_to_seq, revoked_at = excluded.revoked_at, "
        "revoked_reason = excluded.revoked_reason, origin = excluded.origin, announced_seq = excluded.announced_seq",
        (
            dev,
            e.kid,
            raw_of(e.key),
            e.valid_from_seq,
            e.valid_to_seq,
            e.revoked_at,
            e.revoked_reason,
            e.origin,
            now_ms(),
            e.announced_seq,
        ),
    )


def add_key(db: Database, dev: str, key: Ed25519PublicKey, from_seq: int) -> KeyEntry:
    e = KeyEntry(kid=kid_for(key), key=key, valid_from_seq=from_seq, origin="cli")
    upsert(db, dev, e)
    log_change(db, dev, e.kid, "add", f"key registered, valid from seq {from_seq}", from_seq)
    return e


def revoke(db: Database, dev: str, entry: KeyEntry, reason: str) -> KeyEntry:
    e = replace(entry, revoked_at=now_ms(), revoked_reason=reason)
    upsert(db, dev, e)
    log_change(db, dev, e.kid, "revoke", reason)
    return e


def register_rotation(db: Database, dev: str, keys: Mapping[bytes, KeyEntry], new: Ed25519PublicKey) -> str:
    """`device rotate`: expect `new` as the device's next key; completes a rotation already announced."""
    kid = kid_for(new)
    if kid in keys and keys[kid].valid_from_seq is not None:
        raise ValueError(f"kid {kid.hex()} is already a key of {dev} ({keys[kid].state()})")
    refused = db.execute(
        "SELECT seq, detail FROM registry_log WHERE dev = ? AND kid = ? AND action = 'rotation_refused' "
        "ORDER BY id DESC LIMIT 1",
        (dev, kid),
    ).fetchone()
    if refused is not None:
        old_kid = bytes.fromhex(json.loads(refused[1])["old_kid"])
        seq = int(refused[0])
        old = keys.get(old_kid)
        if old is None:
            raise ValueError(f"the key {old_kid.hex()} that announced {kid.hex()} is no longer known")
        _apply(db, dev, old, KeyEntry(kid=kid, key=new, valid_from_seq=None, origin="cli"), seq)
        return f"completed the rotation announced at seq {seq}: kid {kid.hex()} signs from seq {seq + 1}"
    upsert(db, dev, KeyEntry(kid=kid, key=new, valid_from_seq=None, origin="cli"))
    log_change(db, dev, kid, "rotate_registered", "next key registered; valid once the chain announces it")
    return f"kid {kid.hex()} registered; it signs once the device's chain announces the rotation"


def _apply(db: Database, dev: str, old: KeyEntry, new: KeyEntry, seq: int) -> None:
    # Other keys registered for a rotation that did not happen are dropped: they would wait for ever.
    for (kid,) in db.execute(
        "SELECT kid FROM device_keys WHERE dev = ? AND valid_from_seq IS NULL AND kid <> ?", (dev, new.kid)
    ).fetchall():
        db.execute("DELETE FROM device_keys WHERE dev = ? AND kid = ?", (dev, kid))
        log_change(db, dev, bytes(kid), "rotate_dropped", f"the chain rotated to {new.kid.hex()} instead", seq)
    upsert(db, dev, replace(old, valid_to_seq=seq))
    upsert(db, dev, replace(new, valid_from_seq=seq + 1, valid_to_seq=None, announced_seq=seq))
    log_change(
        db,
        dev,
        new.kid,
        "rotated",
        json.dumps({"old_kid": old.kid.hex(), "new_kid": new.kid.hex()}),
        seq,
    )
    log.warning("%s: key rotated at seq %d: %s -> %s", dev, seq, old.kid.hex(), new.kid.hex())


def rotation_records(batch: Batch) -> list[tuple[int, dict[str, Any]]]:
    """(position, data) of the key_rotated device_events in a stored batch (decoded only if it has any)."""
    if not any(kind == "device_event" for _, kind, _, _ in batch.rows):
        return []
    records = cbor2.loads(cbor2.loads(batch.cose).value[2])["records"]
    return [
        (i, r["data"])
        for i, r in enumerate(records)
        if r["kind"] == "device_event" and r["data"].get("event") == ROTATION_EVENT
    ]


def on_stored(
    db: Database,
    dev: str,
    topic: str,
    batch: Batch,
    keys: Mapping[bytes, KeyEntry],
    policy: str,
    reject: RejectFn,
) -> bool:
    """Apply a rotation announced by a batch just stored in the chain; True when the registry changed."""
    found = rotation_records(batch)
    if not found:
        return False
    seq = batch.seq

    def refuse(code: str, reason: str, new_kid: bytes | None = None) -> bool:
        reject(dev, topic, code, reason, seq)
        detail = json.dumps({"old_kid": batch.kid.hex(), "reason": reason})
        log_change(db, dev, new_kid, "rotation_refused", detail, seq)
        return True

    pos, data = found[-1]
    if len(found) > 1 or pos != len(batch.rows) - 1:
        return refuse("bad_rotation", f"seq {seq}: a key_rotated record must be the last record of its batch")
    new_raw, new_kid = data.get("new_key"), data.get("new_kid")
    if not isinstance(new_raw, bytes) or len(new_raw) != 32 or not isinstance(new_kid, bytes):
        return refuse("bad_rotation", f"seq {seq}: key_rotated needs new_key (32 bytes) and new_kid (16 bytes)")
    try:
        new_key = Ed25519PublicKey.from_public_bytes(new_raw)
    except ValueError:
        return refuse("bad_rotation", f"seq {seq}: new_key is not an Ed25519 public key")
    if kid_for(new_key) != new_kid:
        return refuse("bad_rotation", f"seq {seq}: new_kid is not the kid of new_key")
    if "old_kid" in data and data["old_kid"] != batch.kid:
        return refuse("bad_rotation", f"seq {seq}: old_kid is not the kid that signed the batch")
    old = keys[batch.kid]  # the batch passed check_kid with this key
    expected = [e for e in keys.values() if e.valid_from_seq is None and e.revoked_at is None]
    existing = keys.get(new_kid)
    if existing is not None and existing.valid_from_seq is not None:
        return refuse("bad_rotation", f"seq {seq}: kid {new_kid.hex()} is already a key of this device", new_kid)
    if expected and existing is None:
        want = ", ".join(e.kid.hex() for e in expected)
        return refuse(
            "rotation_mismatch", f"seq {seq} announces kid {new_kid.hex()}; the operator registered {want}", new_kid
        )
    if policy == "registered" and existing is None:
        return refuse(
            "rotation_unregistered",
            f"seq {seq} announces kid {new_kid.hex()}, not registered at the centre "
            f"(key_rotation = registered: run 'coop-receiver device rotate {dev} NEW.pem')",
            new_kid,
        )
    new = existing or KeyEntry(kid=new_kid, key=new_key, valid_from_seq=None, origin="rotation")
    _apply(db, dev, old, new, seq)
    return True

"""The device keys an export puts in a bundle, with what the centre knows of their registration.

Read through this one function, so the export never has its own idea of a device's keys: the
`[[devices]]` entries and `devices_dir` files of the receiver's config (receiver/keys.py reads
the same sources), overlaid with the registry's key history in the database (receiver/registry.py:
keys added, rotated in through the chain, revoked). A registry key's "registered" is the first
registry_log entry naming it and "revoked" its revocation time; a file key the registry never
touched has the file's modification time, the closest thing to a registration date it has.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receiver.config import ReceiverConfig
from receiver.database import Database
from receiver.keys import device_id_from_filename
from receiver.registry import load_rows
from wire.cose import kid_for
from wire.keys import load_public_key


@dataclass(frozen=True)
class RegisteredKey:
    """One public key registered for a device: the bundle's `devices[].keys[]` entry and its PEM."""

    key: Ed25519PublicKey
    source: str  # where the centre registered it, for a person: "receiver config [[devices]]: a.pem"
    registered: int | None = None  # epoch ms, when known
    revoked: int | None = None  # epoch ms, when known (the registry will know)

    @property
    def kid(self) -> bytes:
        return kid_for(self.key)


KeyLookup = Callable[[str], Sequence[RegisteredKey]]


def _mtime_ms(path: Path) -> int:
    return int(path.stat().st_mtime * 1000)


def device_keys(config: ReceiverConfig, dev: str, db: Database | None = None) -> list[RegisteredKey]:
    """Every key registered for `dev` (all of them while it rotates), one per kid; [] when unknown."""
    found: dict[bytes, RegisteredKey] = {}
    for entry in config.devices:
        if entry.id == dev:
            for path in entry.public_key:
                k = RegisteredKey(load_public_key(path), f"receiver config [[devices]]: {path.name}", _mtime_ms(path))
                found.setdefault(k.kid, k)
    folder = config.receiver.devices_dir
    if folder is not None and folder.is_dir():
        for path in sorted(folder.glob("*.pem")):
            if device_id_from_filename(path) == dev:
                k = RegisteredKey(load_public_key(path), f"receiver devices_dir: {path.name}", _mtime_ms(path))
                found.setdefault(k.kid, k)
    if db is not None:
        for kid, held in load_rows(db).get(dev, {}).items():
            row = db.execute("SELECT min(at) FROM registry_log WHERE dev = ? AND kid = ?", (dev, kid)).fetchone()
            first = row[0] if row is not None and row[0] is not None else None
            prior = found.get(kid)
            found[kid] = RegisteredKey(
                held.key,
                f"centre registry ({held.origin}, {held.state()})" + (f"; {prior.source}" if prior else ""),
                first if first is not None else (prior.registered if prior else None),
                held.revoked_at,
            )
    return list(found.values())


def lookup_for(config: ReceiverConfig, db: Database | None = None) -> KeyLookup:
    """device_keys bound to one config (and the registry in `db`): what export_bundle takes as `keys`."""
    return lambda dev: device_keys(config, dev, db)

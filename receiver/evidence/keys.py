"""The device keys an export puts in a bundle, with what the centre knows of their registration.

Read through this one function so that the key history registry (issue 10, "Device registry":
add, revoke, rotate) can replace the config-based lookup without touching the export: today a
device's keys are the `[[devices]]` entries and `devices_dir` files of the receiver's config
(receiver/keys.py reads the same sources), and "registered" is the key file's modification
time, the closest thing to a registration date this receiver keeps.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from receiver.config import ReceiverConfig
from receiver.keys import device_id_from_filename
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


def device_keys(config: ReceiverConfig, dev: str) -> list[RegisteredKey]:
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
    return list(found.values())


def lookup_for(config: ReceiverConfig) -> KeyLookup:
    """device_keys bound to one config: what export_bundle takes as `keys`."""
    return lambda dev: device_keys(config, dev)

"""The central signing key and the registry of device public keys (registered out of band).

Device keys come from `[[devices]]` entries and from `devices_dir`, a folder of
`SOCIETY.BRANCH.DEVICE[.anything].pem` files: a dot cannot occur in a device id part, so
the first three dot-separated fields of the name are the id, and a technician registers a
new branch by dropping one file there (the registry rescans it, at most every
devices_rescan_s, when an unknown device speaks). A device may have several keys while it
rotates; every key's kid is accepted for that device only.

The database adds what files cannot say (receiver/registry.py): keys added with
`coop-receiver device add`, the seqs each key may sign (a rotation retires the old key
after the batch that announced the new one), and revocations. The worker reloads it when
its generation changes (`refresh`, at the start of every group); paho's thread only reads
the snapshot.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from receiver import registry as regdb
from receiver.config import DEVICE_RE, ReceiverConfig
from receiver.database import Database
from wire.cose import kid_for
from wire.keys import KeyError_, load_private_key, load_public_key

log = logging.getLogger(__name__)


def load_central_key(path: Path) -> Ed25519PrivateKey:
    """The central key; refused when group- or world-accessible, like the agent's own key."""
    return load_private_key(path, check_mode=True)


def device_id_from_filename(path: Path) -> str | None:
    parts = path.name.split(".")
    if len(parts) < 4 or parts[-1] != "pem":
        return None
    dev = "/".join(parts[:3])
    return dev if DEVICE_RE.match(dev) else None


class DeviceRegistry:
    """device id -> {kid: public key}; thread-safe, reloadable from the devices folder."""

    def __init__(self, config: ReceiverConfig):
        self._cfg = config
        self._lock = threading.Lock()
        self._files: dict[str, dict[bytes, Ed25519PublicKey]] = {}
        self._last_scan = 0.0
        self._rows: dict[str, dict[bytes, regdb.KeyEntry]] = {}
        self._gen = -1
        self.rotation_policy = config.receiver.key_rotation
        self.reload()

    # -- the database's part ------------------------------------------------------------

    def refresh(self, db: Database, force: bool = False) -> bool:
        """Reload the database's keys if they changed (or force); True when reloaded. In the caller's transaction."""
        gen = regdb.generation(db)
        if gen == self._gen and not force:
            return False
        rows = regdb.load_rows(db)
        with self._lock:
            self._rows, self._gen = rows, gen
        return True

    def invalidate(self) -> None:
        """After a rollback: what was loaded may hold undone changes; the next refresh reloads."""
        self._gen = -1

    def entries(self, dev: str) -> dict[bytes, regdb.KeyEntry]:
        """Every key of dev with the seqs it may sign (files overlaid with the database)."""
        with self._lock:
            return regdb.merge(self._files.get(dev, {}), self._rows.get(dev, {}))

    def check_kid(self, dev: str, kid: bytes, seq: int) -> tuple[str, str] | None:
        """(code, reason) when kid may not sign batch seq of dev (revoked, retired, not yet valid)."""
        entry = self.entries(dev).get(kid)
        if entry is None:
            return "unknown_kid", f"kid {kid.hex()} is not registered for this device"
        return regdb.refusal(entry, seq)

    def reload(self) -> None:
        keys: dict[str, dict[bytes, Ed25519PublicKey]] = {}
        for entry in self._cfg.devices:
            for path in entry.public_key:
                pub = load_public_key(path)  # a listed key that cannot be read is a config error
                keys.setdefault(entry.id, {})[kid_for(pub)] = pub
        folder = self._cfg.receiver.devices_dir
        if folder is not None and folder.is_dir():
            for path in sorted(folder.glob("*.pem")):
                dev = device_id_from_filename(path)
                if dev is None:
                    log.warning("devices_dir: %s is not named SOCIETY.BRANCH.DEVICE[.x].pem; ignored", path.name)
                    continue
                try:
                    pub = load_public_key(path)
                except KeyError_ as exc:
                    log.warning("devices_dir: %s", exc)
                    continue
                keys.setdefault(dev, {})[kid_for(pub)] = pub
        with self._lock:
            self._files = keys
            self._last_scan = time.monotonic()
        log.info("device registry: %d devices with key files", len(keys))

    def _all(self, dev: str) -> dict[bytes, Ed25519PublicKey] | None:
        """Every key of dev, revoked ones too (the writer then refuses them by name, not as unknown)."""
        files, rows = self._files.get(dev), self._rows.get(dev)
        if files is None and rows is None:
            return None
        out = dict(files or {})
        out.update((kid, e.key) for kid, e in (rows or {}).items())
        return out

    def keys_for(self, dev: str) -> dict[bytes, Ed25519PublicKey] | None:
        """The device's keys, rescanning the folder (at most every devices_rescan_s) for an unknown device."""
        with self._lock:
            found = self._all(dev)
            stale = time.monotonic() - self._last_scan >= self._cfg.receiver.devices_rescan_s
        if found is None and stale and self._cfg.receiver.devices_dir is not None:
            self.reload()
            with self._lock:
                found = self._all(dev)
        return found

    def cached_keys(self, dev: str) -> dict[bytes, Ed25519PublicKey] | None:
        """The device's keys as last loaded, never rescanning (for paho's thread, which must not do file I/O)."""
        with self._lock:
            return self._all(dev)

    def devices(self) -> list[str]:
        with self._lock:
            return sorted(set(self._files) | set(self._rows))

"""Rotating the device key without breaking its chain (`coopagent keys rotate`).

uplink-v1 keeps seq "across key changes" and leaves the change itself open; our choice
(docs/receiver.md, "Device registry and key rotation") makes it a chained event:

1. A new key is made beside the current one (`KEY.next`, mode 0600, fsynced).
2. In the buffer, a `device_event` record `{device: "agent", event: "key_rotated", detail,
   new_kid, new_key}` is committed, and the buffer's meta notes `signing_kid` = the new kid.
3. Everything unsealed is sealed under the OLD key, the announcement last: it is the last
   record the old key ever signs (the buffer's clean stop seals what is left).
4. `KEY.next` replaces `KEY` (rename: atomic); the old private key is kept as
   `KEY.retired-KID` only with --keep-old (otherwise it is deleted: a retired key that
   leaks could sign a forged past).

seq and prev simply continue: they live in the buffer, not in the key. A crash between 2
and 4 leaves the buffer expecting a key the key file is not: the agent refuses to start
with that said (check_signing_key), and running the command again finishes the rotation.
It runs with the agent stopped: one writer to the buffer, and no batch signed by the old
key after the announcement.
"""

from __future__ import annotations

import os
import socket
import sqlite3
from dataclasses import dataclass
from pathlib import Path

from agent.config.model import AgentConfig
from buffer.store import Store
from buffer.writer import SealOptions, WriterTxn
from core.interfaces import UserError
from wire.cose import Signer, kid_for
from wire.keys import KeyError_, generate_key_file, load_private_key, public_raw

ROTATION_EVENT = "key_rotated"


class RotationError(UserError):
    """The rotation cannot run now (the agent is running, or the files disagree)."""


@dataclass
class Rotated:
    old_kid: bytes
    new_kid: bytes
    seq: int  # the last seq signed by the old key (its batch carries the announcement)
    finished_only: bool  # a half-done rotation was completed; nothing new was announced


def next_path(key_path: Path) -> Path:
    return key_path.with_name(key_path.name + ".next")


def signing_kid(conn: sqlite3.Connection) -> bytes | None:
    """The kid the buffer expects its next batches to be signed with (set by a rotation), or None."""
    row = conn.execute("SELECT value FROM meta WHERE key = 'signing_kid'").fetchone()
    return None if row is None else bytes(row[0])


def check_signing_key(conn: sqlite3.Connection, signer: Signer, key_path: Path) -> None:
    """Refuse to seal with a key other than the one the buffer's last rotation announced."""
    want = signing_kid(conn)
    if want is not None and want != signer.kid:
        raise KeyError_(
            f"the buffer announced a key rotation to kid {want.hex()}, but {key_path} has kid {signer.kid.hex()}: "
            "a rotation was interrupted; run 'coopagent keys rotate' again to finish it"
        )


def _agent_running(cfg: AgentConfig) -> bool:
    host, _, port = cfg.api.listen.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]") or "127.0.0.1", int(port)), timeout=0.5):
            return True
    except OSError:
        return False


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def rotate(cfg: AgentConfig, *, keep_old: bool = False, check_running: bool = True) -> Rotated:
    """Announce a new key in the chain under the old one, then swap the key files (see the module doc)."""
    if check_running and _agent_running(cfg):
        raise RotationError(
            f"the agent answers on {cfg.api.listen}: stop it first (systemctl stop coopagent); "
            "batches sealed by the running agent under the old key after the announcement would be refused"
        )
    key_path = cfg.agent.key_path
    new_path = next_path(key_path)
    old_key = load_private_key(key_path)
    old = Signer(old_key)
    opts = SealOptions(
        device=cfg.agent.device,
        batch_max_records=cfg.buffer.batch_max_records,
        batch_max_age_s=cfg.buffer.batch_max_age_s,
        max_payload_bytes=cfg.uplink.max_payload_bytes,
        max_db_bytes=cfg.buffer.max_db_mb * 2**20,
    )
    cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
    store = Store(cfg.db_path, old, opts).start()
    try:
        pending = store.call(_meta_kid).result(30)
        finished_only = pending is not None and pending != old.kid
        if finished_only:
            if not new_path.exists():
                raise RotationError(
                    f"the buffer expects kid {pending.hex()} but neither {key_path} nor {new_path} holds it"
                )
            new_key = load_private_key(new_path)
            if kid_for(new_key.public_key()) != pending:
                raise RotationError(f"{new_path} is not the key the buffer announced ({pending.hex()})")
        else:
            if new_path.exists():
                new_path.unlink()  # an earlier attempt that stopped before announcing anything
            new_key = generate_key_file(new_path)
            _fsync_dir(new_path.parent)
            new_pub = new_key.public_key()
            new_kid = kid_for(new_pub)
            announcement = store.encode(
                [
                    {
                        "kind": "device_event",
                        "src": "agent",
                        "data": {
                            "device": "agent",
                            "event": ROTATION_EVENT,
                            "detail": f"key {old.kid.hex()} is followed by {new_kid.hex()}",
                            "old_kid": old.kid,
                            "new_kid": new_kid,
                            "new_key": public_raw(new_pub),
                        },
                    }
                ],
                "agent",
            )

            def announce(t: WriterTxn) -> None:
                # One transaction: the record and the buffer's expectation of the new key go together.
                t.insert_records(announcement)
                _set_meta_kid(t, new_kid)

            store.call(announce).result(30)
    finally:
        store.stop()  # a clean stop seals every record left, the announcement last, under the old key
    with sqlite3.connect(cfg.db_path) as conn:
        seq = int(conn.execute("SELECT value FROM meta WHERE key = 'last_seq'").fetchone()[0])
    new_kid = kid_for(new_key.public_key())
    if keep_old:
        retired = key_path.with_name(f"{key_path.name}.retired-{old.kid.hex()}")
        os.link(key_path, retired)
    install(new_path, key_path)
    return Rotated(old.kid, new_kid, seq, finished_only)


def install(new_path: Path, key_path: Path) -> None:
    """The last step: the announced key becomes the device key (an atomic rename, made durable)."""
    os.replace(new_path, key_path)
    _fsync_dir(key_path.parent)


def _meta_kid(t: WriterTxn) -> bytes | None:
    row = t.conn.execute("SELECT value FROM meta WHERE key = 'signing_kid'").fetchone()
    return None if row is None else bytes(row[0])


def _set_meta_kid(t: WriterTxn, kid: bytes) -> None:
    t.conn.execute(
        "INSERT INTO meta (key, value) VALUES ('signing_kid', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        (kid,),
    )

"""The export's key lookup reads the registry's key history, not only the config's key files.

A key added with `coop-receiver device add` (registry.add_key) and later revoked must reach a
bundle with its registration and revocation times: a verifier then sees which key was valid
when. Real SQLite receiver database, migrated as the receiver migrates it.
"""

from __future__ import annotations

from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver import registry
from receiver.config import load_receiver_config
from receiver.db import SqliteDatabase
from receiver.evidence.keys import device_keys, lookup_for
from wire.cose import kid_for
from wire.keys import generate_key_file, public_pem

DEV = "soc/br-1/agent-1"


def test_registry_keys_come_with_their_history(tmp_path: Path) -> None:
    generate_key_file(tmp_path / "central.pem")
    file_key = Ed25519PrivateKey.generate().public_key()
    (tmp_path / "dev.pem").write_text(public_pem(file_key))
    cfg_path = tmp_path / "rx.toml"
    cfg_path.write_text(f'[receiver]\ndb = "rx.sqlite3"\nkey_file = "central.pem"\nmedia_dir = "media"\n'
                        f'[[devices]]\nid = "{DEV}"\npublic_key = "dev.pem"\n')
    cfg = load_receiver_config(cfg_path)
    db = SqliteDatabase.connect(tmp_path / "rx.sqlite3", writer=True)
    try:
        assert [k.kid for k in device_keys(cfg, DEV)] == [kid_for(file_key)]
        second = Ed25519PrivateKey.generate().public_key()
        db.begin()
        entry = registry.add_key(db, DEV, second, 40)
        registry.revoke(db, DEV, entry, "lost with the till PC")
        db.commit()

        found = {k.kid: k for k in lookup_for(cfg, db)(DEV)}
        assert set(found) == {kid_for(file_key), kid_for(second)}
        added = found[kid_for(second)]
        assert added.source.startswith("centre registry (cli, revoked)")
        assert added.registered is not None and added.revoked is not None
        assert added.revoked >= added.registered
        assert found[kid_for(file_key)].revoked is None
        assert device_keys(cfg, "soc/br-2/agent-1", db) == []
    finally:
        db.close()

"""Buffer schema versions: a file written by a newer agent is refused, untouched, with exit 2.

The Debian package's preinst refuses such a downgrade first (tests/ops/test_deb_upgrade.py);
this is the agent's own guard for every other way an older program meets a newer buffer.
Real: a SQLite file, `coopagent run` as a process, its exit code and message.
"""

from __future__ import annotations

import hashlib
import sqlite3
import subprocess
import sys
from pathlib import Path

import tomli_w

from buffer.schema import MIGRATIONS, migrate
from buffer.writer import open_connection
from tests.peers.net import free_port
from wire.keys import generate_key_file, public_pem


def test_migrate_brings_a_new_file_to_the_newest_version(tmp_path: Path) -> None:
    conn = sqlite3.connect(tmp_path / "b.sqlite3", isolation_level=None)
    assert migrate(conn) == len(MIGRATIONS)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert migrate(conn) == len(MIGRATIONS), "a second open migrates nothing"


def test_a_newer_buffer_is_refused_with_exit_2_and_left_as_it_was(tmp_path: Path) -> None:
    data = tmp_path / "data"
    data.mkdir()
    db = data / "buffer.sqlite3"
    conn = open_connection(db)  # as the newer agent left it: WAL mode, closed cleanly
    migrate(conn)
    conn.execute(f"PRAGMA user_version = {len(MIGRATIONS) + 1}")
    conn.close()
    before = hashlib.sha256(db.read_bytes()).hexdigest()
    generate_key_file(data / "device_key.pem")
    central = generate_key_file(tmp_path / "central.key")
    (tmp_path / "central.pub.pem").write_text(public_pem(central.public_key()))
    (tmp_path / "api.token").write_text("t0ken-0123456789abcdef\n")
    cfg = tmp_path / "agent.toml"
    cfg.write_text(tomli_w.dumps({
        "agent": {"device": "coop-a/branch-1/agent-1", "data_dir": str(data)},
        "uplink": {"broker": f"mqtt://127.0.0.1:{free_port()}", "central_key": str(tmp_path / "central.pub.pem")},
        "api": {"listen": f"127.0.0.1:{free_port()}", "token_file": str(tmp_path / "api.token"), "workers": 0},
    }))
    r = subprocess.run([sys.executable, "-m", "agent.cli.main", "run", "--config", str(cfg)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2, r.stderr[-2000:]
    assert f"schema version {len(MIGRATIONS) + 1}, written by a newer coopagent" in r.stderr
    assert "Traceback" not in r.stderr
    assert hashlib.sha256(db.read_bytes()).hexdigest() == before


def test_version_1_buffer_migrates_with_its_records_and_notes_the_versions(tmp_path: Path) -> None:
    """A buffer as coopagent 0.1.0 left it (schema 1, records waiting) opens under this
    version: the records are kept and the agent version is noted."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from buffer.store import Store
    from buffer.writer import SealOptions
    from wire.cose import Signer

    db = tmp_path / "buffer.sqlite3"
    conn = open_connection(db)
    conn.executescript(MIGRATIONS[0])
    conn.execute("PRAGMA user_version = 1")
    conn.execute("INSERT INTO records(id, fp, kind, at, body) VALUES ('r-1', x'00', 'sale', 1, x'a0')")
    conn.close()
    opts = SealOptions(device="coop-a/branch-1/agent-1", batch_max_records=500, batch_max_age_s=60.0,
                       max_payload_bytes=262144, max_db_bytes=0, agent_version="9.9.9")
    store = Store(db, Signer(Ed25519PrivateKey.generate()), opts).start()
    try:
        assert [v["version"] for v in store.agent_versions()] == ["9.9.9"]
    finally:
        store.close()
    check = sqlite3.connect(db)
    assert check.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)
    assert check.execute("SELECT id FROM records").fetchall() == [("r-1",)]
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

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

from agent.keys import generate_key_file, public_pem
from buffer.schema import MIGRATIONS, migrate
from buffer.writer import open_connection
from tests.peers.net import free_port


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

"""`coop-receiver web authority|account` and `search-backfill`: what an admin types on the first day."""

from __future__ import annotations

from pathlib import Path

from click.testing import CliRunner

from receiver.cli import cli
from receiver.web import accounts
from receiver.web.schema import open_web_state


def test_first_admin_from_the_command_line(tmp_path: Path) -> None:
    cfg = tmp_path / "rx.toml"
    cfg.write_text('[receiver]\ndb = "rx.sqlite3"\nkey_file = "k.pem"\n[web]\ndb = "web.sqlite3"\n')
    pw = tmp_path / "pw"
    run = CliRunner().invoke
    r = run(cli, ["web", "authority", "ministry", "--society", "*", "--kind", "*", "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    pw.write_text("short\n")
    r = run(cli, ["web", "account", "root", "--role", "admin", "--authority", "ministry", "--password-file", str(pw),
                  "--config", str(cfg)])
    assert r.exit_code == 2 and "a password needs at least 10 characters" in r.output
    pw.write_text("a long enough password\n")
    r = run(cli, ["web", "account", "root", "--role", "admin", "--authority", "nowhere", "--password-file", str(pw),
                  "--config", str(cfg)])
    assert r.exit_code == 2 and "authority 'nowhere' does not exist; add it first" in r.output
    r = run(cli, ["web", "authority", "x", "--society", "a", "--kind", "sales", "--config", str(cfg)])
    assert r.exit_code == 2 and "kind 'sales' is not one of: sale," in r.output
    r = run(cli, ["web", "account", "root", "--role", "admin", "--authority", "ministry", "--password-file", str(pw),
                  "--config", str(cfg)])
    assert r.exit_code == 0, r.output
    db = open_web_state(None, None, tmp_path / "web.sqlite3")
    try:
        who = accounts.check_password(db, "root", "a long enough password")
        assert who is not None and who.role == "admin" and who.grants.societies is None
        assert accounts.check_password(db, "root", "a wrong password") is None
        stored = db.execute("SELECT password FROM accounts").fetchone()[0]
        assert stored.startswith("$argon2id$") and "a long enough password" not in stored
    finally:
        db.close()

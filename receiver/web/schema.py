"""The web application's own tables: accounts, authorities and their grants, sessions, access log, clip requests.

They are the web application's, not the receiver's: the receiver never reads them, and on
SQLite they live in their own file (`[web] db`) so the receiver's file keeps exactly one
writer (receiver/db.py). On PostgreSQL they sit in the receiver's database, migrated by the
web application under the same advisory lock, recorded in `web_schema_version`.

The access log is append-only below the application: a trigger refuses UPDATE, DELETE
(and on PostgreSQL TRUNCATE) whoever asks, and each row carries the SHA-256 of the row
before it (receiver/web/audit.py), so a row removed or changed by hand shows.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

from receiver.database import Database

_SQLITE: list[list[str]] = [
    [
        "CREATE TABLE authorities (name TEXT PRIMARY KEY, societies TEXT NOT NULL, kinds TEXT NOT NULL, "
        "created_at INTEGER NOT NULL)",
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, authority TEXT NOT NULL REFERENCES authorities, "
        "role TEXT NOT NULL CHECK (role IN ('auditor', 'operator', 'admin')), password TEXT NOT NULL, "
        "disabled INTEGER NOT NULL DEFAULT 0, created_at INTEGER NOT NULL)",
        "CREATE TABLE web_sessions (token_hash BLOB PRIMARY KEY, account TEXT NOT NULL, csrf TEXT NOT NULL, "
        "created_at INTEGER NOT NULL, seen_at INTEGER NOT NULL)",
        "CREATE TABLE access_log (n INTEGER PRIMARY KEY, at INTEGER NOT NULL, account TEXT NOT NULL, "
        "authority TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL, "
        "prev BLOB NOT NULL, hash BLOB NOT NULL)",
        "CREATE TRIGGER access_log_no_update BEFORE UPDATE ON access_log "
        "BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END",
        "CREATE TRIGGER access_log_no_delete BEFORE DELETE ON access_log "
        "BEGIN SELECT RAISE(ABORT, 'access_log is append-only'); END",
        "CREATE TABLE clip_requests (cid TEXT PRIMARY KEY, did INTEGER NOT NULL, dev TEXT NOT NULL, "
        "record_seq INTEGER NOT NULL, record_pos INTEGER NOT NULL, cmd TEXT NOT NULL, camera TEXT NOT NULL, "
        "start INTEGER, \"end\" INTEGER, account TEXT NOT NULL, at INTEGER NOT NULL)",
        "CREATE INDEX clip_requests_record ON clip_requests (did, record_seq, record_pos)",
    ],
]

_PG: list[str] = [
    r"""
CREATE TABLE authorities (name TEXT PRIMARY KEY, societies TEXT NOT NULL, kinds TEXT NOT NULL,
    created_at BIGINT NOT NULL);
CREATE TABLE accounts (name TEXT PRIMARY KEY, authority TEXT NOT NULL REFERENCES authorities,
    role TEXT NOT NULL CHECK (role IN ('auditor', 'operator', 'admin')), password TEXT NOT NULL,
    disabled INTEGER NOT NULL DEFAULT 0, created_at BIGINT NOT NULL);
CREATE TABLE web_sessions (token_hash BYTEA PRIMARY KEY, account TEXT NOT NULL, csrf TEXT NOT NULL,
    created_at BIGINT NOT NULL, seen_at BIGINT NOT NULL);
CREATE TABLE access_log (n BIGINT PRIMARY KEY, at BIGINT NOT NULL, account TEXT NOT NULL,
    authority TEXT NOT NULL, action TEXT NOT NULL, target TEXT NOT NULL, detail TEXT NOT NULL,
    prev BYTEA NOT NULL, hash BYTEA NOT NULL);
CREATE FUNCTION access_log_refuse() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN RAISE EXCEPTION 'access_log is append-only'; END $$;
CREATE TRIGGER access_log_no_change BEFORE UPDATE OR DELETE ON access_log
    FOR EACH ROW EXECUTE FUNCTION access_log_refuse();
CREATE TRIGGER access_log_no_truncate BEFORE TRUNCATE ON access_log
    FOR EACH STATEMENT EXECUTE FUNCTION access_log_refuse();
REVOKE UPDATE, DELETE, TRUNCATE ON access_log FROM PUBLIC;
CREATE TABLE clip_requests (cid TEXT PRIMARY KEY, did INTEGER NOT NULL, dev TEXT NOT NULL,
    record_seq BIGINT NOT NULL, record_pos INTEGER NOT NULL, cmd TEXT NOT NULL, camera TEXT NOT NULL,
    start BIGINT, "end" BIGINT, account TEXT NOT NULL, at BIGINT NOT NULL);
CREATE INDEX clip_requests_record ON clip_requests (did, record_seq, record_pos)
""",
]
WEB_SCHEMA_VERSION = len(_SQLITE)
LOCK = 0x636F_6F70  # receiver.pg.MIGRATION_LOCK: one migrator at a time, whoever it is


def migrate_sqlite(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > WEB_SCHEMA_VERSION:
        raise RuntimeError(f"web database schema {version} is newer than this coop-receiver; upgrade it")
    for v in range(version + 1, WEB_SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in _SQLITE[v - 1]:  # one by one: executescript() would COMMIT on its own
                conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {v}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def migrate_pg(conn: Any) -> None:
    """conn: a psycopg connection in autocommit mode (PgDatabase.conn)."""
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
        conn.execute("CREATE TABLE IF NOT EXISTS web_schema_version (version INTEGER PRIMARY KEY, "
                     "applied_at TIMESTAMPTZ NOT NULL DEFAULT now())")
    for v, sql in enumerate(_PG, start=1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (LOCK,))
            have = conn.execute("SELECT coalesce(max(version), 0) FROM web_schema_version").fetchone()[0]
            if have > WEB_SCHEMA_VERSION:
                raise RuntimeError(f"web schema {have} is newer than this coop-receiver; upgrade it")
            if have >= v:
                continue
            conn.execute(sql.encode())
            conn.execute("INSERT INTO web_schema_version (version) VALUES (%s)", (v,))


def open_web_state(receiver_db_url: str | None, password: str | None, sqlite_path: Path) -> Database:
    """The web application's own writable database: PostgreSQL beside the receiver's, or its own SQLite file."""
    if receiver_db_url is not None:
        from receiver.pg import PgDatabase

        db = PgDatabase.connect(receiver_db_url, password, writer=False)
        migrate_pg(db.conn)
        return db
    from receiver.db import SqliteDatabase

    sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(str(sqlite_path), isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = FULL")  # an access log row is written before the clip is served
    migrate_sqlite(conn)
    return SqliteDatabase(conn)

"""Versioned schema migrations, keyed on PRAGMA user_version.

Each migration runs once, inside the transaction that bumps user_version, so a crash
mid-migration leaves the previous version intact.
"""

from __future__ import annotations

import sqlite3

from core.interfaces import UserError

MIGRATIONS: list[str] = [
    # 1: records, batches, chain head, media, executed commands
    """
    CREATE TABLE records (
        rowid INTEGER PRIMARY KEY AUTOINCREMENT,  -- AUTOINCREMENT: never reuse a rowid after pruning
        id TEXT NOT NULL UNIQUE,
        fp BLOB NOT NULL,            -- fingerprint of the content the source gave (idempotent re-post)
        kind TEXT NOT NULL,
        at INTEGER NOT NULL,
        body BLOB,                   -- deterministic CBOR of the record map; NULL once sealed (the batch has it)
        seq INTEGER                  -- batch seq once sealed
    );
    CREATE TABLE batches (
        seq INTEGER PRIMARY KEY,
        prev BLOB NOT NULL,
        sealed_ms INTEGER NOT NULL,
        first_rowid INTEGER NOT NULL,
        last_rowid INTEGER NOT NULL,
        n_records INTEGER NOT NULL,
        cose BLOB NOT NULL,          -- the exact bytes published; a resend sends these again
        acked_ms INTEGER             -- when the centre acked it (NULL: not yet)
    );
    CREATE TABLE meta (
        key TEXT PRIMARY KEY,
        value
    ) WITHOUT ROWID;
    INSERT INTO meta(key, value) VALUES ('last_seq', 0), ('last_hash', zeroblob(32)),
        ('acked_seq', 0), ('sealed_upto_rowid', 0);
    CREATE TABLE media (
        media_id TEXT PRIMARY KEY,
        record_id TEXT NOT NULL,
        path TEXT NOT NULL,
        camera TEXT NOT NULL,
        type TEXT NOT NULL,
        size INTEGER NOT NULL,
        sha256 BLOB NOT NULL,
        chunk INTEGER NOT NULL,
        chunks INTEGER NOT NULL,
        created_ms INTEGER NOT NULL,
        held INTEGER NOT NULL DEFAULT 1,
        state TEXT NOT NULL DEFAULT 'pending',   -- pending | complete | evicted
        next_index INTEGER NOT NULL DEFAULT 0,   -- next chunk to send in the first pass
        missing TEXT,                            -- JSON list the centre asked for again, or NULL
        done_ms INTEGER
    );
    CREATE INDEX media_state ON media(state, created_ms);
    CREATE TABLE commands (
        id TEXT PRIMARY KEY,
        cmd TEXT NOT NULL,
        at INTEGER NOT NULL,
        done_ms INTEGER NOT NULL,
        result TEXT NOT NULL
    ) WITHOUT ROWID;
    """,
    # 2 (coopagent 0.2.0): which agent versions have written this buffer, for the support
    # bundle and an auditor's "what software sealed these batches"; and the first migration
    # that a Debian package upgrade runs on a buffer full of unsent records (tests/ops).
    """
    CREATE TABLE agent_versions (
        version TEXT PRIMARY KEY,
        first_ms INTEGER NOT NULL,   -- when this version first opened the buffer
        last_ms INTEGER NOT NULL     -- when it last did
    ) WITHOUT ROWID;
    """,
]


class SchemaTooNew(UserError):
    """The buffer was migrated by a newer agent. Not retryable: `coopagent run` exits 2, which
    the unit's RestartPreventExitStatus= turns into a failed unit with this message, and the
    file is left exactly as it was (the Debian package refuses such a downgrade before it)."""


def migrate(conn: sqlite3.Connection) -> int:
    """Bring the file to the newest version; returns it. Refuses a file newer than this code."""
    current = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if current > len(MIGRATIONS):
        raise SchemaTooNew(f"the buffer has schema version {current}, written by a newer coopagent; this one "
                           f"knows versions up to {len(MIGRATIONS)} and will not touch it. Install the newer "
                           f"coopagent again (its records are still in the buffer), do not downgrade")
    for version in range(current + 1, len(MIGRATIONS) + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            for stmt in MIGRATIONS[version - 1].split(";\n"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {version}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return len(MIGRATIONS)

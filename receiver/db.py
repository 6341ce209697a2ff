"""The receiver's SQLite file: schema, migrations and connection settings.

WAL so `coop-receiver status` and the tests can read while `run` writes; synchronous=FULL
because an ack promises the agent it may forget a batch, so the commit it follows must
survive a power cut (NORMAL can roll back the last transactions in WAL mode). Exactly one
writer connection exists (the server's worker), which also sidesteps the WAL-reset bug of
the SQLite 3.40 that Debian 12 ships, which needs two writers to corrupt a database.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

_V1 = """
CREATE TABLE devices (
    did INTEGER PRIMARY KEY,
    dev TEXT NOT NULL UNIQUE,
    contiguous INTEGER NOT NULL DEFAULT 0,     -- highest seq with every batch up to it stored
    last_hash BLOB NOT NULL DEFAULT x'0000000000000000000000000000000000000000000000000000000000000000',
    highest_seen INTEGER NOT NULL DEFAULT 0,   -- highest verified seq received (stored or held)
    records INTEGER NOT NULL DEFAULT 0,
    duplicate_ids INTEGER NOT NULL DEFAULT 0,  -- record ids that arrived again in a later batch
    last_batch_at INTEGER,
    status_cose BLOB,
    status_json TEXT,
    status_at INTEGER
);
CREATE TABLE batches (
    did INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    sealed INTEGER NOT NULL,
    n_records INTEGER NOT NULL,
    received_at INTEGER NOT NULL,
    cose BLOB NOT NULL,                        -- the exact bytes, so the chain can be re-proved later
    PRIMARY KEY (did, seq)
);
CREATE TABLE records (                         -- the index of every stored record: its content is
    did INTEGER NOT NULL,                      -- in batches.cose (the signed bytes, kept once)
    id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    pos INTEGER NOT NULL,                      -- index in its batch's records array
    kind TEXT NOT NULL,
    at INTEGER NOT NULL,
    src TEXT NOT NULL,
    UNIQUE (did, id)
);
CREATE TABLE pending (
    did INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    cose BLOB NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (did, seq)
);
CREATE TABLE chain_breaks (
    did INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    hash BLOB NOT NULL,
    reason TEXT NOT NULL,
    first_at INTEGER NOT NULL,
    times INTEGER NOT NULL DEFAULT 1,
    cose BLOB NOT NULL,                        -- evidence: the signed batch that did not fit the chain
    UNIQUE (did, seq, hash)
);
CREATE TABLE rejections (
    rid INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    dev TEXT NOT NULL,                          -- from the topic: the device may not be registered
    topic TEXT NOT NULL,
    code TEXT NOT NULL,
    reason TEXT NOT NULL,
    seq INTEGER
);
CREATE INDEX rejections_dev ON rejections (dev, rid);
CREATE TABLE media (
    did INTEGER NOT NULL,
    media_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    record_id TEXT NOT NULL,
    camera TEXT NOT NULL,
    type TEXT NOT NULL,
    start INTEGER NOT NULL,
    "end" INTEGER NOT NULL,
    size INTEGER NOT NULL,
    sha256 BLOB NOT NULL,
    chunk INTEGER NOT NULL,
    chunks INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',      -- pending | complete
    path TEXT,
    completed_at INTEGER,
    PRIMARY KEY (did, media_id)
);
"""

_V2 = """
CREATE TABLE health (                          -- the running receiver's own state, for `status`
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    at INTEGER NOT NULL
);
"""

_V3 = """
CREATE TABLE device_keys (                     -- the registry's own knowledge of device keys (receiver/registry.py)
    dev TEXT NOT NULL,
    kid BLOB NOT NULL,
    public_key BLOB NOT NULL,                  -- raw 32-byte Ed25519 public key
    valid_from_seq INTEGER,                    -- first seq it may sign (NULL: registered, rotation not announced yet)
    valid_to_seq INTEGER,                      -- last seq it may sign, set when a rotation retired it (NULL: open)
    revoked_at INTEGER,                        -- epoch ms, every batch it signs is refused from then on
    revoked_reason TEXT,
    origin TEXT NOT NULL,                      -- cli | rotation | file (a config or devices_dir key)
    added_at INTEGER NOT NULL,
    announced_seq INTEGER,                     -- the batch whose key_rotated record announced it
    PRIMARY KEY (dev, kid)
);
CREATE TABLE registry_log (                    -- every registry change, max(id) being the registry's generation
    id INTEGER PRIMARY KEY,
    at INTEGER NOT NULL,
    dev TEXT NOT NULL,
    kid BLOB,
    action TEXT NOT NULL,
    seq INTEGER,
    detail TEXT NOT NULL
);
CREATE INDEX registry_log_dev ON registry_log (dev, id);
CREATE TABLE media_holds (                     -- media an operator holds as evidence (retention never deletes it)
    did INTEGER NOT NULL,
    media_id TEXT NOT NULL,
    reason TEXT NOT NULL,
    at INTEGER NOT NULL,
    PRIMARY KEY (did, media_id)
);
"""

# Several receivers sharing one subscription (issue 10, section 3 and 5): a batch's bytes are looked
# up by hash before the verifier, and one receiver claims each resend ask.
_V4 = """
CREATE INDEX batches_hash ON batches (hash);
CREATE INDEX pending_hash ON pending (hash);
ALTER TABLE devices ADD COLUMN resend_asked_at INTEGER
"""


# The search index (receiver/search.py): filled by the writer; `coop-receiver search-backfill` for older rows.
_V5 = """
CREATE TABLE record_search (
    did INTEGER NOT NULL, seq INTEGER NOT NULL, pos INTEGER NOT NULL,
    id TEXT NOT NULL, kind TEXT NOT NULL, at INTEGER NOT NULL,
    society TEXT NOT NULL, branch TEXT NOT NULL,
    flag TEXT, receipt TEXT, till TEXT, doc TEXT, camera TEXT, ref TEXT, state TEXT,
    t0 INTEGER, t1 INTEGER, total INTEGER,
    PRIMARY KEY (did, seq, pos)
);
CREATE INDEX record_search_at ON record_search (at);
CREATE INDEX record_search_branch ON record_search (society, branch, at);
CREATE INDEX record_search_society ON record_search (society, at);
CREATE INDEX record_search_kind ON record_search (kind, at);
CREATE INDEX record_search_receipt ON record_search (receipt) WHERE receipt IS NOT NULL;
CREATE INDEX record_search_doc ON record_search (doc) WHERE doc IS NOT NULL;
CREATE INDEX record_search_flag ON record_search (at) WHERE flag IS NOT NULL;
CREATE INDEX record_search_flag_branch ON record_search (society, branch, at) WHERE flag IS NOT NULL;
CREATE INDEX record_search_ref ON record_search (ref) WHERE ref IS NOT NULL;
CREATE INDEX record_search_span ON record_search (society, branch, t0) WHERE t0 IS NOT NULL;
CREATE TABLE record_gtins (
    gtin TEXT NOT NULL, at INTEGER NOT NULL, did INTEGER NOT NULL, seq INTEGER NOT NULL, pos INTEGER NOT NULL,
    PRIMARY KEY (gtin, at, did, seq, pos)
);
CREATE INDEX record_gtins_device ON record_gtins (gtin, did, at)
"""

MIGRATIONS = {1: _V1, 2: _V2, 3: _V3, 4: _V4, 5: _V5}
SCHEMA_VERSION = max(MIGRATIONS)


def connect(path: Path, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (transactions are explicit BEGIN IMMEDIATE ... COMMIT)."""
    if writer:
        path.parent.mkdir(parents=True, exist_ok=True)
    uri = f"file:{path}" + ("" if writer else "?mode=ro")
    conn = sqlite3.connect(uri, uri=True, isolation_level=None, check_same_thread=False, timeout=10)
    conn.execute("PRAGMA busy_timeout = 10000")
    if writer:
        conn.execute("PRAGMA journal_mode = WAL")
        conn.execute("PRAGMA synchronous = FULL")
        # The (did, id) index takes random inserts when sources use random ids (UUIDv4): with the
        # default 2 MB page cache that costs ~2x per record once the index outgrows it.
        conn.execute("PRAGMA cache_size = -65536")
        migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> None:
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise RuntimeError(
            f"database schema {version} is newer than this receiver ({SCHEMA_VERSION}); upgrade coop-receiver"
        )
    for v in range(version + 1, SCHEMA_VERSION + 1):
        conn.execute("BEGIN IMMEDIATE")
        try:
            # executescript() would COMMIT on its own; statements one by one keep it all-or-nothing
            for stmt in MIGRATIONS[v].split(";"):
                if stmt.strip():
                    conn.execute(stmt)
            conn.execute(f"PRAGMA user_version = {v}")
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise


class StoreMissing(Exception):
    """No database yet (the receiver has never run against it)."""


class SqliteDatabase:
    """receiver.database.Database over one SQLite file."""

    kind = "sqlite"
    for_update = ""
    errors: tuple[type[Exception], ...] = (sqlite3.Error,)

    def __init__(self, conn: sqlite3.Connection):
        self.conn = conn

    @classmethod
    def connect(cls, path: Path, *, writer: bool) -> SqliteDatabase:
        if not writer and not path.exists():
            raise StoreMissing(f"no receiver database at {path}; start 'coop-receiver run' first")
        return cls(connect(path, writer=writer))

    def execute(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Cursor:
        return self.conn.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self.conn.executemany(sql, rows)

    def begin(self) -> None:
        self.conn.execute("BEGIN IMMEDIATE")

    def commit(self) -> None:
        self.conn.execute("COMMIT")

    def rollback(self) -> None:
        if self.conn.in_transaction:  # SQLite may have rolled back already (SQLITE_FULL, SQLITE_IOERR)
            self.conn.execute("ROLLBACK")

    def _insert_records(self, rows: Sequence[tuple[int, str, int, int, str, int, str]]) -> int:
        before = self.conn.total_changes
        self.conn.executemany(
            "INSERT INTO records (did, id, seq, pos, kind, at, src) VALUES (?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (did, id) DO NOTHING",
            rows,
        )
        return self.conn.total_changes - before

    def insert_stored(
        self,
        batches: Sequence[tuple[int, int, bytes, int, int, int, bytes]],
        records: Sequence[Sequence[tuple[int, str, int, int, str, int, str]]],
    ) -> list[int]:
        self.conn.executemany(
            "INSERT INTO batches (did, seq, hash, sealed, n_records, received_at, cose) VALUES (?, ?, ?, ?, ?, ?, ?)",
            batches,
        )
        return [self._insert_records(rows) for rows in records]  # in-process: a statement costs no round trip

    def maintain(self, now_ms: int) -> None:
        """Nothing to prepare: SQLite's tables are not partitioned."""

    def close(self) -> None:
        self.conn.close()

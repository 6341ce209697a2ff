"""The one interface the receiver's writer, media assembler and read side use for their database.

Two implementations: `receiver.db.SqliteDatabase` (the embedded default: one file, WAL,
synchronous=FULL) and `receiver.pg.PgDatabase` (PostgreSQL 15 through psycopg 3). The SQL
the callers write is the dialect both accept (`?` placeholders, `ON CONFLICT`, `RETURNING`,
savepoints); what differs lives behind this interface: opening a transaction, bulk insert
of a group's batches and record index (binary COPY on PostgreSQL), and partitions made ahead of time.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from receiver.config import ReceiverSection

# One record of the index: (did, id, seq, pos, kind, at, src)
RecordRow = tuple[int, str, int, int, str, int, str]
# One stored batch: (did, seq, hash, sealed, n_records, received_at, cose)
StoredBatch = tuple[int, int, bytes, int, int, int, bytes]


class Rows(Protocol):
    @property
    def rowcount(self) -> int: ...
    def fetchone(self) -> Any: ...
    def fetchall(self) -> list[Any]: ...
    def __iter__(self) -> Iterator[Any]: ...


class Database(Protocol):
    kind: str  # "sqlite" | "postgresql", for logs and status
    # Appended to the SELECT of a device's chain head: " FOR UPDATE" where rows lock (PostgreSQL),
    # "" where the write transaction already excludes every other writer (SQLite's BEGIN IMMEDIATE).
    for_update: str
    # The driver's errors: the database failed, not the message (the server retries the whole group).
    errors: tuple[type[Exception], ...]

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows: ...
    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...

    def begin(self) -> None:
        """Open the write transaction (SQLite: BEGIN IMMEDIATE, so the lock is taken up front)."""

    def commit(self) -> None:
        """COMMIT durably: the acks that follow promise the agents what it made durable."""

    def rollback(self) -> None:
        """Roll back if a transaction is open (the driver may have rolled back already)."""

    def insert_stored(self, batches: Sequence[StoredBatch], records: Sequence[Sequence[RecordRow]]) -> list[int]:
        """Insert a group's batches and each one's record index (records[i] belongs to batches[i]).

        Skips (did, id) already stored; returns, per batch, how many of its records were new.
        The caller has dropped ids repeated within the group, keeping the first.
        """

    def maintain(self, now_ms: int) -> None:
        """Housekeeping in its own transaction (PostgreSQL: the coming months' partitions)."""

    def close(self) -> None: ...


def is_postgres_url(target: str | Path) -> bool:
    return isinstance(target, str) and target.startswith(("postgresql://", "postgres://"))


def open_database(section: ReceiverSection, *, writer: bool) -> Database:
    """The configured database: PostgreSQL when `database_url` is set, the SQLite file `db` otherwise.

    writer=True migrates the schema first; the read side refuses a database that does not exist yet.
    """
    if section.database_url is not None:
        from receiver.pg import PgDatabase

        return PgDatabase.connect(section.database_url, section.database_password(), writer=writer)
    from receiver.db import SqliteDatabase

    return SqliteDatabase.connect(section.db, writer=writer)

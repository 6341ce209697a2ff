"""One message's share of a group transaction: a savepoint taken only when the message writes.

Why: the worker judges up to a group of messages in one transaction, and one poison message
must not undo the others, so each message's writes sit behind a savepoint that is rolled
back if handling it fails. But most messages of a busy centre write nothing while they are
judged (a batch that extends its chain is staged in memory and written with the whole group,
receiver/writer.py), and a SAVEPOINT and its RELEASE are two round trips to PostgreSQL each:
measured, they were a fifth of the statements per 4-record batch (docs/benchmarks.md). So the
savepoint is taken just before the message's first statement that is not a plain SELECT, and
released only if taken. A SELECT ... FOR UPDATE before it only takes a row lock, which the
group's transaction holds anyway.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from receiver.database import Database, RecordRow, Rows, StoredBatch


class ScopedDatabase:
    """The writer's database, delegating everything; between begin_message and end, writes open a savepoint."""

    def __init__(self, db: Database):
        self.inner = db
        self.kind = db.kind
        self.for_update = db.for_update
        self.errors = db.errors
        self._in_message = False
        self._savepoint = False

    def __getattr__(self, name: str) -> Any:  # the driver's own extras (conn, url) for tests and tools
        return getattr(self.inner, name)

    # -- message scope ------------------------------------------------------------------

    def begin_message(self) -> None:
        self._in_message, self._savepoint = True, False

    def end_message(self) -> None:
        """The message was handled: keep its writes (RELEASE, if it wrote)."""
        if self._savepoint:
            self.inner.execute("RELEASE msg")
        self._in_message = self._savepoint = False

    def abort_message(self) -> None:
        """Handling failed: undo the message's writes (ROLLBACK TO, if it wrote)."""
        if self._savepoint:
            self.inner.execute("ROLLBACK TO msg")
            self.inner.execute("RELEASE msg")
        self._in_message = self._savepoint = False

    def _before_write(self) -> None:
        if self._in_message and not self._savepoint:
            self.inner.execute("SAVEPOINT msg")
            self._savepoint = True

    # -- Database -----------------------------------------------------------------------

    def execute(self, sql: str, params: Sequence[Any] = ()) -> Rows:
        if self._in_message and not sql.lstrip()[:6].upper() == "SELECT":
            self._before_write()
        return self.inner.execute(sql, params)

    def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        self._before_write()
        self.inner.executemany(sql, rows)

    def insert_stored(self, batches: Sequence[StoredBatch], records: Sequence[Sequence[RecordRow]]) -> list[int]:
        self._before_write()
        return self.inner.insert_stored(batches, records)

    def begin(self) -> None:
        self._in_message = self._savepoint = False
        self.inner.begin()

    def commit(self) -> None:
        self.inner.commit()

    def rollback(self) -> None:
        self._in_message = self._savepoint = False
        self.inner.rollback()

    def maintain(self, now_ms: int) -> None:
        self.inner.maintain(now_ms)

    def close(self) -> None:
        self.inner.close()

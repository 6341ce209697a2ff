"""The access log: every view of a clip and every export, append-only and hash-chained.

Video of people is personal data, so who watched what is itself a record an admin must be
able to trust. The application only ever INSERTs (triggers refuse UPDATE and DELETE:
receiver/web/schema.py), and each row's `hash` is SHA-256 over the previous row's hash and
this row's fields in a fixed encoding, so a row edited or removed outside the application
breaks the chain at that row, which `verify` names.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from receiver.database import Database
from receiver.web.accounts import Account, now_ms

ZERO = b"\x00" * 32
_LOCK = 0x636F_6F71  # PostgreSQL advisory lock: one appender at a time across web processes


def _digest(prev: bytes, n: int, at: int, account: str, authority: str, action: str, target: str,
            detail: str) -> bytes:
    body = json.dumps([n, at, account, authority, action, target, detail], ensure_ascii=False,
                      separators=(",", ":")).encode()
    return hashlib.sha256(prev + body).digest()


def append(db: Database, who: Account | None, action: str, target: str, detail: dict[str, Any] | None = None,
           *, account_name: str | None = None) -> int:
    """Write one row in its own transaction (before the clip or export is served); returns its number."""
    name = who.name if who else (account_name or "-")
    authority = who.authority if who else "-"
    text = json.dumps(detail or {}, sort_keys=True, ensure_ascii=False)
    db.begin()
    try:
        if db.kind == "postgresql":
            db.execute("SELECT pg_advisory_xact_lock(?)", (_LOCK,))
        last = db.execute("SELECT n, hash FROM access_log ORDER BY n DESC LIMIT 1").fetchone()
        n, prev = (1, ZERO) if last is None else (int(last[0]) + 1, bytes(last[1]))
        at = now_ms()
        h = _digest(prev, n, at, name, authority, action, target, text)
        db.execute(
            "INSERT INTO access_log (n, at, account, authority, action, target, detail, prev, hash) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (n, at, name, authority, action, target, text, prev, h),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return n


@dataclass
class LogRow:
    n: int
    at: int
    account: str
    authority: str
    action: str
    target: str
    detail: str


def rows(db: Database, limit: int = 200, before: int | None = None) -> list[LogRow]:
    sql = "SELECT n, at, account, authority, action, target, detail FROM access_log"
    params: list[Any] = []
    if before is not None:
        sql += " WHERE n < ?"
        params.append(before)
    sql += " ORDER BY n DESC LIMIT ?"
    params.append(limit)
    return [LogRow(*r) for r in db.execute(sql, params)]


def verify(db: Database) -> tuple[int, str | None]:
    """(rows checked, None) if the chain holds from row 1, else (rows checked, what is wrong where)."""
    prev, expect, count = ZERO, 1, 0
    for n, at, account, authority, action, target, detail, p, h in db.execute(
        "SELECT n, at, account, authority, action, target, detail, prev, hash FROM access_log ORDER BY n"
    ):
        if n != expect:
            return count, f"row {expect} is missing (next is {n})"
        if bytes(p) != prev or bytes(h) != _digest(prev, n, at, account, authority, action, target, detail):
            return count, f"row {n} was changed after it was written"
        prev, expect, count = bytes(h), expect + 1, count + 1
    return count, None

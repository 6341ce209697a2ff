"""Accounts, authorities and sessions: who may log in, what they may do, and what their authority may see.

Passwords are argon2id hashes (argon2-cffi, its default RFC 9106 low-memory profile);
a login with an unknown name runs the same hash so the answer takes as long as a wrong
password. A session is a random token in a cookie; only its SHA-256 is stored, so a
copy of the database opens no session. It ends after `session_idle_minutes` without a
request and at the latest `session_max_hours` after the login. Each session has its own
CSRF token, which every form carries back.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

from receiver.database import Database
from receiver.search import Grants
from wire.kinds import KINDS

ROLES = ("auditor", "operator", "admin")
RANK = {r: i for i, r in enumerate(ROLES)}
ALL = "*"
_hasher = PasswordHasher()
_DUMMY = _hasher.hash("not a password anyone has")


def now_ms() -> int:
    return int(time.time() * 1000)


class AccountError(ValueError):
    """A bad account or authority request (the CLI prints it; the admin page shows it)."""


@dataclass(frozen=True)
class Account:
    name: str
    role: str
    authority: str
    grants: Grants

    def can(self, role: str) -> bool:
        return RANK[self.role] >= RANK[role]


@dataclass(frozen=True)
class Session:
    account: Account
    csrf: str
    token_hash: bytes


def _split(text: str) -> frozenset[str] | None:
    parts = frozenset(p for p in text.split(",") if p)
    return None if ALL in parts else parts


def add_authority(db: Database, name: str, societies: list[str], kinds: list[str]) -> None:
    """societies/kinds: the grants; ["*"] grants all (the ministry's own control centre)."""
    if not name.strip():
        raise AccountError("an authority needs a name")
    bad = [k for k in kinds if k != ALL and k not in KINDS]
    if bad:
        raise AccountError(f"kind {bad[0]!r} is not one of: {', '.join(KINDS)} (or * for all)")
    db.begin()
    try:
        db.execute(
            "INSERT INTO authorities (name, societies, kinds, created_at) VALUES (?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET societies = excluded.societies, kinds = excluded.kinds",
            (name, ",".join(sorted(set(societies))), ",".join(sorted(set(kinds))), now_ms()),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise


def authorities(db: Database) -> list[tuple[str, str, str]]:
    return [(r[0], r[1], r[2]) for r in db.execute("SELECT name, societies, kinds FROM authorities ORDER BY name")]


def add_account(db: Database, name: str, password: str, role: str, authority: str) -> None:
    if role not in ROLES:
        raise AccountError(f"role {role!r} is not one of: {', '.join(ROLES)}")
    if not name or len(name) > 64 or not name.replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise AccountError("an account name is 1-64 letters, digits, '-', '_' or '.'")
    if len(password) < 10:
        raise AccountError("a password needs at least 10 characters")
    if db.execute("SELECT 1 FROM authorities WHERE name = ?", (authority,)).fetchone() is None:
        raise AccountError(f"authority {authority!r} does not exist; add it first")
    db.begin()
    try:
        db.execute(
            "INSERT INTO accounts (name, authority, role, password, created_at) VALUES (?, ?, ?, ?, ?) "
            "ON CONFLICT (name) DO UPDATE SET authority = excluded.authority, role = excluded.role, "
            "password = excluded.password, disabled = 0",
            (name, authority, role, _hasher.hash(password), now_ms()),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise


def set_disabled(db: Database, name: str, disabled: bool) -> None:
    db.begin()
    try:
        db.execute("UPDATE accounts SET disabled = ? WHERE name = ?", (int(disabled), name))
        if disabled:
            db.execute("DELETE FROM web_sessions WHERE account = ?", (name,))
        db.commit()
    except BaseException:
        db.rollback()
        raise


def accounts(db: Database) -> list[tuple[str, str, str, bool]]:
    return [(r[0], r[1], r[2], bool(r[3]))
            for r in db.execute("SELECT name, role, authority, disabled FROM accounts ORDER BY name")]


def load_account(db: Database, name: str) -> Account | None:
    row = db.execute(
        "SELECT a.name, a.role, a.authority, t.societies, t.kinds FROM accounts a "
        "JOIN authorities t ON t.name = a.authority WHERE a.name = ? AND a.disabled = 0",
        (name,),
    ).fetchone()
    if row is None:
        return None
    return Account(row[0], row[1], row[2], Grants(_split(row[3]), _split(row[4])))


def check_password(db: Database, name: str, password: str) -> Account | None:
    """The account if the password is right (and the account enabled), else None; same work either way."""
    row = db.execute("SELECT password FROM accounts WHERE name = ? AND disabled = 0", (name,)).fetchone()
    try:
        _hasher.verify(row[0] if row else _DUMMY, password)
    except (VerificationError, InvalidHashError):
        return None
    return load_account(db, name) if row else None


def _hash_token(token: str) -> bytes:
    return hashlib.sha256(token.encode()).digest()


def open_session(db: Database, account: Account) -> str:
    """A new session; returns the cookie's token (only its hash is stored)."""
    token = secrets.token_urlsafe(32)
    now = now_ms()
    db.begin()
    try:
        db.execute(
            "INSERT INTO web_sessions (token_hash, account, csrf, created_at, seen_at) VALUES (?, ?, ?, ?, ?)",
            (_hash_token(token), account.name, secrets.token_urlsafe(32), now, now),
        )
        db.commit()
    except BaseException:
        db.rollback()
        raise
    return token


class SessionExpired(Exception):
    """The cookie names a session that ended (idle or too old): the login page says so."""


def resume(db: Database, token: str, idle_ms: int, max_ms: int) -> Session | None:
    """The live session for a cookie token, touched; None for no session; SessionExpired for an ended one."""
    th = _hash_token(token)
    row = db.execute("SELECT account, csrf, created_at, seen_at FROM web_sessions WHERE token_hash = ?",
                     (th,)).fetchone()
    if row is None:
        return None
    now = now_ms()
    if now - int(row[3]) > idle_ms or now - int(row[2]) > max_ms:
        close_session(db, token)
        raise SessionExpired()
    account = load_account(db, row[0])
    if account is None:
        close_session(db, token)
        return None
    if now - int(row[3]) > 10_000:  # touch at most every 10 s: a page's media requests need no write each
        db.begin()
        try:
            db.execute("UPDATE web_sessions SET seen_at = ? WHERE token_hash = ?", (now, th))
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return Session(account, row[1], th)


def close_session(db: Database, token: str) -> None:
    db.begin()
    try:
        db.execute("DELETE FROM web_sessions WHERE token_hash = ?", (_hash_token(token),))
        db.commit()
    except BaseException:
        db.rollback()
        raise


def csrf_ok(expected: str, given: str | None) -> bool:
    return given is not None and hmac.compare_digest(expected.encode(), given.encode())

"""Bearer-token check for the local API: its /v1/records (agent.api) and /v1/count (the serial
workflows) routes alike.

The token is read once per server start from [api] token_file (or systemd's
$CREDENTIALS_DIRECTORY), compared in constant time, and never logged or echoed.
"""

from __future__ import annotations

import hmac
from pathlib import Path

from core.config.base import read_secret

MIN_TOKEN_CHARS = 16


def load_token(path: Path) -> bytes:
    """The token as bytes; refuses a short one, since the API may be reachable from the LAN."""
    token = read_secret(path)
    if len(token) < MIN_TOKEN_CHARS:
        raise ValueError(
            f"api token in {path} is {len(token)} characters; use at least {MIN_TOKEN_CHARS} "
            "(e.g. `openssl rand -hex 32`)"
        )
    return token.encode()


def bearer_ok(header: bytes | None, token: bytes) -> bool:
    """True when `Authorization: Bearer <token>` matches; hmac.compare_digest takes the same time
    wherever the first differing byte is, so the token cannot be guessed byte by byte."""
    if header is None:
        return False
    scheme, _, given = header.partition(b" ")
    if scheme.lower() != b"bearer":
        return False
    return hmac.compare_digest(given.strip(), token)

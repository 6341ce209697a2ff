"""Camera credentials: read from a file or systemd credentials, put into URLs, scrubbed from all text.

Frigate's lesson: ffmpeg repeats the input URL in its errors, exceptions repeat their
arguments, and a password in one log line is a password in every log shipper. So every
piece of text that leaves this package (log lines, relayed ffmpeg stderr, exception messages,
CLI output) goes through scrub(), and tests/camera/test_secrets.py checks it end to end.
"""

from __future__ import annotations

import re
from pathlib import Path
from urllib.parse import quote, urlsplit, urlunsplit

from core.config.base import read_secret

# scheme://userinfo@ : userinfo cannot hold '/', '@' or whitespace once percent-encoded.
_USERINFO = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/@\s]+@")
REDACTED = "***:***@"


def scrub(text: str, *secrets: str | None) -> str:
    """Replace the user:password part of every URL in text, and any known secret (raw or encoded)."""
    text = _USERINFO.sub(lambda m: m.group(1) + REDACTED, text)
    for secret in secrets:
        if secret and len(secret) >= 3:  # a 1-2 character "secret" would shred ordinary text
            text = text.replace(secret, "***").replace(quote(secret, safe=""), "***")
    return text


def read_password(password_file: Path | None) -> str | None:
    """The camera password, or None; the error names the file, never the content."""
    return None if password_file is None else read_secret(password_file)


def with_credentials(url: str, username: str | None, password: str | None) -> str:
    """The URL ffmpeg/opencv open: userinfo percent-encoded so '@' or ':' in a password stay safe."""
    if not username:
        return url
    u = urlsplit(url)
    userinfo = quote(username, safe="") + (":" + quote(password, safe="") if password else "")
    netloc = f"{userinfo}@{u.hostname}" + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))


def strip_credentials(url: str) -> str:
    """ONVIF answers may embed credentials in stream URIs; we keep URLs bare and add ours."""
    u = urlsplit(url)
    if not (u.username or u.password):
        return url
    netloc = (u.hostname or "") + (f":{u.port}" if u.port else "")
    return urlunsplit((u.scheme, netloc, u.path, u.query, u.fragment))

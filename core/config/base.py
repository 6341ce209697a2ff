"""The one base every config model uses: unknown keys are errors, values are checked on assignment."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Annotated
from urllib.parse import urlsplit

from pydantic import AfterValidator, BaseModel, ConfigDict


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True, frozen=False)


def secret_path(path: Path) -> Path:
    """A relative secret file name is looked up in systemd's $CREDENTIALS_DIRECTORY (LoadCredential=)."""
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if not path.is_absolute() and creds:
        return Path(creds) / path
    return path


def read_secret(path: Path) -> str:
    """Read a secret file's first line; the error names the file, never the content."""
    p = secret_path(path)
    try:
        return p.read_text().strip()
    except OSError as exc:
        raise ValueError(f"cannot read secret file {p}: {exc.strerror}") from exc


def check_broker_url(v: str) -> str:
    """mqtt:// or mqtts:// with a host, a numeric port if any, and no credentials in the URL."""
    u = urlsplit(v)
    if u.scheme not in ("mqtt", "mqtts") or not u.hostname:
        raise ValueError("must be mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    try:
        _ = u.port
    except ValueError as exc:
        raise ValueError("port must be a number from 1 to 65535") from exc
    if u.username or u.password:
        raise ValueError("put no credentials in the URL; use username and password_file")
    return v


def check_topic_prefix(v: str) -> str:
    if not v or any(c in v for c in "+#\0") or v.startswith("/") or v.endswith("/"):
        raise ValueError("must be a non-empty topic path without +, # or a leading/trailing '/'")
    return v


# Field types that carry their checks (one place for the agent's uplink and the receiver).
BrokerURLStr = Annotated[str, AfterValidator(check_broker_url)]
TopicPrefixStr = Annotated[str, AfterValidator(check_topic_prefix)]


class BrokerUrl:
    """host, port and TLS of a section's `broker` URL (agent uplink and receiver alike)."""

    broker: str

    @property
    def tls(self) -> bool:
        return urlsplit(self.broker).scheme == "mqtts"

    @property
    def host(self) -> str:
        return urlsplit(self.broker).hostname or "127.0.0.1"

    @property
    def port(self) -> int:
        u = urlsplit(self.broker)
        return u.port or (8883 if u.scheme == "mqtts" else 1883)

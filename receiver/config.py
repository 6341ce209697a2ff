"""The receiver's config: TOML read into typed models; every error names key, value and what is allowed.

Relative paths resolve against the config file's folder (not the working directory), so a
config and the keys beside it can be moved together; see docs/receiver.md for every key.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator, model_validator

from core.config.base import BrokerUrl, BrokerURLStr, Section, TopicPrefixStr, read_secret
from core.config.errors import ConfigError as ConfigError  # re-exported: receiver.cli catches it
from core.config.errors import config_error, read_toml
from receiver.retention import RetentionSection
from receiver.web.config import WebSection

DEVICE_PART = r"[a-z0-9][a-z0-9-]{0,31}"
DEVICE_RE = re.compile(rf"^{DEVICE_PART}/{DEVICE_PART}/{DEVICE_PART}$")
DEVICE_RULE = (
    "must be SOCIETY/BRANCH/DEVICE, each part matching [a-z0-9][a-z0-9-]{0,31} "
    "(lower case letters, digits and '-', at most 32 characters)"
)
DEFAULT_CONFIG_PATH = Path("/etc/coop-receiver/receiver.toml")
SPEC_MAX_PAYLOAD = 256 * 1024
SHARED_GROUP_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
SHARED_SESSION_MAX_S = 600


def check_database_url(v: str) -> str:
    """postgresql://[USER@]HOST[:PORT]/DBNAME, no password in it (it would show in `config check` and logs)."""
    u = urlsplit(v)
    if u.scheme not in ("postgresql", "postgres"):
        raise ValueError("must be postgresql://USER@HOST[:PORT]/DBNAME (for SQLite, set db instead)")
    try:
        _ = u.port
    except ValueError as exc:
        raise ValueError("port must be a number from 1 to 65535") from exc
    if u.password is not None:
        raise ValueError("put no password in the URL; use database_password_file")
    if not u.path.strip("/"):
        raise ValueError("name the database: postgresql://USER@HOST[:PORT]/DBNAME")
    if not u.hostname and "host=" not in u.query:
        raise ValueError("name the host: postgresql://USER@HOST[:PORT]/DBNAME (or ?host=/run/postgresql)")
    return v


class ReceiverSection(BrokerUrl, Section):
    db: Path = Field(
        Path("/var/lib/coop-receiver/receiver.sqlite3"),
        description="SQLite database file (the embedded default; unused when database_url is set)",
    )
    database_url: str | None = Field(
        None,
        description="postgresql://USER@HOST[:PORT]/DBNAME: store in PostgreSQL instead of the SQLite file db",
    )
    database_password_file: Path | None = Field(
        None, description="file holding the PostgreSQL password (first line); $CREDENTIALS_DIRECTORY if relative"
    )
    broker: BrokerURLStr = Field("mqtt://127.0.0.1:1883", description="mqtt://HOST[:PORT] or mqtts://HOST[:PORT]")
    topic_prefix: TopicPrefixStr = Field("coop/v1", description="topics are PREFIX/SOCIETY/BRANCH/DEVICE/...")
    client_id: str = Field(
        "coop-receiver",
        min_length=1,
        max_length=128,
        description="MQTT client id; fixed so the broker keeps the session across restarts",
    )
    shared_group: str | None = Field(
        None,
        description=(
            "MQTT 5 shared subscription group: receivers with the same group share the batch and media "
            "topics ($share/GROUP/...), each with its own client_id; unset: this receiver takes them all"
        ),
    )
    key_file: Path = Field(
        Path("/etc/coop-receiver/central_key.pem"),
        description="the central Ed25519 private key (PKCS#8 PEM, mode 0600)",
    )
    media_dir: Path = Field(Path("/var/lib/coop-receiver/media"), description="verified clips and snapshots")
    devices_dir: Path | None = Field(None, description="folder of SOCIETY.BRANCH.DEVICE[.anything].pem public keys")
    devices_rescan_s: Annotated[
        float, Field(ge=0, le=3600, description="rescan devices_dir at most this often when an unknown device speaks")
    ] = 10.0
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate (mqtts)")
    cert_file: Path | None = Field(None, description="client certificate for the broker (mqtts)")
    client_key_file: Path | None = Field(None, description="private key of cert_file (not the central key)")
    username: str | None = Field(None, description="broker user name")
    password_file: Path | None = Field(None, description="file holding the broker password (first line)")
    keepalive_s: Annotated[int, Field(ge=5, le=3600, description="MQTT keepalive")] = 30
    session_expiry_s: Annotated[
        int,
        Field(ge=60, le=30 * 86400, description="how long the broker keeps our session while we are down"),
    ] = 7 * 86400
    receive_maximum: Annotated[
        int, Field(ge=1, le=65535, description="QoS 1 messages the broker may have in flight to us")
    ] = 200
    max_payload_bytes: Annotated[
        int, Field(ge=4096, le=16 * 1024 * 1024, description="larger MQTT payloads are rejected")
    ] = SPEC_MAX_PAYLOAD
    resend_interval_s: Annotated[
        float, Field(gt=0, le=3600, description="at most one resend command per device this often")
    ] = 5.0
    max_pending_batches: Annotated[
        int, Field(ge=1, le=1_000_000, description="batches held per device while a gap is open")
    ] = 10_000
    media_idle_s: Annotated[
        float, Field(gt=0, le=3600, description="ask for missing chunks after this long without one")
    ] = 5.0
    media_retry_max_s: Annotated[
        float, Field(gt=0, le=86400, description="cap of the backoff between missing-chunk asks")
    ] = 300.0
    max_early_media_mb: Annotated[
        int, Field(ge=1, le=1_000_000, description="per device: chunks kept on disk before their manifest")
    ] = 256
    command_timeout_s: Annotated[
        float, Field(gt=0, le=600, description="wait this long for the broker to accept a command")
    ] = 10.0
    max_rejections_per_device: Annotated[
        int, Field(ge=100, le=10_000_000, description="older rejections are pruned past this")
    ] = 100_000
    log_level: Literal["debug", "info", "warning", "error"] = "info"
    metrics_port: Annotated[
        int | None, Field(ge=1, le=65535, description="serve Prometheus metrics on 127.0.0.1:PORT (unset: off)")
    ] = None
    metrics_refresh_s: Annotated[
        float, Field(ge=1, le=3600, description="read the per branch state for the metrics this often")
    ] = 15.0
    metrics_max_branches: Annotated[
        int, Field(ge=0, le=1_000_000, description="branches with their own series; the rest only per society")
    ] = 2000
    key_rotation: Literal["announced", "registered"] = Field(
        "announced",
        description="a device's key_rotated record is enough (announced), or its new key must also be "
        "registered first with `coop-receiver device rotate` (registered)",
    )

    @field_validator("shared_group")
    @classmethod
    def _shared_group(cls, v: str | None) -> str | None:
        if v is not None and not SHARED_GROUP_RE.match(v):
            raise ValueError(
                "must be 1-64 characters of letters, digits, '_' and '-' (it is a topic level of "
                "$share/GROUP/...: no '/', '+', '#')"
            )
        return v

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, v: str | None) -> str | None:
        return None if v is None else check_database_url(v)

    def database_password(self) -> str | None:
        return None if self.database_password_file is None else read_secret(self.database_password_file)

    @model_validator(mode="after")
    def _pairs(self) -> ReceiverSection:
        if (self.cert_file is None) != (self.client_key_file is None):
            raise ValueError("cert_file and client_key_file go together (client certificate authentication)")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if (self.ca_file or self.cert_file) and not self.tls:
            raise ValueError("ca_file/cert_file need an mqtts:// broker URL")
        if self.shared_group is not None and self.session_expiry_s > SHARED_SESSION_MAX_S:
            raise ValueError(
                f"with shared_group, session_expiry_s must be at most {SHARED_SESSION_MAX_S} (it is "
                f"{self.session_expiry_s}): the broker keeps dealing a stopped receiver's share of the "
                "batches into its session until that expires, and the agents must resend them"
            )
        if self.database_password_file is not None and self.database_url is None:
            raise ValueError("database_password_file needs database_url (the SQLite file db has no password)")
        return self


class DeviceEntry(Section):
    id: str = Field(description="SOCIETY/BRANCH/DEVICE")
    public_key: list[Path] = Field(description="the device's Ed25519 public key PEM (or a list, while keys rotate)")

    @field_validator("id")
    @classmethod
    def _id(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError(DEVICE_RULE)
        return v

    @field_validator("public_key", mode="before")
    @classmethod
    def _one_or_many(cls, v: Any) -> Any:
        if isinstance(v, (str, Path)):
            return [v]
        if isinstance(v, list) and not v:
            raise ValueError("needs at least one key file")
        return v


class ReceiverConfig(Section):
    receiver: ReceiverSection = Field(default_factory=ReceiverSection)
    retention: RetentionSection = Field(default_factory=RetentionSection)
    web: WebSection = Field(default_factory=WebSection)  # the evidence view (receiver/web/)
    devices: list[DeviceEntry] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> ReceiverConfig:
        seen: set[str] = set()
        for d in self.devices:
            if d.id in seen:
                raise ValueError(
                    f"[[devices]] id {d.id!r} is listed twice; list each device once "
                    "(several keys go in one public_key list)"
                )
            seen.add(d.id)
        return self

    def resolved(self, base: Path) -> ReceiverConfig:
        """A copy whose relative paths are taken relative to `base` (the config file's folder)."""

        def fix(p: Path | None) -> Path | None:
            return p if p is None or p.is_absolute() else base / p

        r = self.receiver.model_copy(
            update={
                name: fix(getattr(self.receiver, name))
                for name in (
                    "db",
                    "key_file",
                    "media_dir",
                    "devices_dir",
                    "ca_file",
                    "cert_file",
                    "client_key_file",
                    "password_file",
                    "database_password_file",
                )
            }
        )
        devs = [d.model_copy(update={"public_key": [fix(p) for p in d.public_key]}) for d in self.devices]
        web = self.web.model_copy(update={"db": fix(self.web.db)})
        return self.model_copy(update={"receiver": r, "devices": devs, "web": web})


def parse_receiver_config(data: dict[str, Any], path: Path | None = None) -> ReceiverConfig:
    try:
        cfg = ReceiverConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(ReceiverConfig, exc, path) from None
    return cfg.resolved(path.parent.resolve()) if path is not None else cfg


def load_receiver_config(path: Path | str | None) -> ReceiverConfig:
    """Load the file; None gives the embedded defaults (paths under /var/lib and /etc)."""
    if path is None:
        return ReceiverConfig()
    path = Path(path)
    data = read_toml(path)
    return parse_receiver_config(data, path)

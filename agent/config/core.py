"""Config of the agent's own core: identity, uplink, local API, buffer, media, supervisor, clock."""

from __future__ import annotations

import ipaddress
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.config.base import BrokerUrl, BrokerURLStr, Section, TopicPrefixStr

DEVICE_PART = r"[a-z0-9][a-z0-9-]{0,31}"
DEVICE_RE = re.compile(rf"^{DEVICE_PART}/{DEVICE_PART}/{DEVICE_PART}$")
SPEC_MAX_PAYLOAD = 256 * 1024


def auto_workers(cpus: int, memory_bytes: int) -> int:
    """`[api] workers = "auto"`. Measured on 2 cores (docs/benchmarks.md, ingest): one worker
    beats the agent's own process at one record a POST (3.7-5.1k/s against 2.2-2.9k/s) and
    two do no better than one, because they and the writer then share two cores; past two
    workers the writer's ~100 us a request is the limit wherever they run. Each worker costs
    about 40 MB, and a single core gains nothing from a second process."""
    if cpus < 2 or memory_bytes < 2 * 2**30:
        return 0
    return min(2, cpus // 2)


class AgentSection(Section):
    """Who this agent is and where it keeps its state."""

    device: str = Field("demo-society/branch-1/agent-1",
                        description="SOCIETY/BRANCH/DEVICE, each part [a-z0-9][a-z0-9-]{0,31}")
    data_dir: Path = Field(Path("/var/lib/coopagent"), description="SQLite buffer, media and the device key")
    key_file: Path | None = Field(None, description="device key; default data_dir/device_key.pem")
    log_level: Literal["debug", "info", "warning", "error"] = Field("info", description="log verbosity (journal)")

    @field_validator("device")
    @classmethod
    def _device(cls, v: str) -> str:
        if not DEVICE_RE.match(v):
            raise ValueError("must be SOCIETY/BRANCH/DEVICE, each part matching [a-z0-9][a-z0-9-]{0,31} "
                             "(lower case letters, digits and '-', at most 32 characters)")
        return v

    @property
    def key_path(self) -> Path:
        return self.key_file if self.key_file is not None else self.data_dir / "device_key.pem"


class UplinkSection(BrokerUrl, Section):
    """The MQTT link to the centre (spec uplink-v1): broker, TLS or password, window, timers."""

    broker: BrokerURLStr = Field("mqtt://127.0.0.1:1883", description="mqtt://host:port or mqtts://host:port (TLS)")
    topic_prefix: TopicPrefixStr = Field("coop/v1", description="topics are PREFIX/SOCIETY/BRANCH/DEVICE/...")
    central_key: Path = Field(Path("/etc/coopagent/central.pub.pem"),
                              description="central server's Ed25519 public key (PEM)")
    ca_file: Path | None = Field(None, description="CA bundle that signed the broker's certificate (mqtts)")
    cert_file: Path | None = Field(None, description="client certificate for the broker (mqtts)")
    key_file: Path | None = Field(None, description="private key of cert_file (not the device signing key)")
    username: str | None = Field(None, description="broker user name")
    password_file: Path | None = Field(None, description="file holding the broker password; relative names are "
                                       "looked up in $CREDENTIALS_DIRECTORY")
    client_id: str | None = Field(None, description="default: coopagent-SOCIETY-BRANCH-DEVICE")
    keepalive_s: Annotated[int, Field(ge=5, le=3600, description="MQTT keepalive")] = 30
    session_expiry_s: Annotated[int, Field(ge=0, le=7 * 86400, description=(
        "MQTT 5 session expiry: how long the broker keeps acks and commands for us while we are away"))] = 86400
    inflight_window: Annotated[int, Field(ge=1, le=1000, description=(
        "batches published but not yet acked by the centre, at most"))] = 32
    max_payload_bytes: Annotated[int, Field(ge=4096, le=SPEC_MAX_PAYLOAD, description=(
        "cap on one MQTT payload (spec: 256 KiB); batches close early to stay under it"))] = SPEC_MAX_PAYLOAD
    backoff_min_s: Annotated[float, Field(gt=0, le=60, description="first reconnect/retry delay")] = 0.5
    backoff_max_s: Annotated[float, Field(gt=0, le=3600, description="reconnect/retry delay cap (jittered)")] = 60.0
    status_interval_s: Annotated[float, Field(ge=1, le=3600, description="retained status every ...")] = 60.0
    resend_after_s: Annotated[float, Field(ge=1, le=86400, description=(
        "no central ack this long while batches are out (all PUBACKed): resend from the lowest unacked seq; "
        "the wait doubles while acks stay away, up to 16x"))] = 30.0
    command_max_skew_s: Annotated[int, Field(ge=1, le=86400, description=(
        "a central command whose `at` is further than this from our clock is refused"))] = 300
    refusal_records_per_minute: Annotated[int, Field(ge=1, le=600, description=(
        "refused acks and commands recorded as device_events, per kind of refusal and minute (4 x this "
        "for all kinds); the rest are counted and summed up in one record per kind after the minute"))] = 10

    @model_validator(mode="after")
    def _tls(self) -> UplinkSection:
        if (self.cert_file is None) != (self.key_file is None):
            raise ValueError("cert_file and key_file go together (client certificate authentication)")
        if self.password_file is not None and self.username is None:
            raise ValueError("password_file needs username")
        if self.backoff_min_s > self.backoff_max_s:
            raise ValueError("backoff_min_s must not exceed backoff_max_s")
        return self


def _is_loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or 'localhost'; any other name is not (127.evil.example is a name)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


class ApiSection(Section):
    """The local ingest API for the branch POS/ERP (HTTP, bearer token, loopback)."""

    listen: str = Field("127.0.0.1:8470", description="HOST:PORT; loopback unless you know why not")
    token_file: Path = Field(Path("/etc/coopagent/api.token"), description="bearer token for the local API")
    max_body_bytes: Annotated[int, Field(ge=1024, le=64 * 1024 * 1024, description="413 above this")] = 4 * 1024 * 1024
    max_records_per_request: Annotated[int, Field(ge=1, le=100_000, description="413 above this")] = 5000
    head_timeout_s: Annotated[float, Field(gt=0, le=300, description=(
        "a request's line and headers must arrive within this many seconds of the connection "
        "opening or of the previous answer; else 408 and the connection is closed"))] = 10.0
    body_timeout_s: Annotated[float, Field(gt=0, le=3600, description=(
        "a request's body must arrive within this many seconds of its headers; else 408 and close"))] = 30.0
    keepalive_timeout_s: Annotated[int, Field(ge=1, le=300, description=(
        "an idle connection is closed this many seconds after its last answer"))] = 5
    max_header_bytes: Annotated[int, Field(ge=1024, le=1024 * 1024, description=(
        "request line and headers; 431 and close above this"))] = 16 * 1024
    max_connections: Annotated[int, Field(ge=16, le=65536, description=(
        "open connections per serving process (fewer if the descriptor limit is near); past it "
        "a new connection closes the oldest one that has no complete request"))] = 768
    allow_non_loopback: bool = Field(False, description="must be true to listen on a non-loopback address")
    workers: int | Literal["auto"] = Field("auto", description=(
        "processes that serve HTTP and validate and encode records for the agent's one writer; "
        "0 serves everything in the agent's own process; \"auto\" chooses from the machine: "
        "none with one core or under 2 GiB of memory, else one per two cores, at most 2"))

    @field_validator("workers", mode="before")
    @classmethod
    def _workers(cls, v: object) -> object:
        if v == "auto" or (isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= 64):
            return v
        raise ValueError('must be "auto" or a whole number from 0 to 64')

    @property
    def effective_workers(self) -> int:
        """The number of worker processes this machine gets (docs/api.md, "Worker processes")."""
        if self.workers != "auto":
            return self.workers
        return auto_workers(len(os.sched_getaffinity(0)), os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE"))

    @field_validator("listen")
    @classmethod
    def _listen(cls, v: str) -> str:
        host, sep, port = v.rpartition(":")
        if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError("must be HOST:PORT, e.g. 127.0.0.1:8470")
        return v

    @model_validator(mode="after")
    def _loopback(self) -> ApiSection:
        host = self.host
        if not self.allow_non_loopback and not _is_loopback(host):
            raise ValueError(f"listen host {host!r} is not loopback; the ingest API is for the branch PC only "
                             "(set allow_non_loopback = true to override)")
        return self

    @property
    def host(self) -> str:
        return self.listen.rpartition(":")[0].strip("[]")

    @property
    def port(self) -> int:
        return int(self.listen.rpartition(":")[2])


class BufferSection(Section):
    """The SQLite buffer and how records are sealed into batches."""

    batch_max_records: Annotated[int, Field(ge=1, le=100_000, description="seal a batch at this many records")] = 500
    batch_max_age_s: Annotated[float, Field(gt=0, le=3600, description=(
        "seal when the oldest unsealed record is this old"))] = 2.0
    batch_min_age_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        0.1, description="seal this early while the uplink is connected and idle; 0 = always wait batch_max_age_s")
    max_db_mb: Annotated[int, Field(ge=0)] = Field(0, description="cap on the SQLite file; 0 = until the disk is full")
    retention_hours: Annotated[float, Field(ge=0)] = Field(168, description="keep centrally acked batches this long")

    @field_validator("max_db_mb")
    @classmethod
    def _min_db(cls, v: int) -> int:
        if 0 < v < 8:
            raise ValueError("must be 0 (no cap) or at least 8 MiB: a few batches must always fit for sealing")
        return v


class MediaSection(Section):
    """Clips and snapshots on disk and on their way to the centre."""

    dir: Path | None = Field(None, description="default data_dir/media")
    chunk_bytes: Annotated[int, Field(ge=1024, le=250 * 1024, description="media chunk size on the wire")] = 128 * 1024
    bandwidth_kbps: Annotated[int, Field(ge=0)] = Field(0, description="cap on media upload; 0 = no cap")
    quota_mb: Annotated[int, Field(ge=1)] = 2048


class SupervisorSection(Section):
    """Restarting crashed components."""

    max_restarts: Annotated[int, Field(ge=1, le=1000,
                                       description="crashes per window before a component is down")] = 5
    restart_window_s: Annotated[float, Field(gt=0, description="the window, and the cool-down once down")] = 60.0
    backoff_max_s: Annotated[float, Field(gt=0, description="cap on the delay between restarts")] = 30.0


class ClockSection(Section):
    """Watching the system clock (NTP sync, jumps)."""

    jump_threshold_s: Annotated[float, Field(gt=0, description="a wall-clock step this big is a clock_jump")] = 2.0
    check_interval_s: Annotated[float, Field(gt=0, description="how often the clock is checked")] = 5.0


class StatusPageSection(Section):
    """The technician's status page, GET /page on the API's listener (docs/operations.md)."""

    enabled: bool = Field(True, description="serve the page and its data under /page (always behind the API token)")
    allow_lan: bool = Field(False, description=(
        "serve it to non-loopback clients too; needs [api] allow_non_loopback and a LAN [api] listen; "
        "false answers them 404 even when the API itself is open to the LAN"))
    doctor_every_min: Annotated[int, Field(ge=0, le=1440, description=(
        "also run the doctor's checks for the page this often (minutes); 0: only when a page is "
        "first opened and on its button (a run connects to the broker and probes the devices)"))] = 0
    history_hours: Annotated[int, Field(ge=1, le=168, description=(
        "hours of backlog and acked seq kept in memory for the chart (one sample a minute)"))] = 24

"""Config models of cameras, recording and clip rules (owned by the camera drivers).

The agent's top-level config imports CameraConfig, RecordingConfig and ClipRuleConfig as
`[[cameras]]`, `[recording]` and `[[clip_rules]]`. Credentials are never in a URL: a camera
names a `username` and a `password_file` (absolute, or relative to systemd's
$CREDENTIALS_DIRECTORY), so the TOML can be shown to anyone.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import Field, field_validator, model_validator

from core.config.base import Section
from drivers.camera.secrets import scrub
from wire.kinds import KINDS

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
HOURS_RE = re.compile(r"^([01]\d|2[0-3]):[0-5]\d-([01]\d|2[0-3]):[0-5]\d$")
# What a clip rule may watch: every kind but media (a clip's own manifest: a rule on it would
# clip its own clips) and gap (the buffer giving something up is nothing a camera can show).
RULE_KINDS = tuple(k for k in KINDS if k not in ("media", "gap"))
if TYPE_CHECKING:
    RuleKind = str
else:
    RuleKind = Literal[RULE_KINDS]  # from wire.kinds, so config checks and REFERENCE.md follow the table


def _check_rtsp(v: str | None) -> str | None:
    if v is None:
        return v
    u = urlsplit(v)
    if u.scheme not in ("rtsp", "rtsps") or not u.hostname:
        raise ValueError("must be rtsp://HOST[:PORT]/PATH or rtsps://...")
    if u.username or u.password:
        # Said without echoing the URL back: it holds a password.
        raise ValueError("put no credentials in the URL; use username and password_file")
    return v


class OnvifConfig(Section):
    host: str = Field(description="camera address; followed by serial number when DHCP moves it")
    port: Annotated[int, Field(ge=1, le=65535)] = Field(80, description="ONVIF device service port")
    serial: str | None = Field(None, description="expected serial number; enables re-discovery by serial")
    main_profile: Annotated[int, Field(ge=0, le=31)] = Field(0, description="index in GetProfiles for recording")
    sub_profile: Annotated[int, Field(ge=0, le=31)] | None = Field(
        None, description="index in GetProfiles for frame grabbing; default the last profile"
    )
    timeout_s: Annotated[float, Field(gt=0, le=60)] = Field(5.0, description="per ONVIF request")


class TamperConfig(Section):
    enabled: bool = True
    dark_level: Annotated[float, Field(ge=0, le=255)] = Field(
        25.0, description="mean grey level below which the view counts as dark or covered"
    )
    min_contrast: Annotated[float, Field(ge=0, le=128)] = Field(
        6.0, description="grey standard deviation below which the view counts as covered (uniform)"
    )
    blur_ratio: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.25, description="sharpness (Laplacian variance) below this share of the reference = out of focus"
    )
    moved_ratio: Annotated[float, Field(gt=0, lt=1)] = Field(
        0.5, description="edge overlap with the reference below this = the scene moved"
    )
    hold_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        3.0, description="a condition must last this long before a tamper event (no flapping)"
    )
    learn_s: Annotated[float, Field(ge=0, le=3600)] = Field(
        2.0, description="seconds of good frames that make the reference picture"
    )


class MotionConfig(Section):
    enabled: bool = False
    hours: str = Field("20:00-07:00", description="local HH:MM-HH:MM when motion makes a clip (after closing)")
    threshold: Annotated[float, Field(gt=0, le=1)] = Field(
        0.02, description="share of changed pixels that counts as motion"
    )
    clip_s: Annotated[float, Field(ge=1, le=600)] = Field(20.0, description="clip length after motion")
    cooldown_s: Annotated[float, Field(ge=0, le=3600)] = Field(60.0, description="no new motion clip before")

    @field_validator("hours")
    @classmethod
    def _hours(cls, v: str) -> str:
        if not HOURS_RE.match(v):
            raise ValueError("must be HH:MM-HH:MM in 24 h local time, e.g. 20:00-07:00")
        return v


class CameraConfig(Section):
    name: str = Field(description="camera id used in records and media, [a-z0-9][a-z0-9_-]{0,31}")
    url: str | None = Field(None, description="main stream rtsp:// URL (plain RTSP, no ONVIF needed)")
    sub_url: str | None = Field(None, description="sub stream for frames; default the main stream")
    onvif: OnvifConfig | None = Field(None, description="ask the camera for its stream URIs instead of url")
    username: str | None = None
    password_file: Path | None = Field(None, description="file with the password; relative = $CREDENTIALS_DIRECTORY")
    transport: Literal["tcp", "udp"] = Field("tcp", description="RTSP transport; tcp survives NAT and loss")
    record: bool = Field(True, description="keep a continuous ring of the main stream")
    grab_fps: Annotated[float, Field(gt=0, le=30)] = Field(2.0, description="frames judged per second")
    stale_after_s: Annotated[float, Field(ge=1, le=300)] = Field(
        5.0, description="no frame for this long = offline (read timeout and watchdog)"
    )
    reconnect_max_s: Annotated[float, Field(ge=1, le=3600)] = Field(30.0, description="backoff ceiling")
    snapshot_main: bool = Field(
        True,
        description="a commanded snapshot grabs one full-resolution frame from the main stream "
        "(falls back to the newest sub-stream frame); periodic snapshots always use the sub stream",
    )
    snapshot_interval_s: Annotated[float, Field(ge=0, le=86400)] = Field(
        0.0, description="periodic snapshots uploaded as media; 0 = off"
    )
    clock_drift_s: Annotated[float, Field(gt=0, le=86400)] = Field(
        5.0, description="ONVIF camera clock further than this from ours = device_event clock_drift"
    )
    onvif_poll_s: Annotated[float, Field(ge=10, le=86400)] = Field(600.0, description="ONVIF re-check period")
    tamper: TamperConfig = Field(default_factory=lambda: TamperConfig.model_validate({}))
    motion: MotionConfig = Field(default_factory=lambda: MotionConfig.model_validate({}))

    @model_validator(mode="before")
    @classmethod
    def _hide_url_credentials(cls, data: Any) -> Any:
        """A URL with user:pass@ is refused below; scrub it first, because config errors echo the
        bad value (`cameras[0].url = '...'`) to the terminal and the journal."""
        if isinstance(data, dict):
            for key in ("url", "sub_url"):
                v = data.get(key)
                if isinstance(v, str) and "@" in v:
                    data = {**data, key: scrub(v)}
        return data

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError("must match [a-z0-9][a-z0-9_-]{0,31} (it becomes part of file names)")
        return v

    @field_validator("url", "sub_url")
    @classmethod
    def _urls(cls, v: str | None) -> str | None:
        return _check_rtsp(v)

    @model_validator(mode="after")
    def _source(self) -> CameraConfig:
        if (self.url is None) == (self.onvif is None):
            raise ValueError(f"camera {self.name!r}: give exactly one of url (plain RTSP) or [onvif]")
        if self.password_file is not None and self.username is None:
            raise ValueError(f"camera {self.name!r}: password_file needs username")
        return self


class RecordingConfig(Section):
    dir: Path | None = Field(None, description="ring of segments; default data_dir/recordings")
    segment_s: Annotated[float, Field(ge=1, le=60)] = Field(
        1.0,
        description="target segment length; segments start at keyframes, so with segment_s <= the "
        "camera's GOP each segment is one GOP and a clip starts at the keyframe before its start",
    )
    ring_minutes: Annotated[float, Field(ge=1, le=7 * 24 * 60)] = Field(60.0, description="per camera")
    ring_mb: Annotated[int, Field(ge=16, le=1_000_000)] = Field(2048, description="per camera")
    clip_max_s: Annotated[float, Field(ge=1, le=3600)] = Field(600.0, description="longest clip cut")
    io_timeout_s: Annotated[float, Field(ge=1, le=120)] = Field(
        5.0, description="ffmpeg gives up on a silent stream after this (then restarts with backoff)"
    )
    processes: Literal["per-camera", "shared"] = Field(
        "per-camera",
        description="per-camera: one ffmpeg per camera (a failure stays with its camera); shared: one "
        "ffmpeg records every healthy camera (44 MB instead of 116 MB for 8 cameras) and a camera that "
        "stops delivering leaves it for its own ffmpeg until the agent restarts (each such eviction "
        "restarts the shared ffmpeg: a gap of about 8 s on the other cameras)",
    )
    ffmpeg: str = Field("ffmpeg", description="ffmpeg executable")
    ffprobe: str = Field("ffprobe", description="ffprobe executable")


class ClipRuleConfig(Section):
    name: str = Field("rule", description="named in the clip's reason")
    kind: RuleKind = Field(
        description="record kind the rule looks at"
    )
    match: dict[str, Any] = Field(
        default_factory=dict,
        description="data keys that must match: a value = equal, a list = any of, true = present and truthy",
    )
    src: str | None = Field(None, description="record src must equal this (e.g. 'api:pos-3'); none = any")
    camera: str = Field(description="camera name to clip")
    pre_s: Annotated[float, Field(ge=0, le=600)] = Field(10.0, description="seconds before the record's time")
    post_s: Annotated[float, Field(ge=0, le=600)] = Field(10.0, description="seconds after it")

    @field_validator("match")
    @classmethod
    def _match(cls, v: dict[str, Any]) -> dict[str, Any]:
        for key, want in v.items():
            if isinstance(want, dict):
                raise ValueError(f"match.{key}: give a value, a list of values or true, not a table")
        return v


def check_rules(config: Any) -> None:
    """Clip rules must name recorded cameras; said at start, not when the first waste is booked."""
    recorded = {c.name for c in config.cameras if c.record}
    for i, rule in enumerate(config.clip_rules):
        if rule.camera not in recorded:
            raise ValueError(
                f"clip_rules[{i}].camera = {rule.camera!r}: no recorded camera of that name; "
                f"recorded cameras: {', '.join(sorted(recorded)) or 'none'}"
            )

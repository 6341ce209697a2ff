"""The `[web]` section of the receiver's config: where the evidence view listens and how long a login lasts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import Field

from core.config.base import Section


class WebSection(Section):
    listen: str = Field("127.0.0.1", min_length=1, description="address the web application listens on")
    port: Annotated[int, Field(ge=1, le=65535, description="its TCP port")] = 8480
    db: Path = Field(
        Path("/var/lib/coop-receiver/web.sqlite3"),
        description="SQLite file of accounts, sessions, access log and clip requests (with database_url: "
        "those tables live in the PostgreSQL database instead)",
    )
    session_idle_minutes: Annotated[
        int, Field(ge=1, le=24 * 60, description="a session ends after this long without a request")
    ] = 30
    session_max_hours: Annotated[
        int, Field(ge=1, le=7 * 24, description="and at the latest this long after the login")
    ] = 12
    secure_cookies: bool = Field(
        False, description="mark cookies Secure: set true when a TLS proxy serves the application"
    )
    exporter_name: str = Field(
        "control centre", min_length=1, max_length=200, description="who exports, as written in signed bundles"
    )
    silent_minutes: Annotated[
        int, Field(ge=1, le=7 * 24 * 60, description="compliance: a branch is silent after this long without a batch")
    ] = 15
    late_minutes: Annotated[
        int,
        Field(ge=1, le=7 * 24 * 60, description="compliance: a batch is late when received this long after sealing"),
    ] = 10
    clock_off_ms: Annotated[
        int, Field(ge=1, le=86_400_000, description="compliance: a device clock this far from the centre's is off")
    ] = 2000
    stocktake_open_hours: Annotated[
        int, Field(ge=1, le=24 * 365, description="compliance: a stock-take open longer than this is flagged")
    ] = 24
    clip_window_s: Annotated[
        int, Field(ge=1, le=3600, description="a record's page shows clips and gaps within this many seconds of it")
    ] = 120

"""What the checks read: the config, the running agent's status (GET /v1/status), the buffer read-only."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import httpx

from agent.config import AgentConfig
from core.config.base import read_secret


@dataclass
class Context:
    cfg: AgentConfig
    status: Mapping[str, Any] | None = None
    status_reason: str = ""
    extra: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def gather(cls, cfg: AgentConfig, timeout_s: float = 3.0) -> Context:
        """Ask the running agent for its status; when it does not answer, say why."""
        try:
            token = read_secret(cfg.api.token_file)
        except ValueError as exc:
            return cls(cfg, None, f"the API token cannot be read ({exc})")
        try:
            r = httpx.get(f"http://{cfg.api.listen}/v1/status", headers={"Authorization": f"Bearer {token}"},
                          timeout=timeout_s)
        except httpx.HTTPError as exc:
            return cls(cfg, None, f"the agent is not running (nothing answers at {cfg.api.listen}: {exc})")
        if r.status_code != 200:
            return cls(cfg, None, f"the agent's API answered {r.status_code}")
        try:
            return cls(cfg, r.json(), "")
        except ValueError:
            return cls(cfg, None, "the agent's API answered something that is not JSON")


@contextmanager
def buffer_ro(cfg: AgentConfig) -> Iterator[sqlite3.Connection | None]:
    """The buffer file opened read-only (None if it does not exist yet); safe beside the running agent (WAL)."""
    db = cfg.db_path
    if not db.exists():
        yield None
        return
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=5)
    try:
        yield conn
    finally:
        conn.close()

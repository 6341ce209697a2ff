"""What the checks read: the config, the running agent's status (GET /v1/status), the buffer read-only."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import cbor2
import httpx

from agent.config import AgentConfig
from core.config.base import read_secret
from wire.cose import decode_unverified


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


    def recent_records(self, kinds: tuple[str, ...], minutes: int) -> list[Mapping[str, Any]]:
        """From the buffer: unsealed bodies, and sealed ones out of their batches (not yet forgotten)."""
        since = int(time.time() * 1000) - minutes * 60_000
        out: list[Mapping[str, Any]] = []
        marks = ",".join("?" * len(kinds))
        with buffer_ro(self.cfg) as conn:
            if conn is None:
                return out
            rows = conn.execute(f"SELECT body, seq FROM records WHERE at >= ? AND kind IN ({marks}) "  # noqa: S608
                                "ORDER BY rowid", (since, *kinds)).fetchall()
            batches: dict[int, dict[str, Mapping[str, Any]]] = {}
            for body, seq in rows:
                if body is not None:
                    out.append(cbor2.loads(body))
                elif seq is not None:
                    if seq not in batches:
                        found = conn.execute("SELECT cose FROM batches WHERE seq = ?", (seq,)).fetchone()
                        recs = cbor2.loads(decode_unverified(found[0])[2])["records"] if found else []
                        batches[seq] = {r["id"]: r for r in recs}
                    out.extend(r for r in batches[seq].values() if r["kind"] in kinds and r["at"] >= since)
                    batches[seq] = {}  # each batch once
        return sorted(out, key=lambda r: int(r["at"]))


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

"""Retention of records and media by policy (`[retention]`), never deleting what evidence still needs.

What goes, and when (docs/receiver.md, "Retention"):

* Records: a record's content lives in its batch's signed bytes, so retention works per
  batch. A batch's bytes are dropped once every kind in it is past its days (`kinds`, or
  `default_days` for kinds not listed; a kind with no limit keeps its batches for ever),
  counted from the batch's `sealed` time. Its row stays with seq and hash (`cose` empty),
  so the chain's hash list stays whole and a resend of it is still recognised.
* The record index: SQLite keeps every index row (its UNIQUE (did, id) is the spec's
  "unique per device for ever"). PostgreSQL drops whole month partitions of `records` whose
  every batch has been dropped (record_keys keeps the ids); no row-by-row DELETE.
* Media (complete files) older than `media_days` (by the footage's `end`) are deleted and
  the row marked `expired`, unless evidence still needs them.

Evidence needs a media item ("needed") when any of these holds:
  1. an operator holds it (`coop-receiver media hold`), until released;
  2. the centre asked for it (its manifest's `reason` names a `command`: a clip or snapshot
     command), kept `evidence_media_days` (unset: for ever);
  3. it documents a record (its `reason` names a `record`: a camera rule filmed that record,
     e.g. a void or a tamper event), kept `evidence_media_days` (unset: for ever);
  4. its manifest cannot be read any more (conservative: kept).
A batch that announces a media item still on disk is never dropped (its manifest is the
item's proof), and neither are held batches, pending ones or chain-break evidence.

The receiver's worker runs it (the one writer), every `run_every_s`, at most `batch_limit`
batches per transaction; `coop-receiver retention run [--dry-run]` runs it on demand.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import cbor2
from pydantic import Field, field_validator

from core.config.base import Section
from receiver.database import Database
from wire.kinds import KIND_SET, KINDS

log = logging.getLogger(__name__)

DAY_MS = 86_400_000
RETENTION_LOCK = 0x636F_6F72  # pg_try_advisory_xact_lock: one receiver at a time does it


class RetentionSection(Section):
    enabled: bool = Field(False, description="delete by the policy below (off: nothing is ever deleted)")
    default_days: Annotated[
        int | None, Field(ge=1, description="days a kind not in `kinds` is kept (unset: for ever)")
    ] = None
    kinds: dict[str, Annotated[int, Field(ge=1)]] = Field(
        default_factory=dict, description="days per record kind, e.g. {sale = 3650, scan = 90}"
    )
    media_days: Annotated[
        int | None, Field(ge=1, description="days a clip or snapshot is kept (unset: for ever)")
    ] = None
    evidence_media_days: Annotated[
        int | None, Field(ge=1, description="days media that evidence needs is kept (unset: for ever)")
    ] = None
    run_every_s: Annotated[float, Field(ge=60, le=7 * 86400, description="how often the receiver applies it")] = 3600.0
    batch_limit: Annotated[
        int, Field(ge=1, le=100_000, description="batches judged per transaction (the worker waits meanwhile)")
    ] = 500

    @field_validator("kinds")
    @classmethod
    def _kinds(cls, v: dict[str, int]) -> dict[str, int]:
        bad = sorted(set(v) - KIND_SET)
        if bad:
            raise ValueError(f"unknown record kind {bad[0]!r}; the kinds are {', '.join(KINDS)}")
        return v

    def days(self, kind: str) -> int | None:
        return self.kinds.get(kind, self.default_days)


@dataclass
class Report:
    batches: int = 0
    media: int = 0
    media_bytes: int = 0
    partitions: list[str] = field(default_factory=list)
    kept_media: dict[str, int] = field(default_factory=dict)  # why needed -> how many
    more: bool = False  # batch_limit reached: run again soon

    def as_json(self) -> dict[str, Any]:
        return {
            "batches": self.batches,
            "media": self.media,
            "media_bytes": self.media_bytes,
            "partitions": self.partitions,
            "kept_media": self.kept_media,
            "more": self.more,
        }


def _reason(cose: bytes, record_id: str) -> dict[str, Any] | None:
    """The `reason` map of the media record record_id in a stored batch, or None if it cannot be read."""
    if not cose:
        return None
    for rec in cbor2.loads(cbor2.loads(cose).value[2])["records"]:
        if rec.get("id") == record_id:
            reason = rec.get("data", {}).get("reason")
            return reason if isinstance(reason, dict) else None
    return None


def needed(
    held: bool, reason: dict[str, Any] | None, end_ms: int, now_ms: int, evidence_days: int | None
) -> str | None:
    """Why evidence still needs a media item (see the module doc), or None when it may go."""
    if held:
        return "held"
    if reason is None:
        return "manifest_unreadable"
    why = "requested" if "command" in reason else "record" if "record" in reason else None
    if why is None:
        return None
    if evidence_days is None or end_ms >= now_ms - evidence_days * DAY_MS:
        return why
    return None


class Retention:
    def __init__(self, policy: RetentionSection, media_dir: Path):
        self.policy = policy
        self.media_dir = media_dir
        self._next = 0.0

    def maybe_run(self, db: Database) -> Report | None:
        """From the worker: run when due (sooner when the last run stopped at batch_limit)."""
        if not self.policy.enabled or time.monotonic() < self._next:
            return None
        db.begin()
        try:
            if db.kind == "postgresql":
                got = db.execute("SELECT pg_try_advisory_xact_lock(?)", (RETENTION_LOCK,)).fetchone()[0]
                if not got:
                    db.rollback()
                    self._next = time.monotonic() + 60
                    return None
            report = self.run(db, int(time.time() * 1000), dry_run=False)
            db.commit()
        except BaseException:
            db.rollback()
            raise
        if db.kind == "postgresql":
            report.partitions = drop_partitions(db)
        self._next = time.monotonic() + (60 if report.more else self.policy.run_every_s)
        if report.batches or report.media or report.partitions:
            log.info("retention: %s", report.as_json())
        return report

    def run(self, db: Database, now_ms: int, *, dry_run: bool) -> Report:
        """Inside the caller's transaction: expire media first (it frees their batches), then batches.

        dry_run: the same changes in the database (the caller rolls them back), no file deleted.
        """
        report = Report()
        self._media(db, now_ms, dry_run, report)
        self._batches(db, now_ms, dry_run, report)
        return report

    def _media(self, db: Database, now_ms: int, dry_run: bool, report: Report) -> None:
        days = self.policy.media_days
        if days is None:
            return
        cutoff = now_ms - days * DAY_MS
        rows = db.execute(
            'SELECT m.did, m.media_id, m.record_id, m."end", m.size, m.path, b.cose, '
            "(SELECT count(*) FROM media_holds h WHERE h.did = m.did AND h.media_id = m.media_id) "
            "FROM media m LEFT JOIN batches b ON b.did = m.did AND b.seq = m.seq "
            "WHERE m.state = 'complete' AND m.\"end\" < ?",
            (cutoff,),
        ).fetchall()
        for did, media_id, record_id, end, size, path, cose, holds in rows:
            why = needed(bool(holds), _reason(bytes(cose or b""), record_id), end, now_ms,
                         self.policy.evidence_media_days)
            if why is not None:
                report.kept_media[why] = report.kept_media.get(why, 0) + 1
                continue
            report.media += 1
            report.media_bytes += int(size)
            # Also in a dry run (the caller rolls back): its batch may then go too, and the report says so.
            db.execute("UPDATE media SET state = 'expired', path = NULL WHERE did = ? AND media_id = ?",
                       (did, media_id))
            if path and not dry_run:
                Path(path).unlink(missing_ok=True)  # after the row: a crash leaves a file, never a dangling row

    def _batches(self, db: Database, now_ms: int, dry_run: bool, report: Report) -> None:
        limits = {k: self.policy.days(k) for k in KINDS}
        if all(d is None for d in limits.values()):
            return
        shortest = min(d for d in limits.values() if d is not None)
        cutoff = now_ms - shortest * DAY_MS
        # Oldest first; batches that announce media still kept are skipped in SQL.
        candidates = db.execute(
            "SELECT b.did, b.seq, b.sealed FROM batches b WHERE b.sealed < ? AND b.n_records > 0 "
            "AND b.cose <> ? AND NOT EXISTS (SELECT 1 FROM media m WHERE m.did = b.did AND m.seq = b.seq "
            "AND m.state <> 'expired') ORDER BY b.sealed LIMIT ?",
            (cutoff, b"", self.policy.batch_limit + 1),
        ).fetchall()
        if len(candidates) > self.policy.batch_limit:
            report.more = True
            candidates = candidates[: self.policy.batch_limit]
        drop: list[tuple[int, int]] = []
        for did, seq, sealed in candidates:
            # From the signed bytes, not the index: SQLite's index has no (did, seq) key, and the
            # PostgreSQL partition may be gone already.
            kinds = _kinds_in(db, did, seq)
            days = [limits.get(k) for k in kinds]
            if any(d is None for d in days):
                continue
            if sealed < now_ms - max(d for d in days if d is not None) * DAY_MS:
                drop.append((did, seq))
        report.batches = len(drop)
        if drop:
            db.executemany("UPDATE batches SET cose = ? WHERE did = ? AND seq = ?", [(b"", d, s) for d, s in drop])


def _kinds_in(db: Database, did: int, seq: int) -> list[str]:
    row = db.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq)).fetchone()
    if row is None or not row[0]:
        return []
    return sorted({r["kind"] for r in cbor2.loads(cbor2.loads(bytes(row[0])).value[2])["records"]})


def drop_partitions(db: Database) -> list[str]:
    """PostgreSQL: drop month partitions of `records` whose batches have all been dropped (each its own tx)."""
    dropped: list[str] = []
    parts = [
        r[0]
        for r in db.execute(
            "SELECT c.relname FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "JOIN pg_class p ON p.oid = i.inhparent WHERE p.relname = 'records' AND c.relname <> 'records_default' "
            "ORDER BY c.relname"
        )
    ]
    for name in parts:
        db.begin()
        try:
            live = db.execute(
                f"SELECT 1 FROM {name} r JOIN batches b ON b.did = r.did AND b.seq = r.seq "  # noqa: S608 - catalog name
                "WHERE octet_length(b.cose) > 0 LIMIT 1"
            ).fetchone()
            empty = db.execute(f"SELECT NOT EXISTS (SELECT 1 FROM {name})").fetchone()[0]  # noqa: S608
            if live is None and not empty:
                db.execute(f"DROP TABLE {name}")
                dropped.append(name)
            db.commit()
        except BaseException:
            db.rollback()
            raise
    return dropped

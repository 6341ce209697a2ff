"""`coop-receiver retention run` and `coop-receiver media hold|release` (receiver/retention.py)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import click

from receiver.cli import check_device, config_option, handle_errors, resolve
from receiver.database import Database, open_database
from receiver.retention import Retention, drop_partitions


def _writer(config_path: Path | None) -> tuple[Database, Retention]:
    cfg = resolve(config_path)
    db = open_database(cfg.receiver, writer=True)
    if db.kind == "sqlite":
        db.execute("PRAGMA wal_autocheckpoint = 0")  # a second writer never checkpoints (device_cli.py)
    return db, Retention(cfg.retention, cfg.receiver.media_dir)


@click.group("retention")
def retention() -> None:
    """Apply the [retention] policy now (the running receiver also does it every run_every_s)."""


@retention.command("run")
@config_option
@click.option("--dry-run", is_flag=True, help="say what would go; delete nothing")
@handle_errors
def run(config_path: Path | None, dry_run: bool) -> None:
    """Drop old batches' bytes and old media by the policy, keeping what evidence needs; prints a JSON report."""
    db, ret = _writer(config_path)
    try:
        if not ret.policy.enabled and not dry_run:
            raise ValueError("[retention] enabled = false: nothing is deleted (--dry-run shows what would go)")
        db.begin()
        try:
            report = ret.run(db, int(time.time() * 1000), dry_run=dry_run)
            if dry_run:
                db.rollback()
            else:
                db.commit()
        except BaseException:
            db.rollback()
            raise
        if db.kind == "postgresql" and not dry_run:
            report.partitions = drop_partitions(db)
    finally:
        db.close()
    click.echo(json.dumps({"dry_run": dry_run, **report.as_json()}, indent=2, sort_keys=True))


@click.group("media")
def media() -> None:
    """Hold media as evidence (retention never deletes a held item) and release it."""


def _did(db: Database, dev: str, media_id: str) -> int:
    row = db.execute(
        "SELECT m.did, m.state FROM media m JOIN devices d ON d.did = m.did WHERE d.dev = ? AND m.media_id = ?",
        (dev, media_id),
    ).fetchone()
    if row is None:
        raise ValueError(f"{dev} has no media {media_id!r}")
    if row[1] == "expired":
        raise ValueError(f"media {media_id!r} of {dev} has already expired: its file is gone")
    return int(row[0])


@media.command("hold")
@config_option
@click.argument("dev")
@click.argument("media_id")
@click.option("--reason", required=True, help="why it is evidence (a case number); kept with the hold")
@handle_errors
def hold(config_path: Path | None, dev: str, media_id: str, reason: str) -> None:
    """Keep DEV's MEDIA_ID whatever its age, until released."""
    db, _ = _writer(config_path)
    try:
        db.begin()
        try:
            did = _did(db, check_device(dev), media_id)
            db.execute(
                "INSERT INTO media_holds (did, media_id, reason, at) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (did, media_id) DO UPDATE SET reason = excluded.reason, at = excluded.at",
                (did, media_id, reason, int(time.time() * 1000)),
            )
            db.commit()
        except BaseException:
            db.rollback()
            raise
    finally:
        db.close()
    click.echo(f"{dev} {media_id}: held ({reason})")


@media.command("release")
@config_option
@click.argument("dev")
@click.argument("media_id")
@handle_errors
def release(config_path: Path | None, dev: str, media_id: str) -> None:
    """Release a hold: DEV's MEDIA_ID follows the retention policy again."""
    db, _ = _writer(config_path)
    try:
        db.begin()
        try:
            did = _did(db, check_device(dev), media_id)
            n = db.execute("DELETE FROM media_holds WHERE did = ? AND media_id = ?", (did, media_id)).rowcount
            db.commit()
        except BaseException:
            db.rollback()
            raise
    finally:
        db.close()
    click.echo(f"{dev} {media_id}: " + ("released" if n else "was not held"))

"""`coop-receiver device add|revoke|rotate|list`: the device registry at the centre (receiver/registry.py).

The commands write to the receiver's database in one short transaction; a running receiver
sees the change at its next group of messages (it polls the registry's generation). On
SQLite that makes this command a second writer for the length of that transaction: its
connection never checkpoints (wal_autocheckpoint = 0), so it cannot be the checkpointing
side of the WAL-reset race (docs/decisions.md).
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import click

from receiver import registry as regdb
from receiver.cli import check_device, config_option, handle_errors, resolve
from receiver.config import ReceiverConfig
from receiver.database import Database, open_database
from receiver.keys import DeviceRegistry
from wire.cose import kid_for
from wire.keys import load_public_key


@contextmanager
def registry_txn(cfg: ReceiverConfig) -> Iterator[tuple[Database, DeviceRegistry]]:
    """The database in one write transaction, with the registry (files and database) loaded inside it."""
    db = open_database(cfg.receiver, writer=True)
    try:
        if db.kind == "sqlite":
            db.execute("PRAGMA wal_autocheckpoint = 0")
        reg = DeviceRegistry(cfg)
        db.begin()
        try:
            reg.refresh(db, force=True)
            yield db, reg
            db.commit()
        except BaseException:
            db.rollback()
            raise
    finally:
        db.close()


def _when(ms: int | None) -> str:
    return "-" if ms is None else datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def _kid(value: str) -> bytes:
    try:
        kid = bytes.fromhex(value)
    except ValueError:
        kid = b""
    if len(kid) != 16:
        raise ValueError(f"KID = {value!r}: give the 32 hex digits that `coop-receiver device list` shows")
    return kid


@click.group("device")
def device() -> None:
    """Register, revoke and rotate devices' public keys (the registry in the database)."""


@device.command("add")
@config_option
@click.argument("dev")
@click.argument("public_key", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@click.option("--from-seq", type=click.IntRange(min=1), default=1, show_default=True,
              help="the first seq this key may sign")
@handle_errors
def add(config_path: Path | None, dev: str, public_key: Path, from_seq: int) -> None:
    """Register PUBLIC_KEY (PEM, from `coopagent keys show --pem`) for DEV."""
    key = load_public_key(public_key)
    with registry_txn(resolve(config_path)) as (db, reg):
        kid = kid_for(key)
        if kid in reg.entries(check_device(dev)):
            raise ValueError(f"kid {kid.hex()} is already registered for {dev}")
        e = regdb.add_key(db, dev, key, from_seq)
    click.echo(f"{dev}: kid {e.kid.hex()} registered, valid from seq {from_seq}")

@device.command("revoke")
@config_option
@click.argument("dev")
@click.argument("kid")
@click.option("--reason", default="revoked by the operator", show_default=True, help="kept in the registry log")
@handle_errors
def revoke(config_path: Path | None, dev: str, kid: str, reason: str) -> None:
    """Revoke KID (or `all`) of DEV: every batch it signs from now on is refused and recorded."""
    with registry_txn(resolve(config_path)) as (db, reg):
        entries = reg.entries(check_device(dev))
        if not entries:
            raise ValueError(f"{dev} has no registered key")
        targets = list(entries.values()) if kid == "all" else [entries.get(_kid(kid))]
        for e in targets:
            if e is None:
                raise ValueError(f"kid {kid} is not a key of {dev}; known: {', '.join(k.hex() for k in entries)}")
            if e.revoked_at is None:
                regdb.revoke(db, dev, e, reason)
                click.echo(f"{dev}: kid {e.kid.hex()} revoked")

@device.command("rotate")
@config_option
@click.argument("dev")
@click.argument("new_public_key", type=click.Path(path_type=Path, dir_okay=False, exists=True))
@handle_errors
def rotate(config_path: Path | None, dev: str, new_public_key: Path) -> None:
    """Register DEV's next key (from `coopagent keys rotate`); the chain's key_rotated record must name it."""
    key = load_public_key(new_public_key)
    with registry_txn(resolve(config_path)) as (db, reg):
        msg = regdb.register_rotation(db, check_device(dev), reg.entries(dev), key)
    click.echo(f"{dev}: {msg}")

@device.command("list")
@config_option
@click.argument("devices", nargs=-1)
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.option("--history", is_flag=True, help="also the registry log (adds, revocations, rotations)")
@handle_errors
def list_(config_path: Path | None, devices: tuple[str, ...], as_json: bool, history: bool) -> None:
    """Every device's keys: state (active, retired, revoked, awaiting rotation) and the seqs they sign."""
    cfg = resolve(config_path)
    db = open_database(cfg.receiver, writer=False)
    try:
        reg = DeviceRegistry(cfg)
        reg.refresh(db, force=True)
        devs = list(devices) or reg.devices()
        out = {
            d: {
                "keys": [e.as_json() for e in sorted(reg.entries(d).values(), key=_order)],
                **({"history": regdb.history(db, d)} if history else {}),
            }
            for d in devs
        }
    finally:
        db.close()
    if as_json:
        click.echo(json.dumps(out, indent=2, sort_keys=True))
        return
    for d, info in out.items():
        click.echo(d)
        for k in info["keys"]:
            seqs = f"seq {k['valid_from_seq'] or '?'}..{k['valid_to_seq'] or ''}"
            extra = f" revoked {_when(k['revoked_at'])}: {k['revoked_reason']}" if k["revoked_at"] else ""
            click.echo(f"  {k['kid']}  {k['state']:<17} {seqs:<16} ({k['origin']}){extra}")
        for h in info.get("history", []):
            kid = h["kid"] or ""
            click.echo(f"    {_when(h['at'])}  {h['action']:<17} seq {h['seq'] or '-'}  {kid}  {h['detail']}")



def _order(e: regdb.KeyEntry) -> tuple[int, str]:
    return (e.valid_from_seq or 1 << 62, e.kid.hex())

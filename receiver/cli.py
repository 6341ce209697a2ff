"""`coop-receiver`: keys, run, status, commands. Known errors print one line and exit 2."""

from __future__ import annotations

import json
import logging
import os
import signal
import threading
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click

from core.cli import user_errors
from receiver.branches import branch_state
from receiver.config import (
    DEFAULT_CONFIG_PATH,
    DEVICE_RE,
    DEVICE_RULE,
    ReceiverConfig,
    load_receiver_config,
)
from receiver.keys import DeviceRegistry, load_central_key
from receiver.mqtt import MqttError, publish_once
from receiver.status import render_status
from receiver.store import ReceiverStore, StoreMissing
from wire.cose import Signer, kid_for
from wire.keys import generate_key_file, public_pem, public_raw
from wire.messages import command
from wire.topics import device_topic

config_option = click.option(
    "--config",
    "config_path",
    type=click.Path(path_type=Path, dir_okay=False),
    default=None,
    help=f"receiver config (TOML); default {DEFAULT_CONFIG_PATH} if it exists, else the embedded defaults",
)


def resolve(config_path: Path | None) -> ReceiverConfig:
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    return load_receiver_config(config_path)


# Operator-fixable errors: one clear message on stderr, exit 2, no traceback (core.cli).
handle_errors = user_errors(StoreMissing, MqttError, ValueError)  # AccountError is a ValueError


def parse_time(value: str, name: str) -> int:
    """Epoch milliseconds, or ISO-8601 (a time without a zone is taken as UTC)."""
    if value.isdigit():
        return int(value)
    try:
        dt = datetime.fromisoformat(value)
    except ValueError:
        raise ValueError(
            f"--{name} = {value!r}: give epoch milliseconds or ISO-8601 (e.g. 2026-11-29T14:00:00Z)"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=UTC)
    return int(dt.timestamp() * 1000)


def check_device(dev: str) -> str:
    if not DEVICE_RE.match(dev):
        raise ValueError(f"DEVICE = {dev!r}: {DEVICE_RULE}")
    return dev


@click.group()
def cli() -> None:
    """Reference central receiver for uplink-v1: verifies, stores and acks branch agents' batches."""


@cli.group("keys")
def keys() -> None:
    """Make and show the central signing key."""


@keys.command("init")
@config_option
@click.option("--force", is_flag=True, help="replace an existing key (every agent must get the new public key)")
@handle_errors
def keys_init(config_path: Path | None, force: bool) -> None:
    """Create the central key (Ed25519, PKCS#8 PEM, mode 0600)."""
    path = resolve(config_path).receiver.key_file
    key = generate_key_file(path, force=force)
    click.echo(f"created {path} (mode 0600)")
    click.echo(f"kid {kid_for(key.public_key()).hex()}")


@keys.command("show")
@config_option
@click.option("--pem", is_flag=True, help="print only the public key PEM, for the agents' central_key")
@handle_errors
def keys_show(config_path: Path | None, pem: bool) -> None:
    """Print the central kid and public key (never the private key)."""
    pub = load_central_key(resolve(config_path).receiver.key_file).public_key()
    if pem:
        click.echo(public_pem(pub), nl=False)
        return
    click.echo(f"kid     {kid_for(pub).hex()}")
    click.echo(f"public  {public_raw(pub).hex()}")


@cli.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@config_option
@handle_errors
def config_check(config_path: Path | None) -> None:
    """Validate the config and print the effective values (secrets are files; only their names show)."""
    cfg = resolve(config_path)
    click.echo(json.dumps(cfg.model_dump(mode="json"), indent=2))


@cli.command("run")
@config_option
@handle_errors
def run(config_path: Path | None) -> None:
    """Run the receiver until SIGTERM or SIGINT."""
    from receiver import profiling
    from receiver.server import Receiver

    profiling.install("receiver")  # only with COOP_RECEIVER_PROFILE set (bench/bench_centre_cpu.py)

    cfg = resolve(config_path)
    logging.basicConfig(level=cfg.receiver.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    rx = Receiver(cfg).start()
    where = cfg.receiver.database_url or cfg.receiver.db
    click.echo(f"coop-receiver running; database {where}", err=True)
    try:
        while not stop.wait(1.0):
            pass
    finally:
        rx.stop()


@cli.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="machine-readable output")
@click.argument("devices", nargs=-1)
@handle_errors
def status(config_path: Path | None, as_json: bool, devices: tuple[str, ...]) -> None:
    """Per device: last seen, acked seq, backlog, chain, gaps, clock drift, last error, keys, media."""
    cfg = resolve(config_path)
    registry = DeviceRegistry(cfg)
    with ReceiverStore(cfg.receiver) as store:
        try:
            registry.refresh(store.conn, force=True)
        except store.conn.errors:  # a database the upgraded receiver has not migrated yet: files only
            pass
        devs = list(devices) or sorted(set(store.devices()) | set(registry.devices()) | set(store.rejecting_senders()))
        states = [branch_state(store, registry, d) for d in devs]
        health = store.health()
    if as_json:
        click.echo(json.dumps({"receivers": health, "devices": states}, indent=2, sort_keys=True))
    else:
        click.echo(render_status(states, health), nl=False)


def _send(cfg: ReceiverConfig, dev: str, cmd: str, args: dict[str, Any]) -> str:
    signer = Signer(load_central_key(cfg.receiver.key_file))
    cid, cose = command(signer, dev, cmd, args)
    r = cfg.receiver
    publish_once(
        r,
        device_topic(r.topic_prefix, dev, "cmd"),
        cose,
        f"{r.client_id}-cmd-{os.getpid()}",
        r.command_timeout_s,
    )
    return cid


@cli.command("send-command")
@config_option
@click.argument("device")
@click.argument("cmd", type=click.Choice(["resend", "ping", "snapshot", "clip"]))
@click.option("--args", "args_json", default="{}", help="command arguments as JSON, e.g. '{\"from_seq\": 5}'")
@handle_errors
def send_command(config_path: Path | None, device: str, cmd: str, args_json: str) -> None:
    """Sign and publish a command to DEVICE; prints the command id the agent's answer will name."""
    cfg = resolve(config_path)
    try:
        args = json.loads(args_json)
    except json.JSONDecodeError as exc:
        raise ValueError(f"--args is not JSON: {exc}") from None
    if not isinstance(args, dict):
        raise ValueError("--args must be a JSON object")
    click.echo(_send(cfg, check_device(device), cmd, args))


@cli.command("request-clip")
@config_option
@click.argument("device")
@click.argument("camera")
@click.option("--start", required=True, help="epoch ms or ISO-8601")
@click.option("--end", required=True, help="epoch ms or ISO-8601")
@handle_errors
def request_clip(config_path: Path | None, device: str, camera: str, start: str, end: str) -> None:
    """Ask DEVICE for a clip of CAMERA between --start and --end; prints the command id."""
    cfg = resolve(config_path)
    args = {"camera": camera, "start": parse_time(start, "start"), "end": parse_time(end, "end")}
    click.echo(_send(cfg, check_device(device), "clip", args))


def parse_record_ref(value: str) -> tuple[str, str]:
    """DEV:ID (SOCIETY/BRANCH/DEVICE:record id) as the export takes it."""
    dev, sep, rid = value.partition(":")
    if not sep or not rid:
        raise ValueError(f"--record = {value!r}: give DEVICE:RECORD_ID, e.g. soc-a/branch-1/till-1:0190a1b2-...")
    return check_device(dev), rid


@cli.command("export")
@config_option
@click.option("--record", "records", multiple=True, required=True, metavar="DEV:ID",
              help="a record to export (repeat); clips whose reason names it come with it")
@click.option("--out", "out_path", type=click.Path(path_type=Path, dir_okay=False), required=True,
              help="the bundle file to write (ZIP, docs/evidence-bundle-v1.md)")
@click.option("--exporter-name", default=None, help="who exports, as the manifest names it (default: this host)")
@click.option("--full-chain", is_flag=True,
              help="copy every batch between the records' batches, not only their hashes (larger; no record withheld)")
@handle_errors
def export(config_path: Path | None, records: tuple[str, ...], out_path: Path, exporter_name: str | None,
           full_chain: bool) -> None:
    """Export records as one evidence bundle signed by the centre; check it with coop-verify."""
    import socket

    from receiver.evidence.export import export_bundle
    from receiver.evidence.keys import lookup_for

    cfg = resolve(config_path)
    selection = [parse_record_ref(r) for r in records]
    signer = Signer(load_central_key(cfg.receiver.key_file))
    tmp = out_path.with_name(f".{out_path.name}.{os.getpid()}.tmp")
    try:
        with ReceiverStore(cfg.receiver) as store, tmp.open("wb") as out:
            summary = export_bundle(
                store.conn, cfg.receiver.media_dir, selection, signer, out,
                exporter_name=exporter_name or f"coop-receiver at {socket.gethostname()}",
                keys=lookup_for(cfg, store.conn), full_chain=full_chain,
            )
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    click.echo(
        f"wrote {out_path}: {summary.records} records ({summary.linked} linked clips' records) of "
        f"{', '.join(summary.devices)}; {summary.batches} batches whole, chain of {summary.chain}; "
        f"{summary.clips} clips; manifest SHA-256 {summary.manifest_sha256.hex()}"
    )
    for m in summary.missing_clips:
        click.echo(f"warning: media {m} is not complete at the centre; the bundle names it without its file", err=True)


def _web_commands() -> None:
    from receiver.web.cli import register

    register(cli, config_option, resolve, handle_errors)


_web_commands()


def main() -> None:
    cli()


def _families() -> None:
    """Sub-command groups that live in their own modules (they import this one's helpers)."""
    from receiver.device_cli import device
    from receiver.retention_cli import media, retention

    cli.add_command(device)
    cli.add_command(retention)
    cli.add_command(media)


_families()

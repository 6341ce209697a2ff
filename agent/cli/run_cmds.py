"""`coopagent run`, `coopagent status`, `coopagent config check`."""

from __future__ import annotations

import json
import logging
import signal
import sqlite3
import threading
from pathlib import Path
from typing import Any

import click
import httpx

from agent.cli.common import config_option, fail, handle_errors, resolve_config
from agent.config import AgentConfig, redacted
from agent.logs import setup_logging
from core.config.base import read_secret


@click.command("run")
@config_option
@handle_errors
def run(config_path: Path | None) -> None:
    """Run the agent in the foreground (systemd's ExecStart). SIGTERM/SIGINT stop it cleanly, exit 0."""
    from agent.api.guard import raise_nofile_limit
    from agent.daemon import Agent

    cfg = resolve_config(config_path)
    setup_logging(cfg.agent.log_level)
    # Every API connection is a descriptor; the API caps them below this (agent.api.guard).
    soft, hard = raise_nofile_limit()
    logging.getLogger("agent").info("descriptor limit %d (hard %d)", soft, hard)
    stop = threading.Event()

    def on_signal(signum: int, frame: Any) -> None:
        logging.getLogger("agent").info("signal %s: stopping", signal.Signals(signum).name)
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent = Agent(cfg).start()
    except OSError as exc:
        # Exit 1, not 2: a port in use or a full disk may pass, so systemd restarts it; exit 2
        # (config and key errors) is RestartPreventExitStatus in the unit.
        fail(f"cannot start: {exc}", code=1)
        return
    try:
        while not stop.wait(1.0):
            pass
    finally:
        agent.stop()


def _offline_status(cfg: AgentConfig, reason: str) -> dict[str, Any]:
    """What can be said without the agent: the buffer file, read-only."""
    doc: dict[str, Any] = {"running": False, "dev": cfg.agent.device, "reason": reason}
    db = cfg.db_path
    if not db.exists():
        doc["backlog"] = None
        return doc
    conn = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        meta = dict(conn.execute("SELECT key, value FROM meta").fetchall())
        unsealed = conn.execute("SELECT count(*) FROM records WHERE rowid > ?",
                                (meta["sealed_upto_rowid"],)).fetchone()[0]
        n_b, in_b = conn.execute(
            "SELECT count(*), coalesce(sum(n_records),0) FROM batches WHERE acked_ms IS NULL").fetchone()
        media = conn.execute("SELECT coalesce(sum(size),0) FROM media WHERE state='pending'").fetchone()[0]
        doc.update({"backlog": {"records": unsealed + in_b, "batches": n_b, "media_bytes": media},
                    "acked_seq": meta["acked_seq"], "last_seq": meta["last_seq"]})
    finally:
        conn.close()
    return doc


@click.command("status")
@config_option
@click.option("--json", "as_json", is_flag=True, help="print the whole status document as JSON")
@handle_errors
def status(config_path: Path | None, as_json: bool) -> None:
    """Backlog, acked seq, broker connection, last error, components (asks the running agent)."""
    cfg = resolve_config(config_path)
    try:
        token = read_secret(cfg.api.token_file)
        r = httpx.get(f"http://{cfg.api.listen}/v1/status", headers={"Authorization": f"Bearer {token}"},
                      timeout=5)
        if r.status_code != 200:
            doc = _offline_status(cfg, f"the agent's API answered {r.status_code}: {r.text[:200]}")
        else:
            doc = r.json()
    except (httpx.HTTPError, ValueError) as exc:
        doc = _offline_status(cfg, f"agent not reachable at {cfg.api.listen} ({exc})")
    if as_json:
        click.echo(json.dumps(doc, indent=2, sort_keys=True))
        return
    _print_status(doc)


def _print_status(doc: dict[str, Any]) -> None:
    click.echo(f"device      {doc.get('dev')}")
    click.echo(f"running     {'yes' if doc.get('running') else 'no: ' + str(doc.get('reason'))}")
    b = doc.get("backlog") or {}
    click.echo(f"backlog     {b.get('records', '?')} records, {b.get('batches', '?')} batches, "
               f"{b.get('media_bytes', '?')} media bytes")
    click.echo(f"acked seq   {doc.get('acked_seq', '?')} of {doc.get('last_seq', '?')} sealed")
    broker = doc.get("broker")
    if broker:
        click.echo(f"broker      {broker['url']} {'connected' if broker['connected'] else 'NOT connected'}")
        if broker.get("last_error"):
            click.echo(f"last error  {broker['last_error']}")
    clock = doc.get("clock")
    if clock:
        click.echo(f"clock       synchronized: {clock.get('synchronized')}")
    for name, health in sorted((doc.get("components") or {}).items()):
        click.echo(f"  {name:<14} {health}")


@click.group("config")
def config_group() -> None:
    """Check the configuration."""


@config_group.command("check")
@config_option
@handle_errors
def config_check(config_path: Path | None) -> None:
    """Validate the config and print the effective values (secrets are files; their content is never shown)."""
    cfg = resolve_config(config_path)
    problems = []
    for label, path in (("uplink.central_key", cfg.uplink.central_key), ("api.token_file", cfg.api.token_file)):
        if not Path(path).exists():
            problems.append(f"{label} = '{path}': file does not exist")
    click.echo(json.dumps(redacted(cfg), indent=2, sort_keys=True))
    if cfg.api.workers == "auto":
        click.echo(f"api.workers = auto: {cfg.api.effective_workers} worker processes on this machine", err=True)
    if problems:
        for p in problems:
            click.echo(f"warning: {p}", err=True)
    click.echo("config OK" + (" (with warnings)" if problems else ""), err=True)

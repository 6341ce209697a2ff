"""`coopagent doctor` and `coopagent support-bundle`: the technician's and the helpdesk's view."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import click

from agent import __version__
from agent.cli.common import config_option, resolve_config
from agent.config import ConfigError
from core.doctor import Finding, Result

TAGS = {Result.OK: "[ OK ]", Result.WARNING: "[WARN]", Result.ERROR: "[FAIL]", Result.SKIPPED: "[SKIP]"}


def doctor_document(findings: list[Finding], device: str | None) -> dict[str, Any]:
    from agent.doctor import exit_code

    summary = {r.value: sum(1 for f in findings if f.result is r) for r in Result}
    return {"v": 1, "version": __version__, "dev": device, "exit_code": exit_code(findings),
            "summary": summary, "checks": [f.as_dict() for f in findings]}


def run_doctor(config_path: Path | None) -> tuple[list[Finding], str | None]:
    from agent.doctor import invalid_config
    from agent.doctor import run as run_checks

    try:
        cfg = resolve_config(config_path)
    except ConfigError as exc:
        return [invalid_config(exc)], None
    return run_checks(cfg), cfg.agent.device


@click.command("doctor")
@config_option
@click.option("--json", "as_json", is_flag=True, help="one JSON document (for fleet tools)")
def doctor(config_path: Path | None, as_json: bool) -> None:
    """Run every check, one line each, with a fix for each warning or failure.

    Exit 0: all ok (or skipped); 1: warnings; 2: at least one failure. Works before the
    service is installed and beside the running agent.
    """
    findings, device = run_doctor(config_path)
    doc = doctor_document(findings, device)
    if as_json:
        click.echo(json.dumps(doc, indent=2))
    else:
        width = max((len(f.id) for f in findings), default=0)
        for f in findings:
            click.echo(f"{TAGS[f.result]} {f.id:<{width}}  {f.message}")
            if f.fix:
                click.echo(f"       {'':<{width}}  fix: {f.fix}")
        s = doc["summary"]
        click.echo(f"{s['ok']} ok, {s['warning']} warnings, {s['error']} failures, {s['skipped']} skipped")
    sys.exit(doc["exit_code"])


@click.command("support-bundle")
@config_option
@click.option("--out", type=click.Path(path_type=Path, dir_okay=False), default=None,
              help="the archive (default: ./coopagent-support-HOST-TIME.tar.gz)")
@click.option("--minutes", type=int, default=60, show_default=True, help="how far back logs and frames go")
@click.option("--log-file", "log_files", multiple=True, type=click.Path(path_type=Path, dir_okay=False),
              help="also this log file (an agent run outside systemd); the journal is always included")
def support_bundle(config_path: Path | None, out: Path | None, minutes: int, log_files: tuple[Path, ...]) -> None:
    """One .tar.gz for the helpdesk: doctor, status, redacted config, logs, versions, devices, serial frames.

    Secrets (passwords, tokens, keys, stream credentials) are never inside.
    """
    from agent.doctor.bundle import write_bundle

    path = write_bundle(config_path, out, minutes, log_files)
    click.echo(f"wrote {path}")

"""`coop-receiver web ...` (run the evidence view, accounts, authorities) and `coop-receiver search-backfill`."""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from receiver.config import ReceiverConfig
from receiver.database import open_database
from receiver.search import backfill
from receiver.web import accounts
from receiver.web.schema import open_web_state


def register(cli: click.Group, config_option: Callable[[Any], Any], resolve: Callable[[Path | None], ReceiverConfig],
             handle_errors: Callable[[Any], Any]) -> None:
    """Add the commands to the receiver's CLI (receiver/cli.py calls this once)."""

    @cli.group("web")
    def web() -> None:
        """The centre's evidence view: search, records beside their clips, accounts, access log."""

    @web.command("run")
    @config_option
    @handle_errors
    def web_run(config_path: Path | None) -> None:
        """Serve the web application on [web] listen:port until SIGTERM or SIGINT."""
        import uvicorn

        from receiver.web.app import create_app

        cfg = resolve(config_path)
        logging.basicConfig(level=cfg.receiver.log_level.upper(),
                            format="%(asctime)s %(levelname)s %(name)s: %(message)s")
        app = create_app(cfg)
        click.echo(f"coop-receiver web on http://{cfg.web.listen}:{cfg.web.port}/", err=True)
        try:
            uvicorn.run(app, host=cfg.web.listen, port=cfg.web.port, log_level=cfg.receiver.log_level,
                        proxy_headers=False, server_header=False)
        finally:
            app.state.web.close()

    @web.command("authority")
    @config_option
    @click.argument("name")
    @click.option("--society", "societies", multiple=True, required=True, help="a society it sees; * for all")
    @click.option("--kind", "kinds", multiple=True, required=True, help="a record kind it sees; * for all")
    @handle_errors
    def web_authority(config_path: Path | None, name: str, societies: tuple[str, ...], kinds: tuple[str, ...]) -> None:
        """Create or change an authority and its grants."""
        cfg = resolve(config_path)
        db = open_web_state(cfg.receiver.database_url, cfg.receiver.database_password(), cfg.web.db)
        try:
            accounts.add_authority(db, name, list(societies), list(kinds))
        finally:
            db.close()
        click.echo(f"authority {name}: societies {','.join(societies)}; kinds {','.join(kinds)}")

    @web.command("account")
    @config_option
    @click.argument("name")
    @click.option("--role", type=click.Choice(accounts.ROLES), required=True)
    @click.option("--authority", required=True)
    @click.option("--password-file", type=click.Path(path_type=Path, dir_okay=False), default=None,
                  help="read the password from this file's first line (default: ask on the terminal)")
    @handle_errors
    def web_account(config_path: Path | None, name: str, role: str, authority: str, password_file: Path | None) -> None:
        """Create an account (or set its role, authority and password)."""
        cfg = resolve(config_path)
        if password_file is not None:
            lines = password_file.read_text().splitlines()
            password = lines[0] if lines else ""
        else:
            password = click.prompt("password", hide_input=True, confirmation_prompt=True)
        db = open_web_state(cfg.receiver.database_url, cfg.receiver.database_password(), cfg.web.db)
        try:
            accounts.add_account(db, name, password, role, authority)
        finally:
            db.close()
        click.echo(f"account {name}: {role} of {authority}")

    @cli.command("search-backfill")
    @config_option
    @handle_errors
    def search_backfill(config_path: Path | None) -> None:
        """Index batches stored before the search index existed (SQLite: with the receiver stopped)."""
        cfg = resolve(config_path)
        db = open_database(cfg.receiver, writer=True)
        try:
            n = backfill(db)
        finally:
            db.close()
        click.echo(f"search index: {n} records indexed")

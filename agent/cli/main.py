"""Entry point of `coopagent`; each command family lives in its own module."""

from __future__ import annotations

import click

from agent import __version__
from agent.cli.keys_cmds import keys
from agent.cli.run_cmds import config_group, run, status


@click.group()
@click.version_option(__version__, prog_name="coopagent")
def cli() -> None:
    """Cooperative branch edge agent: run it, check it, test its devices."""


cli.add_command(keys)
cli.add_command(run)
cli.add_command(status)
cli.add_command(config_group)


def _register_optional() -> None:
    """Device-family command modules register themselves here (serial, camera)."""
    from agent.cli import camera_cmds, serial_cmds

    serial_cmds.register(cli)
    camera_cmds.register(cli)


_register_optional()


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

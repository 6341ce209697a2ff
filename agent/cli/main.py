"""Entry point of `coopagent`; each command family lives in its own module."""

from __future__ import annotations

import click

from agent import __version__
from agent.cli.common import resolve_config
from agent.cli.doctor_cmds import doctor, support_bundle
from agent.cli.keys_cmds import keys
from agent.cli.run_cmds import config_group, run, status
from agent.subsystems import register_cli
from core.cli import CliHost


@click.group()
@click.version_option(__version__, prog_name="coopagent")
@click.pass_context
def cli(ctx: click.Context) -> None:
    """Cooperative branch edge agent: run it, check it, test its devices."""
    ctx.obj = CliHost(resolve_config)  # the device families' commands load the config through it


cli.add_command(keys)
cli.add_command(run)
cli.add_command(status)
cli.add_command(config_group)
cli.add_command(doctor)
cli.add_command(support_bundle)


# The device families' commands, from their line in agent/subsystems.py.
register_cli(cli)


def main() -> None:
    cli()


if __name__ == "__main__":
    main()

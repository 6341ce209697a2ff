"""What every `coopagent` command shares, the agent's own and the device families' alike.

A family's commands live in its own folder (drivers/serial/cli.py, drivers/camera/cli.py)
and may not import the agent (the floors, docs/architecture.md). So the agent's root command
puts a `CliHost` in click's context, and `load_config` finds it there: the family gets the
agent's config without importing the code that declares it.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import click

from core.config.errors import ConfigError
from core.interfaces import UserError

F = TypeVar("F", bound=Callable[..., Any])

DEFAULT_CONFIG_PATH = Path("/etc/coopagent/agent.toml")

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help=f"agent config (TOML); default {DEFAULT_CONFIG_PATH} if it exists, else the embedded defaults",
)


@dataclass(frozen=True)
class CliHost:
    """What the agent's root command hands its subcommands: how to load the config."""

    load_config: Callable[[Path | None], Any]


def load_config(config_path: Path | None) -> Any:
    """The agent's config (agent.config.AgentConfig), through the root command's CliHost."""
    host = click.get_current_context().find_object(CliHost)
    if host is None:
        raise RuntimeError("a family command runs under the coopagent command (agent.cli.main)")
    return host.load_config(config_path)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def user_errors(*extra: type[Exception]) -> Callable[[F], F]:
    """A decorator: known, user-fixable errors (a ConfigError, a UserError, and `extra`) print
    one clear message and exit 2, without a traceback. The centre's CLI adds its own."""
    known: tuple[type[Exception], ...] = (UserError, *extra)

    def decorate(func: F) -> F:
        @functools.wraps(func)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            try:
                return func(*args, **kwargs)
            except ConfigError as exc:
                click.echo(str(exc), err=True)
                sys.exit(2)
            except known as exc:
                fail(str(exc))
            return None

        return wrapper  # type: ignore[return-value]

    return decorate


handle_errors = user_errors()

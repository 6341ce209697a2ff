"""What every command shares: the --config option and turning known errors into exit code 2."""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, ConfigError, load_config
from buffer.schema import SchemaTooNew
from wire.keys import KeyError_

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "--config", "config_path", type=click.Path(path_type=Path, dir_okay=False), default=None,
    help=f"agent config (TOML); default {DEFAULT_CONFIG_PATH} if it exists, else the embedded defaults",
)


def resolve_config(config_path: Path | None) -> AgentConfig:
    """--config FILE, else the default path if present, else embedded defaults."""
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    return load_config(config_path)


def fail(message: str, code: int = 2) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(code)


def handle_errors(func: F) -> F:
    """Known, user-fixable errors print one clear message and exit 2, without a traceback."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except ConfigError as exc:
            click.echo(str(exc), err=True)
            sys.exit(2)
        except (KeyError_, SchemaTooNew) as exc:
            fail(str(exc))
        return None

    return wrapper  # type: ignore[return-value]

"""Read TOML into AgentConfig; turn every validation error into 'key = value: what is allowed'."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config.errors import ConfigError, config_error
from agent.config.model import AgentConfig

__all__ = ["ConfigError", "load_config", "parse_config", "redacted"]

def parse_config(data: dict[str, Any], path: Path | None = None) -> AgentConfig:
    try:
        return AgentConfig.model_validate(data)
    except ValidationError as exc:
        raise config_error(AgentConfig, exc, path) from None


def load_config(path: Path | None) -> AgentConfig:
    """Load the file, or the embedded defaults when path is None (the demo and tests use those)."""
    if path is None:
        return AgentConfig()
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(path, ["file not found (use --config FILE)"]) from None
    except OSError as exc:
        raise ConfigError(path, [f"cannot read: {exc.strerror}"]) from None
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(path, [f"not valid TOML: {exc}"]) from None
    return parse_config(data, path)


def redacted(cfg: AgentConfig) -> dict[str, Any]:
    """The effective config as plain data, safe to print: secrets are files, and their names are shown, not content."""
    data = cfg.model_dump(mode="json")
    return data

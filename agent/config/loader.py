"""Read TOML into AgentConfig; turn every validation error into 'key = value: what is allowed'."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import ValidationError

from agent.config.model import AgentConfig
from core.config.errors import ConfigError, config_error, read_toml

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
    data = read_toml(path)
    return parse_config(data, path)


def redacted(cfg: AgentConfig) -> dict[str, Any]:
    """The effective config as plain data, safe to print: secrets are files, and their names are shown, not content."""
    data = cfg.model_dump(mode="json")
    return data

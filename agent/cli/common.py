"""The agent's own commands' shared pieces: core.cli's, plus loading the agent's config."""

from __future__ import annotations

from pathlib import Path

from agent.config import DEFAULT_CONFIG_PATH, AgentConfig, load_config
from core.cli import config_option, fail, handle_errors

__all__ = ["config_option", "fail", "handle_errors", "resolve_config"]


def resolve_config(config_path: Path | None) -> AgentConfig:
    """--config FILE, else the default path if present, else embedded defaults."""
    if config_path is None and DEFAULT_CONFIG_PATH.exists():
        config_path = DEFAULT_CONFIG_PATH
    return load_config(config_path)

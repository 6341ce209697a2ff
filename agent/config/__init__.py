"""The agent's config, declared once as typed models (see config/agent.example.toml).

The names below load lazily (PEP 562): the driver config modules import
agent.config.base, and an eager import of the models here would make that a cycle
whenever a driver module is imported first.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agent.config.loader import ConfigError, load_config, redacted
    from agent.config.model import DEFAULT_CONFIG_PATH, AgentConfig

__all__ = ["DEFAULT_CONFIG_PATH", "AgentConfig", "ConfigError", "load_config", "redacted"]


def __getattr__(name: str) -> Any:
    if name in ("ConfigError", "load_config", "redacted"):
        from agent.config import loader
        return getattr(loader, name)
    if name in ("DEFAULT_CONFIG_PATH", "AgentConfig"):
        from agent.config import model
        return getattr(model, name)
    raise AttributeError(name)

"""The agent's config, declared once as typed models (see config/agent.example.toml).

The names below load lazily (PEP 562), so importing a piece of agent.config (the
reference generator, say) does not build every model first.
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

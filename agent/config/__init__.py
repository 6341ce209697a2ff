"""The agent's config, declared once as typed models (see config/agent.example.toml)."""

from agent.config.loader import ConfigError, load_config, redacted
from agent.config.model import DEFAULT_CONFIG_PATH, AgentConfig

__all__ = ["DEFAULT_CONFIG_PATH", "AgentConfig", "ConfigError", "load_config", "redacted"]

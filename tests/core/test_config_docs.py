"""The example config and the generated reference stay true to the models."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from pydantic import BaseModel

from agent.config.loader import parse_config
from agent.config.model import AgentConfig
from agent.config.reference import _inner_model, render

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "config" / "agent.example.toml"


def test_example_config_is_valid() -> None:
    parse_config(tomllib.loads(EXAMPLE.read_text()))


def test_example_config_shows_every_core_key() -> None:
    """Every key of every core section appears in the example, set or commented out."""
    text = EXAMPLE.read_text()
    shown = set(re.findall(r"^#?\s*([a-z_]+)\s*=", text, flags=re.M))
    missing = []
    for section in ("agent", "uplink", "api", "buffer", "media", "supervisor", "clock"):
        model = _inner_model(AgentConfig.model_fields[section].annotation)
        assert model is not None and issubclass(model, BaseModel)
        assert f"[{section}]" in text
        missing += [f"{section}.{k}" for k in model.model_fields if k not in shown]
    assert not missing, f"keys missing from config/agent.example.toml: {missing}"


def test_reference_is_generated_from_the_models() -> None:
    committed = (ROOT / "config" / "REFERENCE.md").read_text()
    assert committed == render(), "regenerate: python -m agent.config.reference > config/REFERENCE.md"

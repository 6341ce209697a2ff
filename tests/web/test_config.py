"""The [web] section: in the shipped example with its defaults, and every key in docs/receiver.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from receiver.config import ConfigError, load_receiver_config
from receiver.web.config import WebSection

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "receiver" / "receiver.example.toml"


def test_example_has_every_web_key_at_its_default() -> None:
    assert load_receiver_config(EXAMPLE).web == WebSection()
    section = EXAMPLE.read_text().split("[web]", 1)[1].split("[[devices]]", 1)[0]
    docs = (ROOT / "docs" / "receiver.md").read_text().split("## The evidence view", 1)[1]
    for key in WebSection.model_fields:
        assert re.search(rf"^{key} = ", section, re.M), f"[web] {key} missing from {EXAMPLE.name}"
        assert re.search(rf"^{key} = ", docs, re.M), f"[web] {key} missing from docs/receiver.md"


def test_a_bad_web_value_names_the_key_and_what_is_allowed(tmp_path: Path) -> None:
    path = tmp_path / "rx.toml"
    path.write_text("[web]\nport = 70000\n")
    with pytest.raises(ConfigError, match=r"web\.port = 70000: Input should be less than or equal to 65535"):
        load_receiver_config(path)

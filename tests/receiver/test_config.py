"""The receiver's config: the shipped example parses, and every key is documented in both places."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

from receiver.config import ReceiverConfig, ReceiverSection, load_receiver_config

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "receiver" / "receiver.example.toml"


def test_example_parses_and_matches_the_defaults() -> None:
    cfg = load_receiver_config(EXAMPLE)
    assert cfg.receiver == ReceiverSection(devices_dir=Path("/etc/coop-receiver/devices"))
    assert cfg.devices[0].id == "demo-society/branch-1/agent-1"


def test_every_key_is_in_the_example_and_the_docs() -> None:
    example = EXAMPLE.read_text()
    docs = (ROOT / "docs" / "receiver.md").read_text()
    for key in ReceiverSection.model_fields:
        assert re.search(rf"^#? ?{key} = ", example, re.M), f"{key} missing from {EXAMPLE.name}"
        assert re.search(rf"^{key} = ", docs, re.M), f"{key} missing from docs/receiver.md"


def test_relative_paths_follow_the_config_file(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    path = tmp_path / "sub" / "rx.toml"
    path.write_text(
        '[receiver]\ndb = "data/rx.sqlite3"\nkey_file = "/abs/key.pem"\n'
        '[[devices]]\nid = "a/b/c"\npublic_key = ["k1.pem", "k2.pem"]\n'
    )
    cfg = load_receiver_config(path)
    assert cfg.receiver.db == tmp_path / "sub" / "data" / "rx.sqlite3"
    assert cfg.receiver.key_file == Path("/abs/key.pem")
    assert cfg.devices[0].public_key == [tmp_path / "sub" / "k1.pem", tmp_path / "sub" / "k2.pem"]
    # model_validate (the in-process API) keeps paths as given
    assert ReceiverConfig.model_validate(tomllib.loads(path.read_text())).receiver.db == Path("data/rx.sqlite3")

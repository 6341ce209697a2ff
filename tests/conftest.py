"""Shared fixtures: real peers on free ports under tmp_path; nothing outside tmp is written."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.mosquitto import Mosquitto

pytest_plugins = ["tests.peers.agent"]  # the `branch` fixture: receiver + agent on the broker

# Hypothesis writes ./.hypothesis even with database=None: keep the tree clean.
os.environ.setdefault("HYPOTHESIS_STORAGE_DIRECTORY", tempfile.mkdtemp(prefix="hypothesis-"))


@pytest.fixture
def mosquitto(tmp_path: Path) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto").start()
    try:
        yield broker
    finally:
        broker.stop()

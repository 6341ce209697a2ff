"""Fixtures of the operations tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.ops.debpkg import ROOT_DIR, build_deb


@pytest.fixture(scope="session")
def head_deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The Debian package of this tree, built once per test run (about 90 s)."""
    return build_deb(ROOT_DIR, tmp_path_factory.mktemp("dist"))

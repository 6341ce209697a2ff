"""`make demo` stays true: the demo runs a whole branch and ends with the backlog at zero."""

from __future__ import annotations

import subprocess
import sys

import pytest

pytestmark = pytest.mark.slow


def test_demo_runs_a_branch_to_zero_backlog() -> None:
    r = subprocess.run([sys.executable, "-m", "agent.demo"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "the agent's backlog is zero" in r.stdout
    assert "agent stopped with exit code 0" in r.stdout
    assert "chain breaks     0" in r.stdout and "rejections       0" in r.stdout
    assert "count_session 2" in r.stdout and "stock_move" in r.stdout and "weight" in r.stdout
    assert "clip verified" in r.stdout and "codec_name=h264" in r.stdout and "media 1" in r.stdout

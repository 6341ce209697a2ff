"""The doctor and the CLI quiet the camera family's log lines for their own thread only.

The regression: the camera doctor set the `drivers.camera` logger to CRITICAL for good. In a
test process that ran the doctor in-process, a later camera test never saw ffmpeg's 401
relayed (tests/camera/test_secrets.py failed in CI runs, only after the doctor tests); in
the agent, where the status page runs the doctor, the cameras' real warnings went silent.
"""

from __future__ import annotations

import logging
import threading

import pytest

import drivers.camera.recorder  # noqa: F401 - its logger exists, as in the agent
from drivers.camera.quiet import quiet_camera_logs


def test_quiet_in_this_thread_while_the_block_lasts(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    lg = logging.getLogger("drivers.camera.recorder")
    with quiet_camera_logs():
        lg.warning("from the quiet thread")
        t = threading.Thread(target=lambda: lg.warning("from another thread"))
        t.start()
        t.join()
    lg.warning("after the block")
    assert [r.getMessage() for r in caplog.records] == ["from another thread", "after the block"]
    assert logging.getLogger("drivers.camera").getEffectiveLevel() <= logging.WARNING


def test_the_cli_quiets_every_thread_and_gives_the_level_back(caplog: pytest.LogCaptureFixture) -> None:
    from drivers.camera.quiet import quiet_camera_logs_process

    caplog.set_level(logging.DEBUG)
    lg = logging.getLogger("drivers.camera.recorder")
    with quiet_camera_logs_process():
        t = threading.Thread(target=lambda: lg.error("from the ONVIF client's thread"))
        t.start()
        t.join()
    lg.warning("after the command")
    assert [r.getMessage() for r in caplog.records] == ["after the command"]

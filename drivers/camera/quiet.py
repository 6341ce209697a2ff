"""Silence the camera family's own log lines for one thread, for a while.

The doctor and the CLI report each camera problem once, themselves; the drivers' log lines
would repeat it. They used to set the `drivers.camera` logger to CRITICAL for good, which
inside the running agent (the status page runs the doctor there) and in a test process
silenced the cameras' real warnings from then on. This filter drops only the records made
by the calling thread, and only until the block ends.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager

FAMILY = "drivers.camera"


@contextmanager
def quiet_camera_logs_process() -> Iterator[None]:
    """Every thread, while the block lasts: for a CLI command, which is the whole process (the
    ONVIF client logs from a thread of its own); an in-process caller gets the level back."""
    logger = logging.getLogger(FAMILY)
    before = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(before)


@contextmanager
def quiet_camera_logs() -> Iterator[None]:
    me = threading.get_ident()

    def other_threads(record: logging.LogRecord) -> bool:
        return record.thread != me

    # A logger's filters see only the records made on that logger, not its children's, so
    # every camera logger gets the filter (they exist once their modules are imported).
    loggers = [logging.getLogger(FAMILY)] + [
        lg for name, lg in list(logging.root.manager.loggerDict.items())
        if name.startswith(FAMILY + ".") and isinstance(lg, logging.Logger)]
    for lg in loggers:
        lg.addFilter(other_threads)
    try:
        yield
    finally:
        for lg in loggers:
            lg.removeFilter(other_threads)

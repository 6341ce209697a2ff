"""Logging set-up shared by `coopagent run` and the API worker processes it starts.

Both write to stderr, which systemd hands to the journal; the workers inherit the agent's
stderr, so their lines land in the same unit's journal.
"""

from __future__ import annotations

import logging
import os
import sys


class _JournalPrefix(logging.Formatter):
    """Under systemd, stderr lines reach the journal at priority info unless they start with
    <N> (sd-daemon(3)): prefixing them makes `journalctl -p warning` work."""

    PRIO = {logging.DEBUG: 7, logging.INFO: 6, logging.WARNING: 4, logging.ERROR: 3, logging.CRITICAL: 2}

    def format(self, record: logging.LogRecord) -> str:
        return f"<{self.PRIO.get(record.levelno, 6)}>" + super().format(record)


def setup_logging(level: str) -> None:
    handler = logging.StreamHandler(sys.stderr)
    if os.environ.get("JOURNAL_STREAM"):
        handler.setFormatter(_JournalPrefix("%(levelname)s %(name)s: %(message)s"))  # the journal adds the time
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    logging.basicConfig(level=getattr(logging, level.upper()), handlers=[handler])
    logging.getLogger("paho").setLevel(logging.WARNING)

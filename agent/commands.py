"""Carrying out verified central commands, each id at most once, each answered by a device_event.

The id is recorded durably before the command runs: a crash mid-command means it is not
run again (spec: "carries out a command id at most once"); the centre can send a new one.
Handlers run on a small worker pool so a slow clip never stalls the uplink thread.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.interfaces import Command, CommandFailed, CommandHandler

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)

REFUSALS_PER_MINUTE = 10  # recorded as device_events; more are counted, not recorded (no flooding)


class CommandRouter:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.handlers: dict[str, CommandHandler] = {"ping": self._ping, "resend": self._resend}
        self.refusals = 0
        self.refusals_unrecorded = 0
        self._window_start = time.monotonic()
        self._window_count = 0
        self._lock = threading.Lock()

    def register(self, name: str, handler: CommandHandler) -> None:
        self.handlers[name] = handler

    def _ping(self, cmd: Command) -> Mapping[str, Any]:
        return {"pong": True, "acked_seq": self.agent.store.acked_seq(), "last_seq": self.agent.store.last_seq()}

    def _resend(self, cmd: Command) -> Mapping[str, Any]:
        # The uplink already rewound its window on its own thread; this only answers.
        return {"from_seq": cmd.args.get("from_seq")}

    def dispatch(self, cmd: Command) -> None:
        """Called on the uplink thread for every verified command."""
        self.agent.centre_clock.note(cmd.at)  # the centre's clock, for status and `doctor` (clock.centre)
        if not self.agent.store.command_done(cmd.id, cmd.cmd, cmd.at, "accepted").result(timeout=30):
            log.info("command %s (%s) already carried out; ignored", cmd.id, cmd.cmd)
            return
        handler = self.handlers.get(cmd.cmd)
        if handler is None:
            self._answer(cmd, "refused", {"reason": f"unknown command {cmd.cmd!r}; known: "
                                          f"{', '.join(sorted(self.handlers))}"})
            return
        self.agent.workers.submit(self._run, cmd, handler)

    def _run(self, cmd: Command, handler: CommandHandler) -> None:
        try:
            detail = dict(handler(cmd))
            self._answer(cmd, "ok", detail)
        except CommandFailed as exc:
            self._answer(cmd, "failed", {"reason": str(exc)})
        except Exception as exc:
            log.exception("command %s (%s) crashed", cmd.id, cmd.cmd)
            self._answer(cmd, "failed", {"reason": f"{type(exc).__name__}: {exc}"})

    def _answer(self, cmd: Command, result: str, detail: Mapping[str, Any]) -> None:
        self.agent.device_event("agent", "command", {"command": cmd.id, "cmd": cmd.cmd, "result": result, **detail})

    def refused(self, what: str, reason: str) -> None:
        """A central message that failed verification: recorded, at most 10 a minute."""
        with self._lock:
            self.refusals += 1
            now = time.monotonic()
            if now - self._window_start > 60:
                self._window_start, self._window_count = now, 0
            self._window_count += 1
            record = self._window_count <= REFUSALS_PER_MINUTE
            if not record:
                self.refusals_unrecorded += 1
        if record:
            try:
                self.agent.device_event("uplink", "refused", {"what": what, "reason": reason})
            except Exception as exc:
                log.warning("could not record a refused %s: %s", what, exc)

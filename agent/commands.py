"""Carrying out verified central commands, each id at most once, each answered by a device_event.

The id is recorded durably before the command runs: a crash mid-command means it is not
run again (spec: "carries out a command id at most once"); the centre can send a new one.
Handlers run on a small worker pool so a slow clip never stalls the uplink thread.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from core.interfaces import Command, CommandFailed, CommandHandler

if TYPE_CHECKING:
    from agent.daemon import Agent

log = logging.getLogger(__name__)


class CommandRouter:
    def __init__(self, agent: Agent):
        self.agent = agent
        self.handlers: dict[str, CommandHandler] = {"ping": self._ping, "resend": self._resend}

    def register(self, name: str, handler: CommandHandler) -> None:
        self.handlers[name] = handler

    def _ping(self, cmd: Command) -> Mapping[str, Any]:
        return {"pong": True, "acked_seq": self.agent.store.acked_seq(), "last_seq": self.agent.store.last_seq()}

    def _resend(self, cmd: Command) -> Mapping[str, Any]:
        # The uplink already rewound its window on its own thread; this only answers.
        return {"from_seq": cmd.args.get("from_seq")}

    def dispatch(self, cmd: Command) -> bool:
        """Called on the uplink thread for every verified command; False if its id was already
        carried out (the uplink records that as a refused replay)."""
        self.agent.centre_clock.note(cmd.at)  # the centre's clock, for status and `doctor` (clock.centre)
        if not self.agent.store.command_done(cmd.id, cmd.cmd, cmd.at, "accepted").result(timeout=30):
            log.info("command %s (%s) already carried out; ignored", cmd.id, cmd.cmd)
            return False
        handler = self.handlers.get(cmd.cmd)
        if handler is None:
            self._answer(cmd, "refused", {"reason": f"unknown command {cmd.cmd!r}; known: "
                                          f"{', '.join(sorted(self.handlers))}"})
            return True
        self.agent.workers.submit(self._run, cmd, handler)
        return True

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

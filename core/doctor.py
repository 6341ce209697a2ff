"""The doctor's vocabulary, shared by the agent core and the device families' own checks.

A check yields Findings; each has a stable id (`config.valid`, `serial.dock.frames`) that
fleet tools may key on, a result, a one-line message and, unless it is ok, a fix a
technician can act on. Ids never change meaning; a renamed check gets a new id.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol


class Result(enum.StrEnum):
    OK = "ok"
    WARNING = "warning"
    ERROR = "error"
    SKIPPED = "skipped"


@dataclass(frozen=True)
class Finding:
    id: str
    result: Result
    message: str
    fix: str = ""

    def as_dict(self) -> dict[str, str]:
        return {"id": self.id, "result": self.result.value, "message": self.message, "fix": self.fix}


def ok(id_: str, message: str) -> Finding:
    return Finding(id_, Result.OK, message)


def warning(id_: str, message: str, fix: str) -> Finding:
    return Finding(id_, Result.WARNING, message, fix)


def error(id_: str, message: str, fix: str) -> Finding:
    return Finding(id_, Result.ERROR, message, fix)


def skipped(id_: str, reason: str) -> Finding:
    return Finding(id_, Result.SKIPPED, reason)


class DoctorContext(Protocol):
    """What a check may read: the validated config and, when the agent runs, its status."""

    @property
    def cfg(self) -> Any: ...

    @property
    def status(self) -> Mapping[str, Any] | None:
        """GET /v1/status of the running agent, or None when it is not running."""

    @property
    def status_reason(self) -> str:
        """Why status is None ("agent not reachable at ...")."""

    def recent_records(self, kinds: tuple[str, ...], minutes: int) -> list[Mapping[str, Any]]:
        """Records of these kinds from the buffer's last `minutes`, oldest first (read-only)."""
        ...


Check = Callable[[DoctorContext], Iterable[Finding]]

"""The small contract between the agent core and everything that produces records.

Drivers (serial devices, cameras) and the local API see the core only through these
types, so a driver can be tested against any sink and the core can change underneath.
Threading model: drivers are threads (one Component.run per thread, supervised); the
sink calls block the calling thread until the records are durably committed.
"""

from __future__ import annotations

import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, NamedTuple, Protocol, TypedDict

Health = Literal["ok", "degraded", "down"]


class UserError(Exception):
    """A mistake the user can fix (a key file, a buffer from a newer agent): the CLI prints
    it and exits 2, without a traceback (core.cli.handle_errors)."""


class RecordRejected(Exception):
    """Records not stored; `status` is the HTTP status the local API answers with."""

    status = 400

    def __init__(self, reason: str, index: int | None = None):
        self.reason = reason
        self.index = index
        prefixed = index is None or reason.startswith("records[")
        super().__init__(reason if prefixed else f"records[{index}]: {reason}")


class RecordInvalid(RecordRejected):
    status = 422


class RecordConflict(RecordRejected):
    """An id that already exists with different content (spec: ids are unique for ever)."""

    status = 409


class BufferFull(RecordRejected):
    """The disk or the configured buffer cap is full; nothing of the request was stored."""

    status = 507


class BufferUnavailable(RecordRejected):
    status = 503


class RecordIn(TypedDict, total=False):
    kind: str          # required: a spec kind (sale, stock_move, count, ...)
    data: dict[str, Any]  # required: as the kind says
    id: str            # optional: a UUIDv7/ULID the source already has (idempotent re-post)
    at: int            # optional: epoch ms UTC when it happened; default now
    src: str           # optional: "scale:dock-1", "scanner:store-room", "api:pos-3"; default "agent"


class StoredRecord(TypedDict):
    id: str
    kind: str
    at: int
    src: str
    data: dict[str, Any]


class RecordSink(Protocol):
    def submit(self, records: Sequence[Mapping[str, Any]], timeout: float | None = None) -> list[str]:
        """Validate, fill id/at/src, commit durably as one all-or-nothing group; return the ids.

        Raises RecordInvalid, RecordConflict, BufferFull or BufferUnavailable. Returns only
        after the commit is on disk (synchronous=FULL), so a returned id is never lost.
        """
        ...

    def submit_nowait(self, records: Sequence[Mapping[str, Any]]) -> Future[list[str]]:
        """The same, without blocking: the future resolves to the ids once the group commit is
        on disk, or raises one of the RecordRejected errors. The API wraps it with
        asyncio.wrap_future so one event loop can keep thousands of requests in flight."""
        ...


class MediaSink(Protocol):
    def add_media(self, path: Path, *, camera: str, media_type: Literal["video/mp4", "image/jpeg"],
                  start_ms: int, end_ms: int, reason: Mapping[str, Any], src: str = "agent",
                  media_id: str | None = None, hold: bool = True) -> str:
        """Take ownership of a finished file (it is moved into the media dir), compute size and
        SHA-256, commit the spec's `media` record and queue the chunks for upload behind records.
        Returns the MEDIA_ID. The file is kept until the centre acks it complete, unless disk
        pressure forces it out (a `gap` record says so): hold=True marks evidence (a clip, a
        commanded snapshot), which goes last; hold=False a routine file (a periodic snapshot),
        which goes before any evidence (buffer.diskpolicy)."""
        ...


# What the disk policy may delete when free space falls below the reserve for records, in the
# order it deletes them (buffer.diskpolicy, docs/decisions.md "Disk pressure"). The last class
# goes only when a record would otherwise be refused.
EvictClass = Literal["recording_expired", "recording", "snapshot", "evidence_confirmed", "evidence_pending"]
EVICT_ORDER: tuple[EvictClass, ...] = (
    "recording_expired",   # continuous recording already past its retention ([recording] ring_minutes)
    "recording",           # other continuous recording, oldest first
    "snapshot",            # periodic snapshots (MediaSink.add_media hold=False)
    "evidence_confirmed",  # clips and commanded snapshots the centre acked complete
    "evidence_pending",    # evidence the centre does not have yet (incl. ring spans a clip still waits for)
)


class Evictable(NamedTuple):
    """One file the disk policy may delete; `key` lets its owner find it again (e.g. a ring segment).
    A tuple, not a dataclass: a pass lists every segment of every ring (28,800 for 8 cameras' hour)."""

    cls: EvictClass
    path: Path
    size: int
    camera: str
    start_ms: int
    end_ms: int
    key: str = ""


class EvictableSource(Protocol):
    """A family's files on disk that may give way to records (the camera rings): listed on demand,
    deleted by their owner, who knows its own locks (a clip being cut from a segment)."""

    def evictable(self, now_ms: int) -> list[Evictable]:
        """Everything it could delete now, each with its class; any order."""
        ...

    def evict(self, item: Evictable) -> bool:
        """Delete it; False if it is already gone or must not go now."""
        ...


@dataclass(frozen=True)
class Command:
    """A central command that passed signature, dev and clock checks, not yet carried out."""

    id: str
    cmd: str
    args: Mapping[str, Any]
    at: int


class CommandFailed(Exception):
    """Raised by a command handler; the message goes into the answering device_event."""


CommandHandler = Callable[[Command], Mapping[str, Any]]
RecordListener = Callable[[list[StoredRecord]], None]


class AgentContext(Protocol):
    """What a subsystem gets when the agent builds it."""

    @property
    def config(self) -> Any: ...  # agent.config.AgentConfig

    @property
    def records(self) -> RecordSink: ...

    @property
    def media(self) -> MediaSink: ...

    def subscribe_records(self, listener: RecordListener) -> None:
        """Call listener (from one notifier thread, in commit order) with every committed record."""
        ...

    def register_command(self, name: str, handler: CommandHandler) -> None:
        """Route a verified central command (e.g. 'clip', 'snapshot') to handler; it runs once per id."""
        ...

    def device_event(self, device: str, event: str, detail: Mapping[str, Any] | None = None,
                     src: str = "agent") -> None:
        """Record a spec `device_event` (online, offline, tamper, error, ...); durable on return."""
        ...

    def set_health(self, component: str, health: Health) -> None:
        """Report a component's state for the status message."""
        ...

    def register_evictable(self, source: EvictableSource) -> None:
        """Offer files to the disk policy: deleted in EVICT_ORDER when free space runs short."""
        ...


class Component(ABC):
    """One supervised thread of work. run() may be called again after it raised: it must open
    its resources inside run() and release them in a finally, so a restart starts clean."""

    name: str

    @abstractmethod
    def run(self, stop: threading.Event) -> None:
        """Work until stop is set (use stop.wait(t), never a bare sleep); raise to report a crash."""

    def health(self) -> Health:
        return "ok"


ComponentFactory = Callable[[AgentContext], list[Component]]
StatusProvider = Callable[[], dict[str, Any]]  # the `coopagent status --json` document


@dataclass
class SubsystemInfo:
    name: str
    factory: ComponentFactory
    commands: list[str] = field(default_factory=list)

"""Slow and hostile clients: deadlines for reading a request, a cap on connections, a header cap.

Issue 13 measured it: uvicorn's httptools protocol arms no timer before a request's head is
complete (its keep-alive timer runs only after an answer, and any byte cancels it), so a
client that sends half a request and then a byte a second holds its socket for ever. With
the 1,024 descriptors a service gets by default, 1,100 such connections used them all, and
libuv then accepted and at once closed every new connection (its EMFILE trick): each sale
post was reset for as long as the slow ones stayed open. Three defences, all here:

- **Deadlines.** A request's head must be complete `head_timeout_s` after the connection
  opened or the previous answer went out, its body `body_timeout_s` after the head. Past
  either, the client gets 408 with `connection: close` if it had sent part of a request,
  and is just closed if it had sent nothing (an idle keep-alive connection: a 408 there
  could cross a request the client just sent; RFC 9112 9.5 lets a server close idle ones).
- **Descriptors in reserve.** At most `max_connections` connections per serving process,
  and fewer if the process's descriptor limit leaves less than `FD_RESERVE` free. Past the
  cap a new connection closes the oldest one that has no request in progress (idle, or its
  head still incomplete: the slow ones), so a POS that sends its request at once is served;
  if every connection is busy with a request, the new one gets 503 and is closed.
- **Header size.** A head over `max_header_bytes` is 431 and the connection is closed
  (llhttp itself has no limit and buffers an unfinished header value without end).
"""

from __future__ import annotations

import asyncio
import os
import resource
import weakref
from dataclasses import dataclass
from typing import Any

import orjson
from uvicorn.config import Config
from uvicorn.server import ServerState

from agent.api.coalesce import CoalescingHttpToolsProtocol

# Descriptors kept free for everything else the process opens (SQLite, its WAL and journal,
# MQTT, camera pipes, log sockets) and for accepting the connection that triggers eviction.
FD_RESERVE = 64
# A process whose descriptors are not visible in /proc is assumed to use this many at start.
FDS_ASSUMED = 64


@dataclass(frozen=True)
class Limits:
    """[api] head_timeout_s, body_timeout_s, max_header_bytes, max_connections (agent.config.core)."""

    head_timeout_s: float = 10.0
    body_timeout_s: float = 30.0
    max_header_bytes: int = 16 * 1024
    max_connections: int = 768


def open_fds() -> int:
    try:
        return len(os.listdir("/proc/self/fd"))
    except OSError:
        return FDS_ASSUMED


def connection_cap(max_connections: int) -> int:
    """max_connections, or fewer when the descriptor limit would not leave FD_RESERVE free."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, soft - open_fds() - FD_RESERVE))


def raise_nofile_limit() -> tuple[int, int]:
    """Soft RLIMIT_NOFILE up to the hard limit (the unit sets both with LimitNOFILE=, and its
    SystemCallFilter refuses setrlimit, so under systemd this is a no-op). Returns (soft, hard)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (OSError, ValueError):
            pass
    return soft, hard


def answer(status: int, phrase: str, error: str, reason: str) -> bytes:
    """A whole HTTP answer that closes the connection, with the API's JSON error body."""
    body = orjson.dumps({"error": error, "reason": reason})
    head = (
        f"HTTP/1.1 {status} {phrase}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class Guard:
    """Per server (one per event loop): the connections with no request in progress, oldest first."""

    def __init__(self, limits: Limits):
        self.cap = connection_cap(limits.max_connections)
        self.open = 0
        self.waiting: dict[GuardedHttpToolsProtocol, None] = {}  # insertion order = oldest first
        self.evicted = 0
        self.refused = 0

    def make_room(self, newcomer: GuardedHttpToolsProtocol) -> bool:
        """Called with the newcomer counted; False if nothing could be closed to make room."""
        while self.open > self.cap:
            victim = next((c for c in self.waiting if c is not newcomer), None)
            if victim is None:
                return False
            self.evicted += 1
            victim.drop(503, "Service Unavailable", "unavailable",
                        "too many connections; this one had no complete request: send the request at once")
        return True


_GUARDS: weakref.WeakKeyDictionary[ServerState, Guard] = weakref.WeakKeyDictionary()


def install(server_state: ServerState, limits: Limits) -> Guard:
    """Before the server accepts: the cap counts the descriptors open now. (Counted at the
    first connection instead, it would count the connections libuv accepted in that burst.)"""
    guard = _GUARDS[server_state] = Guard(limits)
    return guard


class GuardedHttpToolsProtocol(CoalescingHttpToolsProtocol):
    """Passed to uvicorn as `http=functools.partial(GuardedHttpToolsProtocol, limits=...)`."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
        *,
        limits: Limits = Limits(),
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self.limits = limits
        guard = _GUARDS.get(server_state)
        self.guard = guard if guard is not None else install(server_state, limits)
        self._timer: asyncio.TimerHandle | None = None
        self._in_head = False  # part of a request's head has arrived, not all of it
        self._head_bytes = 0
        self._completed_in_feed = False
        self._counted = False

    # -- connection life ------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        guard = self.guard
        guard.open += 1
        self._counted = True
        guard.waiting[self] = None
        if not guard.make_room(self):
            guard.refused += 1
            self.drop(503, "Service Unavailable", "unavailable",
                      "too many requests in progress; retry with backoff", always_answer=True)
            return
        self._arm(self.limits.head_timeout_s)

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        self._forget()
        super().connection_lost(exc)

    def _forget(self) -> None:
        """No longer counted against the cap: closed, or being closed (its descriptor goes
        with the transport; counting it until connection_lost would evict a whole burst)."""
        self.guard.waiting.pop(self, None)
        if self._counted:
            self._counted = False
            self.guard.open -= 1

    def data_received(self, data: bytes) -> None:
        began_before = self._in_head
        self._completed_in_feed = False
        super().data_received(data)
        if self._in_head and not self.transport.is_closing():
            # Bytes of a chunk that also finished the previous request are not counted: with
            # pipelining the limit is then checked from the next read on (still bounded).
            if began_before or not self._completed_in_feed:
                self._head_bytes += len(data)
            if self._head_bytes > self.limits.max_header_bytes:
                self.drop(431, "Request Header Fields Too Large", "headers_too_large",
                          f"request line and headers over {self.limits.max_header_bytes} bytes "
                          "([api] max_header_bytes)", always_answer=True)

    # -- parser callbacks -----------------------------------------------------------------
    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._in_head = True
        self._head_bytes = 0

    def on_headers_complete(self) -> None:
        self._in_head = False
        self.guard.waiting.pop(self, None)
        self._arm(self.limits.body_timeout_s)
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._completed_in_feed = True
        self._disarm()  # the whole request is in; the commit has its own deadline
        super().on_message_complete()

    def on_response_complete(self) -> None:
        pipelined = bool(self.pipeline)
        super().on_response_complete()
        if pipelined or self.transport.is_closing():
            return
        self.guard.waiting[self] = None
        self._arm(self.limits.head_timeout_s)

    def send_400_response(self, msg: str) -> None:
        """httptools refused the bytes (request line, header syntax, chunked encoding): JSON, like every refusal."""
        self.drop(400, "Bad Request", "bad_request",
                  "malformed HTTP: the request line, a header or the chunked encoding is invalid", always_answer=True)

    # -- deadlines and refusals -----------------------------------------------------------
    def _arm(self, seconds: float) -> None:
        self._disarm()
        self._timer = self.loop.call_later(seconds, self._expired)

    def _disarm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _expired(self) -> None:
        self._timer = None
        what = "head" if self._in_head or self.cycle is None or self.cycle.response_complete else "body"
        timeout = self.limits.head_timeout_s if what == "head" else self.limits.body_timeout_s
        self.drop(408, "Request Timeout", "request_timeout",
                  f"the request's {what} did not arrive within {timeout:g} s "
                  f"([api] {what}_timeout_s)")

    def drop(self, status: int, phrase: str, error: str, reason: str, *, always_answer: bool = False) -> None:
        """Close the connection; answer `status` first if the client sent part of a request
        that has no answer yet (an idle connection is closed silently)."""
        self._disarm()
        self._forget()
        transport = self.transport
        if transport.is_closing():
            return
        cycle = self.cycle
        mid_request = cycle is not None and not cycle.response_complete
        if mid_request and cycle is not None and cycle.response_started:
            pass  # the app's answer is half sent: closing is all that is left
        elif always_answer or self._in_head or (mid_request and cycle is not None and not cycle.response_started):
            if cycle is not None and not cycle.response_complete:
                # The app must not answer too: it sees a disconnect on its next receive().
                cycle.response_started = cycle.response_complete = True
                cycle.disconnected = True
                cycle.message_event.set()
            transport.write(answer(status, phrase, error, reason))
        transport.close()

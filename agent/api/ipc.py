"""Messages between the agent and its API worker processes: a 4-byte length, then a pickle.

Why pickle: both ends are this package, on a socketpair that only the two processes hold
(no path, no port), and it is the cheapest way CPython has to move a list of validated
records with their dicts (about 1 us a record each way). Nothing from outside ever reaches
`loads`: HTTP bodies are parsed by orjson in the worker before anything is pickled.

Messages are tuples: what they are, the request number they answer (0: none), then data:

    agent -> worker   ("config", 0, dict)                    first, once: token and limits
                      ("ids", rid, [id, ...])                records committed
                      ("refused", rid, status, reason, index) nothing stored (409, 503, 507)
                      ("http", rid, status, headers, body)   a forwarded request's answer
    worker -> agent   ("ready", 0, pid)                      listening
                      ("ingest", rid, [(id, kind, at, src, id_given, fingerprint, cbor), ...])
                      ("http", rid, request dict, body)      any other route, for the agent's app
                      ("counts", 0, {status: [requests, records]}) metrics since the last one
    either way        ("batch", 0, [message, ...])           what became ready at once, in one wake-up
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from collections.abc import Callable
from typing import Any, cast

HEADER = struct.Struct(">I")
MAX_FRAME = 256 * 1024 * 1024  # a 64 MiB body (the config's ceiling) with its records, and room


class FrameError(Exception):
    """The other end sent something that is not a frame: a bug, so the link is dropped."""


def pack(message: tuple[Any, ...]) -> bytes:
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return HEADER.pack(len(data)) + data


class FrameReader:
    """Splits a byte stream into messages; feed() returns the complete ones."""

    def __init__(self) -> None:
        self.buf = bytearray()

    def feed(self, data: bytes) -> list[tuple[Any, ...]]:
        buf = self.buf
        buf += data
        out: list[tuple[Any, ...]] = []
        pos, end = 0, len(buf)
        while end - pos >= 4:
            (n,) = HEADER.unpack_from(buf, pos)
            if n > MAX_FRAME:
                raise FrameError(f"frame of {n} bytes (more than {MAX_FRAME})")
            if end - pos - 4 < n:
                break
            out.append(pickle.loads(memoryview(buf)[pos + 4 : pos + 4 + n]))  # noqa: S301 (our own processes only)
            pos += 4 + n
        if pos:
            del buf[:pos]
        return out


class FrameProtocol(asyncio.Protocol):
    """An asyncio end of the socketpair: each message goes to `on_message`, in order."""

    def __init__(self, on_message: Callable[[tuple[Any, ...]], None], on_lost: Callable[[Exception | None], None]):
        self.on_message = on_message
        self.on_lost = on_lost
        self.reader = FrameReader()
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass

    def data_received(self, data: bytes) -> None:
        try:
            messages = self.reader.feed(data)
        except Exception as exc:  # a broken frame: nothing after it can be trusted
            assert self.transport is not None
            self.transport.abort()
            self.on_lost(FrameError(str(exc)))
            return
        for message in messages:
            self.on_message(message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost(exc)

    def send(self, message: tuple[Any, ...]) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(pack(message))

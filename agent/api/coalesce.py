"""uvicorn's httptools protocol, writing each answer to the socket once instead of once per ASGI message.

An ASGI answer is at least two messages (the head, then the body) and uvicorn writes each
to the transport as it comes, which uvloop sends at once: two send() calls, two TCP segments
and often two wake-ups of the client for one small answer. At one record a POST that second
send cost ~8% of a worker's CPU (py-spy, docs/benchmarks.md). Writes made during one turn of
the event loop are joined and sent at the end of it, so a head and body written together
leave together, and a "100 Continue" (written while the body is awaited) still leaves in the
same turn.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class CoalescingTransport:
    """Wraps the connection's transport: write() collects, one real write per loop turn;
    everything else (flow control, close, extra info) goes to the real transport."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop):
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []

    def write(self, data: bytes) -> None:
        if not data:
            return
        if not self._pending:
            self._loop.call_soon(self.flush)
        self._pending.append(data)

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending))

    def close(self) -> None:
        self.flush()  # what was written before close() is sent, as with the plain transport
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class CoalescingHttpToolsProtocol(HttpToolsProtocol):
    """Passed to uvicorn as `http=`; the only change is the transport it writes to."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

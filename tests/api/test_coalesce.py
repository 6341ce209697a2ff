"""CoalescingTransport over a real uvloop transport on a real socketpair.

Counted at the real transport: writes made in one loop turn leave as one write, writes in
later turns are not held back (a "100 Continue" must not wait for the answer), and close()
sends what was written before it. The byte-level HTTP behaviour through the protocol is in
test_workers.py (chunked, Expect: 100-continue, pipelining, HTTP/1.0, garbage).
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from typing import Any

import uvloop

from agent.api.coalesce import CoalescingTransport


class Counting:
    """The real transport, with its write() calls recorded."""

    def __init__(self, transport: asyncio.Transport):
        self.transport = transport
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.transport.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.transport, name)


def run(body: Callable[[CoalescingTransport, Counting, socket.socket], Awaitable[None]]) -> None:
    async def main() -> None:
        loop = asyncio.get_running_loop()
        ours, theirs = socket.socketpair()
        transport, _ = await loop.create_unix_connection(asyncio.Protocol, sock=ours)
        counting = Counting(transport)  # type: ignore[arg-type]
        try:
            await body(CoalescingTransport(counting, loop), counting, theirs)  # type: ignore[arg-type]
        finally:
            transport.close()
            theirs.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main())


async def next_turn() -> None:
    """Return once the callbacks already scheduled with call_soon (the transport's flush) have
    run: call_soon runs callbacks in order, so one scheduled now runs after them. The event
    itself, where a 10 ms sleep only made it likely."""
    loop = asyncio.get_running_loop()
    done = loop.create_future()
    loop.call_soon(done.set_result, None)
    await done


def read_all(sock: socket.socket) -> bytes:
    sock.settimeout(5)
    chunks = []
    while chunk := sock.recv(65536):
        chunks.append(chunk)
    return b"".join(chunks)


def test_writes_in_one_turn_leave_as_one_write() -> None:
    async def body(t: CoalescingTransport, counting: Counting, peer: socket.socket) -> None:
        t.write(b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n")
        t.write(b"{}")
        assert counting.writes == []  # nothing sent before the turn ends
        await next_turn()
        assert counting.writes == [b"HTTP/1.1 201 Created\r\ncontent-length: 2\r\n\r\n{}"]
        assert t.get_write_buffer_size() == 0

    run(body)


def test_a_write_in_a_later_turn_is_not_held_back() -> None:
    async def body(t: CoalescingTransport, counting: Counting, peer: socket.socket) -> None:
        t.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        await next_turn()  # the client sends its body only after this arrives
        assert counting.writes == [b"HTTP/1.1 100 Continue\r\n\r\n"]
        peer.settimeout(5)
        assert peer.recv(100) == b"HTTP/1.1 100 Continue\r\n\r\n"
        t.write(b"HTTP/1.1 201 Created\r\n\r\n")
        await next_turn()
        assert len(counting.writes) == 2

    run(body)


def test_close_sends_what_was_written_before_it() -> None:
    async def body(t: CoalescingTransport, counting: Counting, peer: socket.socket) -> None:
        t.write(b"HTTP/1.1 400 Bad Request\r\n")
        t.write(b"connection: close\r\n\r\n")
        t.close()
        await next_turn()
        assert counting.writes == [b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"]
        assert t.is_closing()  # delegated to the real transport
        assert await asyncio.to_thread(read_all, peer) == b"HTTP/1.1 400 Bad Request\r\nconnection: close\r\n\r\n"

    run(body)


def test_writes_after_the_peer_closed_are_dropped_quietly() -> None:
    async def body(t: CoalescingTransport, counting: Counting, peer: socket.socket) -> None:
        counting.transport.close()  # as when the client has gone
        t.write(b"late")
        await next_turn()
        assert counting.writes == []

    run(body)

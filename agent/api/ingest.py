"""The hot route as raw ASGI, in front of the FastAPI app.

FastAPI's routing, dependency resolution and response classes cost more per request than
validating and committing a one-record POST (measured: see docs/api.md, "Why raw ASGI"),
so POST /v1/records is answered here and everything else falls through to FastAPI. The
FastAPI app still declares the route (same IngestCore behind it), so /openapi.json
documents it and the app works without this wrapper.
"""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from agent.api.ingest_core import IngestCore, Reply

PATH = "/v1/records"
_JSON_HEADERS = [(b"content-type", b"application/json")]
_WANTED = {b"authorization", b"content-type", b"content-length", b"x-coop-source"}


async def _send(send: Send, reply: Reply) -> None:
    headers = list(_JSON_HEADERS)
    headers.append((b"content-length", str(len(reply.body)).encode()))
    if reply.status == 401:
        headers.append((b"www-authenticate", b"Bearer"))
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})


class ClientGone(Exception):
    """The client disconnected before its body arrived: nothing to validate, nobody to answer."""


async def read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole body, or None as soon as it passes `limit` (chunked uploads have no length)."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return chunks[0] if len(chunks) == 1 else b"".join(chunks)


class FastIngest:
    """ASGI middleware: POST /v1/records goes to IngestCore directly, the rest to `app`."""

    def __init__(self, app: ASGIApp, core: IngestCore):
        self.app = app
        self.core = core

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        h: dict[bytes, Any] = {}
        for name, value in scope["headers"]:
            if name in _WANTED:
                h[name] = value
        pre = self.core.precheck(
            h.get(b"authorization"), h.get(b"content-type"), h.get(b"content-length"), h.get(b"x-coop-source")
        )
        if isinstance(pre, Reply):
            await _send(send, pre)
            return
        try:
            body = await read_body(receive, self.core.max_body_bytes)
        except ClientGone:
            return
        if body is None:
            await _send(send, self.core.too_large())
            return
        await _send(send, await self.core.handle(body, pre))

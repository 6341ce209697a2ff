"""POST /v1/records, independent of the HTTP framework: headers in, (status, JSON bytes) out.

Both the raw ASGI fast path (agent.api.ingest) and the FastAPI route use this, so the
contract lives in one place. Order of checks: token (401), content type (415), size (413),
JSON and shape (400), then the sink validates and commits (422, 409, 507, 503) and we answer
201 only once the sink's future says the group commit is on disk.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

import orjson

from agent.api import metrics
from core.auth import bearer_ok
from core.interfaces import RecordRejected, RecordSink
from wire.records import JsonRecords

log = logging.getLogger(__name__)

SOURCE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:-]{0,59}$")
DEFAULT_SRC = "api"
# A commit normally takes milliseconds; past this the buffer is wedged. The records may still
# land later, so the answer says to re-post with the same ids (idempotent) rather than new ones.
COMMIT_TIMEOUT_S = 30.0
# Records nest a few levels ({"records": [{"data": {"lines": [{...}]}}]}); 32 leaves room for
# any POS's own maps and keeps every recursive walk after parsing (validation, CBOR, the
# fingerprint) far from Python's recursion limit. orjson alone allows 1,024.
MAX_JSON_DEPTH = 32
API_REFUSED_KINDS = {"media": "media records are made by the agent's cameras with their file; they cannot be posted"}

ERROR_WORDS = {
    400: "bad_request",
    401: "unauthorized",
    409: "conflict",
    413: "too_large",
    415: "unsupported_media_type",
    422: "invalid_record",
    500: "internal_error",
    503: "unavailable",
    507: "buffer_full",
}


class _Duplicate(Exception):
    pass


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        for k, _ in pairs:
            if k in seen:
                raise _Duplicate(k)
            seen.add(k)
    return out


class _TooDeep(Exception):
    pass


def _members(obj: Any, depth: int) -> int:
    """Members of every object under `obj` (a dict or list); _TooDeep past MAX_JSON_DEPTH.
    Recursive: measured faster than a loop with a stack, and bounded by that depth."""
    if depth > MAX_JSON_DEPTH:
        raise _TooDeep
    if type(obj) is dict:
        n = len(obj)
        values: Any = obj.values()
    else:
        n = 0
        values = obj
    for v in values:
        t = type(v)
        if t is dict or t is list:
            n += _members(v, depth + 1)
    return n


def json_shape_problem(body: bytes, doc: Any) -> str | None:
    """Nesting past MAX_JSON_DEPTH, or a key twice in one object (orjson keeps the last one
    silently; a record is evidence, so which value was meant is not ours to guess).

    One walk over the containers counts object members; JSON has one ':' per member outside
    strings, so when the body holds exactly as many ':' as the parse kept members, no key
    was repeated and nothing more is done (1.8 us for a one-sale body, 1.4 us a record at
    100). Otherwise (a ':' inside a string, or a duplicate) the body is parsed again by the
    json module, which names the repeated key.
    """
    try:
        members = _members(doc, 1)
    except _TooDeep:
        return f"JSON nested deeper than {MAX_JSON_DEPTH} levels"
    if members == body.count(b":"):
        return None
    try:
        json.loads(body, object_pairs_hook=_no_duplicates)
    except _Duplicate as exc:
        return f"key {str(exc)[:64]!r} appears twice in one JSON object; send each key once"
    except ValueError:  # orjson accepted it; nothing here is a duplicate
        pass
    return None


@dataclass(frozen=True)
class Reply:
    status: int
    body: bytes


def error(status: int, reason: str, index: int | None = None) -> Reply:
    doc: dict[str, Any] = {"error": ERROR_WORDS[status], "reason": reason}
    if index is not None:
        doc["index"] = index
    metrics.count(status, 0)
    return Reply(status, orjson.dumps(doc))


def content_type_ok(value: bytes | None) -> bool:
    """application/json, with or without parameters; JSON is UTF-8 (RFC 8259), so no other charset."""
    if value is None:
        return False
    media, _, params = value.partition(b";")
    if media.strip().lower() != b"application/json":
        return False
    charset = params.strip().lower()
    return not charset or charset.replace(b" ", b"") in (b"charset=utf-8", b'charset="utf-8"')


def _copy_outcome(src: Future[list[str]], dst: asyncio.Future[list[str]]) -> None:
    if dst.done():  # timed out or cancelled meanwhile
        return
    exc = src.exception()
    if exc is not None:
        dst.set_exception(exc)
    else:
        dst.set_result(src.result())


def _expire(waiter: asyncio.Future[list[str]]) -> None:
    if not waiter.done():
        waiter.set_exception(TimeoutError())


async def committed(future: Future[list[str]], timeout: float) -> list[str]:
    """Await the sink's concurrent future from the event loop, with a deadline.

    Like asyncio.shield(asyncio.wrap_future(f)) under asyncio.timeout(): the loop is free
    meanwhile and a cancelled request never cancels the sink's future (the writer thread
    resolves it after COMMIT whatever happens here). Written out because that stack cost
    40-68 us a request on this machine against 17-30 us for these few lines, which matters
    at one record per POST.
    """
    loop = asyncio.get_running_loop()
    waiter: asyncio.Future[list[str]] = loop.create_future()

    def done(src: Future[list[str]]) -> None:  # runs in the writer thread
        try:
            loop.call_soon_threadsafe(_copy_outcome, src, waiter)
        except RuntimeError:  # the loop is closed: the server stopped, nobody waits any more
            pass

    future.add_done_callback(done)
    timer = loop.call_later(timeout, _expire, waiter)
    try:
        return await waiter
    finally:
        timer.cancel()


Commit = Callable[[list[Any]], Awaitable[list[str]]]
"""Validate, encode and durably commit parsed records; returns their ids or raises RecordRejected
(or TimeoutError past COMMIT_TIMEOUT_S). In the agent's process that is the buffer itself
(local_commit); in an API worker process, the round trip to the agent (agent.api.worker)."""


def local_commit(sink: RecordSink) -> Commit:
    async def commit(records: list[Any]) -> list[str]:
        return await committed(sink.submit_nowait(records), COMMIT_TIMEOUT_S)

    return commit


class IngestCore:
    def __init__(self, commit: Commit, token: bytes, max_body_bytes: int, max_records: int):
        self.commit = commit
        self.token = token
        self.max_body_bytes = max_body_bytes
        self.max_records = max_records

    def precheck(
        self,
        authorization: bytes | None,
        content_type: bytes | None,
        content_length: bytes | None,
        source: bytes | None,
    ) -> Reply | str:
        """Everything decidable from the headers; returns the record's default src, or the refusal."""
        if not bearer_ok(authorization, self.token):
            return error(401, "missing or wrong bearer token (Authorization: Bearer <token from [api] token_file>)")
        if not content_type_ok(content_type):
            shown = content_type.decode("latin-1")[:60] if content_type else "none"
            return error(415, f"Content-Type must be application/json (got {shown})")
        if content_length is not None:
            if not content_length.isdigit():
                return error(400, "Content-Length is not a number")
            if int(content_length) > self.max_body_bytes:
                return self.too_large()
        if source is None:
            return DEFAULT_SRC
        name = source.decode("latin-1")
        if not SOURCE_RE.match(name):
            return error(
                400,
                "X-Coop-Source must be 1 to 60 characters of letters, digits, '.', '_', ':' "
                f"or '-', starting with a letter or digit (got {name[:64]!r})",
            )
        return f"{DEFAULT_SRC}:{name}"

    def too_large(self) -> Reply:
        return error(
            413,
            f"body over {self.max_body_bytes} bytes ([api] max_body_bytes); split the records into several requests",
        )

    def parse(self, body: bytes, src: str) -> Reply | list[Any]:
        """JSON and the envelope's shape; fills the default src into records that have none."""
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return error(400, f"body is not valid JSON: {exc}")
        if type(doc) is not dict or "records" not in doc:
            return error(400, 'body must be a JSON object {"records": [...]}')
        problem = json_shape_problem(body, doc)
        if problem is not None:
            return error(400, problem)
        if len(doc) > 1:
            extra = sorted(k for k in doc if k != "records")
            return error(400, f'unknown key {extra[0]!r} at top level; the body is {{"records": [...]}}')
        records = doc["records"]
        if type(records) is not list:
            return error(400, "records must be a list")
        if not records:
            return error(400, "records is empty; send at least one record")
        if len(records) > self.max_records:
            return error(
                413,
                f"{len(records)} records in one request; at most {self.max_records} ([api] max_records_per_request)",
            )
        for i, rec in enumerate(records):
            if type(rec) is dict:
                if rec.get("src") is None:
                    rec["src"] = src
                kind = rec.get("kind")
                refused = API_REFUSED_KINDS.get(kind) if type(kind) is str else None
                if refused is not None:
                    return error(422, f"records[{i}].kind: {refused}", i)
        return JsonRecords(records)

    async def submit(self, records: list[Any]) -> Reply:
        """Hand the records to the sink and wait, without blocking the loop, for the durable commit."""
        try:
            ids = await self.commit(records)
        except RecordRejected as exc:
            reason = exc.reason
            if exc.index is not None and not reason.startswith("records["):
                reason = f"records[{exc.index}]: {reason}"
            return error(exc.status, reason, exc.index)
        except TimeoutError:
            log.error("buffer did not confirm a commit within %g s", COMMIT_TIMEOUT_S)
            return error(
                503,
                f"the buffer did not confirm the commit within {COMMIT_TIMEOUT_S:g} s; the "
                "records may or may not be stored: re-post them with the same ids",
            )
        except Exception:
            log.exception("ingest failed")
            return error(500, "internal error; see the agent's log")
        metrics.count(201, len(ids))
        return Reply(201, orjson.dumps({"ids": ids}))

    async def handle(self, body: bytes, src: str) -> Reply:
        if len(body) > self.max_body_bytes:
            return self.too_large()
        parsed = self.parse(body, src)
        if isinstance(parsed, Reply):
            return parsed
        return await self.submit(parsed)

"""Signed central -> agent messages (acks and commands) and the topic names of uplink-v1."""

from __future__ import annotations

import re
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from agent.cose import dumps_deterministic, kid_for, protected_header, sign1

COMMANDS = ("resend", "ping", "snapshot", "clip")
_INDEX_RE = re.compile(r"^(0|[1-9][0-9]{0,8})$")


@dataclass(frozen=True)
class Topic:
    """A parsed inbound topic: PREFIX/SOC/BR/DEV/(batch|status|media/ID/INDEX)."""

    dev: str
    kind: str  # batch | status | media
    media_id: str = ""
    index: int = -1


def parse_topic(prefix: str, topic: str) -> Topic | None:
    if not topic.startswith(prefix + "/"):
        return None
    parts = topic[len(prefix) + 1 :].split("/")
    if len(parts) < 4:
        return None
    dev = "/".join(parts[:3])
    rest = parts[3:]
    if rest in (["batch"], ["status"]):
        return Topic(dev, rest[0])
    if len(rest) == 3 and rest[0] == "media":
        index = int(rest[2]) if _INDEX_RE.match(rest[2]) else -1
        return Topic(dev, "media", rest[1], index)
    return None


def device_topic(prefix: str, dev: str, leaf: str) -> str:
    return f"{prefix}/{dev}/{leaf}"


class Signer:
    """The central key with its kid and encoded protected header, made once."""

    def __init__(self, key: Ed25519PrivateKey):
        self.key = key
        self.kid = kid_for(key.public_key())
        self._protected = protected_header(self.kid)

    def sign(self, payload: Mapping[str, Any]) -> bytes:
        return sign1(dumps_deterministic(dict(payload)), self.key, protected=self._protected)


def seq_ack(signer: Signer, dev: str, seq: int) -> bytes:
    """Every batch of `dev` up to and including `seq` is stored durably here."""
    return signer.sign({"v": 1, "dev": dev, "seq": seq})


def media_ack(signer: Signer, dev: str, media_id: str, missing: list[int]) -> bytes:
    """`missing` empty: the file is complete and verified; else: send these chunks again."""
    return signer.sign({"v": 1, "dev": dev, "media": media_id, "missing": missing})


def check_command_args(cmd: str, args: Mapping[str, Any]) -> None:
    """The spec's argument shapes, so a typo fails here and not silently at the branch."""

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            raise ValueError(f"{cmd}: argument {key} = {args.get(key)!r}; {what}")

    if cmd not in COMMANDS:
        raise ValueError(f"unknown command {cmd!r}; version 1 commands are {', '.join(COMMANDS)}")
    if cmd == "resend":
        need("from_seq", type(args.get("from_seq")) is int and args["from_seq"] >= 1, "must be an integer >= 1")
    if cmd in ("clip", "snapshot"):
        need("camera", isinstance(args.get("camera"), str) and bool(args.get("camera")), "must be a camera id")
    if cmd == "clip":
        for key in ("start", "end"):
            need(key, type(args.get(key)) is int and args[key] >= 0, "must be epoch milliseconds")
        need("end", args["end"] > args["start"], "must be after start")


def command(
    signer: Signer,
    dev: str,
    cmd: str,
    args: Mapping[str, Any],
    cmd_id: str | None = None,
    at_ms: int | None = None,
) -> tuple[str, bytes]:
    """A signed command; returns (id, COSE bytes). The id is what the agent's answer names."""
    check_command_args(cmd, args)
    cid = cmd_id or str(uuid.uuid4())
    at = at_ms if at_ms is not None else int(time.time() * 1000)
    return cid, signer.sign({"v": 1, "dev": dev, "id": cid, "cmd": cmd, "args": dict(args), "at": at})

"""Signed central -> agent messages of uplink-v1: acks and commands (spec: Acks and commands)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from typing import Any

from wire.cose import Signer

COMMANDS = ("resend", "ping", "snapshot", "clip")


def seq_ack(signer: Signer, dev: str, seq: int) -> bytes:
    """Every batch of `dev` up to and including `seq` is stored durably here."""
    return signer.sign_map({"v": 1, "dev": dev, "seq": seq})


def media_ack(signer: Signer, dev: str, media_id: str, missing: list[int]) -> bytes:
    """`missing` empty: the file is complete and verified; else: send these chunks again."""
    return signer.sign_map({"v": 1, "dev": dev, "media": media_id, "missing": missing})


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
    return cid, signer.sign_map({"v": 1, "dev": dev, "id": cid, "cmd": cmd, "args": dict(args), "at": at})

"""Signed central -> agent messages of uplink-v1: acks and commands (spec: Acks and commands).

The centre builds them (seq_ack, media_ack, command); the agent checks them before anything
acts on one (CentralVerifier): every message is a COSE_Sign1 from the central key, and
anything else is refused with a reason that the uplink records as a device_event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.interfaces import Command
from wire.cose import CoseError, Signer, kid_for, verify1

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


# ---------------------------------------------------------------- the agent's side


class Refused(Exception):
    """A central message that must not be acted on; str() is the reason (no key material)."""


@dataclass(frozen=True)
class SeqAck:
    seq: int


@dataclass(frozen=True)
class MediaAck:
    media_id: str
    missing: tuple[int, ...]


class CentralVerifier:
    def __init__(self, central_key: Ed25519PublicKey, device: str):
        self.keys = {kid_for(central_key): central_key}
        self.device = device

    def _open(self, message: bytes, what: str) -> Mapping[str, Any]:
        try:
            verified = verify1(message, self.keys)
        except CoseError as exc:
            raise Refused(f"{what}: {exc}") from None
        p = verified.payload
        if not isinstance(p, Mapping):
            raise Refused(f"{what}: payload is not a map")
        if p.get("v") != 1:
            raise Refused(f"{what}: unsupported version {p.get('v')!r}")
        if p.get("dev") != self.device:
            raise Refused(f"{what}: for device {p.get('dev')!r}, not {self.device!r}")
        return p

    def ack(self, message: bytes) -> SeqAck | MediaAck:
        p = self._open(message, "ack")
        if "seq" in p:
            seq = p["seq"]
            if type(seq) is not int or seq < 0:
                raise Refused(f"ack: seq {seq!r} is not a non-negative integer")
            return SeqAck(seq)
        media, missing = p.get("media"), p.get("missing")
        if isinstance(media, str) and isinstance(missing, (list, tuple)) and \
                all(type(i) is int and i >= 0 for i in missing):
            return MediaAck(media, tuple(missing))
        raise Refused("ack: neither {seq} nor {media, missing}")

    def command(self, message: bytes, now_ms: int, max_skew_ms: int) -> Command:
        p = self._open(message, "command")
        cid, cmd, args, at = p.get("id"), p.get("cmd"), p.get("args", {}), p.get("at")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 128:
            raise Refused("command: id must be text of 1 to 128 characters")
        if not isinstance(cmd, str):
            raise Refused(f"command {cid}: cmd must be text")
        if not isinstance(args, Mapping):
            raise Refused(f"command {cid}: args must be a map")
        if type(at) is not int:
            raise Refused(f"command {cid}: at must be epoch milliseconds")
        if abs(now_ms - at) > max_skew_ms:
            raise Refused(f"command {cid}: at {at} is {abs(now_ms - at) // 1000} s from the agent's clock "
                          f"(at most {max_skew_ms // 1000} s allowed): stale or replayed")
        return Command(id=cid, cmd=cmd, args=dict(args), at=at)

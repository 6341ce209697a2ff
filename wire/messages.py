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
from wire.cose import CoseError, Signer, kid_for, show, verify1
from wire.deterministic import is_deterministic

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
    """A central message that must not be acted on; str() is the reason (no key material,
    bounded in length). `code` is the kind of refusal in a word (the uplink rate-limits the
    records of refusals by kind): malformed, alg, kid, signature, payload (the COSE layer),
    oversize, version, device, fields, stale, unsealed, replay."""

    def __init__(self, reason: str, code: str):
        super().__init__(reason)
        self.code = code


@dataclass(frozen=True)
class SeqAck:
    seq: int


@dataclass(frozen=True)
class MediaAck:
    media_id: str
    missing: tuple[int, ...]


# Acks and commands are a few hundred bytes; the cap is the spec's whole-payload limit, checked
# before any decoding so an oversize message costs nothing but its reading.
DEFAULT_MAX_BYTES = 256 * 1024


class CentralVerifier:
    """Checks central messages: every outcome is a message the centre signed, or Refused.

    Beyond the signature, the payload must be in deterministic encoding, as the spec says of
    every signed payload (the receiver refuses batches that are not): that also refuses
    duplicate map keys, which two decoders could read differently (RFC 8949 section 5.6).
    """

    def __init__(self, central_key: Ed25519PublicKey, device: str, max_bytes: int = DEFAULT_MAX_BYTES):
        self.keys = {kid_for(central_key): central_key}
        self.device = device
        self.max_bytes = max_bytes

    def _open(self, message: bytes, what: str) -> Mapping[str, Any]:
        if len(message) > self.max_bytes:
            raise Refused(f"{what}: {len(message)} bytes, over the {self.max_bytes} allowed", "oversize")
        try:
            verified = verify1(message, self.keys)
        except CoseError as exc:
            raise Refused(f"{what}: {exc}", exc.code) from None
        p = verified.payload
        try:
            deterministic = is_deterministic(p, verified.payload_bytes)
        except Exception:  # a value the encoder cannot write (tag 28 cycles): not deterministic either
            deterministic = False
        if not deterministic:
            raise Refused(f"{what}: payload is not in deterministic encoding (RFC 8949 4.2.1)", "payload")
        if not isinstance(p, Mapping):
            raise Refused(f"{what}: payload is not a map", "fields")
        v = p.get("v")
        if type(v) is not int or v != 1:  # True == 1.0 == 1 in Python
            raise Refused(f"{what}: unsupported version {show(v)}", "version")
        if p.get("dev") != self.device:
            raise Refused(f"{what}: for device {show(p.get('dev'))}, not {self.device!r}", "device")
        return p

    def ack(self, message: bytes) -> SeqAck | MediaAck:
        p = self._open(message, "ack")
        if "seq" in p:
            seq = p["seq"]
            if type(seq) is not int or seq < 0:
                raise Refused(f"ack: seq {show(seq)} is not a non-negative integer", "fields")
            return SeqAck(seq)
        media, missing = p.get("media"), p.get("missing")
        if isinstance(media, str) and isinstance(missing, (list, tuple)) and \
                all(type(i) is int and i >= 0 for i in missing):
            return MediaAck(media, tuple(missing))
        raise Refused("ack: neither {seq} nor {media, missing}", "fields")

    def command(self, message: bytes, now_ms: int, max_skew_ms: int) -> Command:
        p = self._open(message, "command")
        cid, cmd, args, at = p.get("id"), p.get("cmd"), p.get("args", {}), p.get("at")
        if not isinstance(cid, str) or not 1 <= len(cid) <= 128:
            raise Refused("command: id must be text of 1 to 128 characters", "fields")
        if not isinstance(cmd, str) or not 1 <= len(cmd) <= 64:
            raise Refused(f"command {cid}: cmd must be text of 1 to 64 characters", "fields")
        if not isinstance(args, Mapping):
            raise Refused(f"command {cid}: args must be a map", "fields")
        if type(at) is not int:
            raise Refused(f"command {cid}: at must be epoch milliseconds", "fields")
        if abs(now_ms - at) > max_skew_ms:
            raise Refused(f"command {cid}: at {show(at)} is {show(abs(now_ms - at) // 1000)} s from the agent's "
                          f"clock (at most {max_skew_ms // 1000} s allowed): stale or replayed", "stale")
        return Command(id=cid, cmd=cmd, args=dict(args), at=at)

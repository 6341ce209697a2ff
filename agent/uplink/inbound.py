"""Verifying what the centre sends (acks, commands) before anything acts on it.

Every message is a COSE_Sign1 from the central key (spec: Acks and commands); anything
else is refused with a reason that the uplink records as a device_event.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from core.interfaces import Command
from wire.cose import CoseError, kid_for, verify1


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

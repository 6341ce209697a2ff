"""`coopagent scale detect PORT`: which protocol and line settings read this scale.

For each usual baud rate the port is opened at 8N1 and listened to (streaming protocols),
then each polled protocol's request is sent, once as 8N1 and once as 7E1 (the parity bit put
in bit 7 by software: on the wire that is exactly a 7E1 character, so one 8N1 port serves
both). What came back is replayed through every registered protocol and its variants
(`Protocol.variants`, e.g. checksum on/off); a 7-bit device with parity shows its parity
bit in bit 7 of what an 8N1 port reads (diagnose.parity_in_bit7), which names 7E1 or 7O1.
Settings that parse frames are ranked by frames understood minus frames refused.

Bounded: at most len(BAUD_RATES) x (1 + 2 x polled protocols) dwells of `dwell_s`
(4 x 5 x 0.5 s = 10 s); it stops after the first baud rate that reads unless `all_rates`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from drivers.serial.diagnose import parity_in_bit7, scale_config, toml_value
from drivers.serial.port import open_port
from drivers.serial.portcfg import PortSettings
from drivers.serial.scales import PROTOCOLS, ScaleConfigBase, make_protocol

BAUD_RATES = (9600, 4800, 2400, 19200)


@dataclass
class Match:
    protocol: str
    settings: dict[str, Any]  # the keys to write in [[scales]], protocol first
    frames: int
    refused: int
    example: str

    @property
    def score(self) -> int:
        return self.frames - self.refused

    def as_dict(self) -> dict[str, Any]:
        return {
            "settings": self.settings,
            "frames": self.frames,
            "refused": self.refused,
            "example": self.example,
        }

    def toml(self) -> str:
        return ", ".join(f"{k} = {toml_value(v)}" for k, v in self.settings.items())


@dataclass
class Attempt:
    baudrate: int
    asked: str | None  # the request sent, e.g. "mt-sics SI as 7E1"; None: listened only
    bytes_seen: int


@dataclass
class Result:
    port: str
    matches: list[Match] = field(default_factory=list)
    attempts: list[Attempt] = field(default_factory=list)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "port": self.port,
            "matches": [m.as_dict() for m in self.matches],
            "tried": [a.__dict__ for a in self.attempts],
            "seconds": round(self.seconds, 1),
        }


def with_parity(data: bytes, parity: str) -> bytes:
    """Characters as a 7-bit device with parity sends them, for an 8N1 port to write."""
    out = bytearray()
    for b in data:
        ones = bin(b & 0x7F).count("1") & 1
        bit = ones if parity == "E" else 1 - ones
        out.append((b & 0x7F) | (bit << 7))
    return bytes(out)


def _candidates(protocols: list[str], port: str) -> list[tuple[dict[str, Any], ScaleConfigBase]]:
    out = []
    for name in protocols:
        for variant in ({}, *PROTOCOLS[name].variants):
            cfg = scale_config({"name": "detect", "port": port, "protocol": name, **variant})
            if cfg is not None:
                out.append(({"protocol": name, **variant}, cfg))
    return out


def evaluate(data: bytes, baudrate: int, protocols: list[str], port: str) -> list[Match]:
    """Every candidate setting that understands `data` (as read by an 8N1 port at baudrate)."""
    parity = parity_in_bit7(data)
    line: dict[str, Any] = {"baudrate": baudrate}
    if parity is not None:
        line |= {"bytesize": 7, "parity": parity}
        data = bytes(b & 0x7F for b in data)
    else:
        line |= {"bytesize": 8, "parity": "N"}
    found = []
    for settings, cfg in _candidates(protocols, port):
        proto = make_protocol(cfg)
        readings = proto.feed(data)
        good = [r for r in readings if r.refused is None and r.status != "error"]
        refused = len(readings) - len(good) + sum(proto.dropped.values())
        if len(good) >= 2 and len(good) > refused:
            r = good[0]
            example = r.status if r.grams is None else f"{r.grams / 1000:.3f} kg {r.status}"
            found.append(Match(settings["protocol"], {**settings, **line}, len(good), refused, example))
    return found


def _listen(port: Any, dwell_s: float, request: bytes | None) -> bytes:
    port.reset_input_buffer()
    data = bytearray()
    deadline = time.monotonic() + dwell_s
    next_ask = 0.0
    while (now := time.monotonic()) < deadline:
        if request is not None and now >= next_ask:
            port.write(request)
            next_ask = now + dwell_s / 4  # a few requests: the first may meet a half-read line
        data += port.read(max(1, port.in_waiting))
    return bytes(data)


def detect(
    path: str,
    dwell_s: float = 0.5,
    all_rates: bool = False,
    progress: Callable[[str], None] = lambda _msg: None,
) -> Result:
    started = time.monotonic()
    result = Result(path)
    streaming = [n for n in PROTOCOLS if _poll(n, path) is None]
    polled = [n for n in PROTOCOLS if _poll(n, path) is not None]
    for baud in BAUD_RATES:
        settings = PortSettings(name="detect", port=path, baudrate=baud)
        with open_port(settings, timeout=0.02) as port:
            progress(f"{baud} baud 8N1: listening")
            data = _listen(port, dwell_s, None)
            result.attempts.append(Attempt(baud, None, len(data)))
            found = evaluate(data, baud, streaming + polled, path) if data else []
            if not found:
                for name in polled:
                    request = _poll(name, path)
                    assert request is not None
                    for line, wire in (("8N1", request), ("7E1", with_parity(request, "E"))):
                        progress(f"{baud} baud: asking {name} {request!r} as {line}")
                        data = _listen(port, dwell_s, wire)
                        result.attempts.append(Attempt(baud, f"{name} {request!r} as {line}", len(data)))
                        found += evaluate(data, baud, [name], path)
                        if found:
                            break
        result.matches += found
        if found and not all_rates:
            break
    order = list(PROTOCOLS)
    result.matches.sort(key=lambda m: (-m.score, len(m.settings), order.index(m.protocol)))
    result.seconds = time.monotonic() - started
    return result


def _poll(name: str, path: str) -> bytes | None:
    cfg = scale_config({"name": "detect", "port": path, "protocol": name})
    return None if cfg is None else make_protocol(cfg).poll_command()

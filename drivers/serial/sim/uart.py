"""What a receiving UART makes of a transmitter's bytes when the two ends' line settings differ.

A pseudo-terminal carries bytes, not bits: the kernel enforces neither baud rate nor parity,
so a simulator on a pty can only show a misconfigured reader what the field shows it if the
misreading is computed. This module does it bit by bit, as a UART does: each byte goes out
as a start bit, data bits (LSB first), an optional parity bit and stop bits at the
transmitter's rate; the receiver waits for a falling edge, samples the middle of each of its
own bit times at its own rate, and delivers the data bits. Parity and framing errors are
delivered as received, which is what Linux does for pyserial (it clears INPCK).

Each call is one burst: the line idles (high) before and after it, so the receiver
resynchronises at the next write, as it does after the pause between two frames.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Line:
    baudrate: int = 9600
    bytesize: int = 8
    parity: str = "N"
    stopbits: int = 1

    @classmethod
    def of(cls, settings: dict[str, Any]) -> Line:
        return cls(
            int(settings.get("baudrate", 9600)),
            int(settings.get("bytesize", 8)),
            str(settings.get("parity", "N")),
            int(settings.get("stopbits", 1)),
        )

    def __str__(self) -> str:
        return f"{self.baudrate} {self.bytesize}{self.parity}{self.stopbits}"


def parity_bit(value: int, parity: str) -> int:
    ones = bin(value).count("1") & 1
    return ones if parity == "E" else 1 - ones


def bits(data: bytes, line: Line) -> list[int]:
    out: list[int] = []
    mask = (1 << line.bytesize) - 1
    for b in data:
        v = b & mask
        out.append(0)
        out.extend((v >> i) & 1 for i in range(line.bytesize))
        if line.parity != "N":
            out.append(parity_bit(v, line.parity))
        out.extend([1] * line.stopbits)
    return out


def receive(data: bytes, tx: Line, rx: Line) -> bytes:
    """The bytes rx's UART delivers for `data` sent with tx's settings (one burst)."""
    stream = bits(data, tx)
    n = len(stream)
    ratio = tx.baudrate / rx.baudrate  # transmitter bit times per receiver bit time

    def level(pos: float) -> int:
        i = math.floor(pos + 1e-9)
        return stream[i] if 0 <= i < n else 1

    out = bytearray()
    frame_bits = 1 + rx.bytesize + (rx.parity != "N")
    i = 0
    while i < n:
        if stream[i] != 0 or (i > 0 and stream[i - 1] != 1):
            i += 1
            continue
        if level(i + 0.5 * ratio) != 0:  # a glitch shorter than half a bit is no start bit
            i += 1
            continue
        v = 0
        for k in range(rx.bytesize):
            v |= level(i + (1.5 + k) * ratio) << k
        out.append(v)
        # the next start bit is looked for after the middle of the stop bit
        i = max(i + 1, math.ceil(i + (frame_bits + 0.5) * ratio - 1e-9))
    return bytes(out)


def on_wire(data: bytes, line: Line) -> bytes:
    """What an 8-data-bit, no-parity receiver at the same rate gets: a 7E1/7O1 device's parity
    bit lands in bit 7 (a pty, and a reader set to 8N1, see exactly this)."""
    return receive(data, line, Line(line.baudrate, 8, "N", 1))

"""Toledo 8213/8217 demand protocol: single-letter commands, 9600 7E1, no terminator on commands.

`W` asks for the weight; the answer is `STX weight CR` (digits with a decimal point, in the unit
the scale is set to; the format carries no unit) or, when the weight is not valid, `STX ? status CR`.
Status byte bits (8213 "demand" status record): 0 motion, 1 over capacity, 2 under zero,
3 outside zero capture range, 4 center of zero, 5 and 6 always 1, 7 parity.
`Z` zeroes, `T` tares, `C` clears the tare; each is answered with a status record.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from drivers.serial.framing import StxFramer
from drivers.serial.scales.base import Reading, ScaleConfigBase, ScaleProtocol, to_grams

_WEIGHT = re.compile(rb"^\x02\s*([-+]?[0-9]*\.?[0-9]+)\s*\r$")
_STATUS = re.compile(rb"^\x02\?(.)\r$", re.DOTALL)

MOTION, OVER, UNDER, OUTSIDE_ZERO, CENTER_ZERO = 0x01, 0x02, 0x04, 0x08, 0x10


class Config(ScaleConfigBase):
    protocol: Literal["toledo-8217"]
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O"] = "E"
    unit: Literal["kg", "lb", "g"] = Field(
        "kg", description="the unit the scale is set to (the format has none)"
    )


class Protocol(ScaleProtocol):
    name = "toledo-8217"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config
        self.framer = StxFramer(terminator=0x0D, max_len=min(config.max_frame_bytes, 32))

    def feed(self, data: bytes) -> list[Reading]:
        return [parse_frame(f, self.cfg.unit) for f in self.framer.feed(data)]

    def poll_command(self) -> bytes:
        return b"W"

    def zero_command(self) -> bytes:
        return b"Z"

    def tare_command(self) -> bytes:
        return b"T"

    def clear_tare_command(self) -> bytes:
        return b"C"


def status_reading(status: int) -> Reading:
    flags = {
        "motion": bool(status & MOTION),
        "over_capacity": bool(status & OVER),
        "under_zero": bool(status & UNDER),
        "outside_zero_range": bool(status & OUTSIDE_ZERO),
        "center_of_zero": bool(status & CENTER_ZERO),
    }
    detail = {"status": status, **{k: v for k, v in flags.items() if v}}
    if flags["over_capacity"]:
        return Reading("overload", detail=detail)
    if flags["under_zero"]:
        return Reading("underload", detail=detail)
    if flags["motion"]:
        return Reading("motion", detail=detail)
    return Reading("info", detail=detail)


def parse_frame(frame: bytes, unit: str) -> Reading:
    m = _STATUS.match(frame)
    if m:
        return status_reading(m.group(1)[0])
    m = _WEIGHT.match(frame)
    if m:
        grams = to_grams(m.group(1).decode("ascii"), unit)
        if grams is not None:
            return Reading("stable", grams=grams)
    return Reading(
        "error",
        detail={"error": "unrecognised frame", "frame": frame[:32].hex()},
        refused="not a Toledo 8213/8217 answer",
    )

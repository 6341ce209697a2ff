"""Toledo continuous output: `STX SWA SWB SWC weight(6) [tare(6)] CR [checksum]`, streamed unasked.

Status word A bits 0-2: decimal point position (0: XXXX00, 1: XXXXX0, 2: XXXXXX, 3: XXXXX.X,
4: XXXX.XX, 5: XXX.XXX, 6: XX.XXXX, 7: X.XXXXX). Status word B: bit 0 net, bit 1 negative,
bit 2 out of range (over/under), bit 3 motion, bit 4 kg (else lb), bit 6 not zeroed at power up.
Status word C bits 0-2: the unit when it is not lb/kg (0: lb or kg as SWB bit 4 says, 1: g,
2: t); older indicators send 0 there always. A unit code we do not know refuses the frame
rather than reading grams as pounds (tests/serial/test_manual_frames.py cites the manuals).
The checksum is the two's complement of the 7-bit sum of all characters from STX to CR.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Literal

from pydantic import Field

from drivers.serial.framing import StxFramer
from drivers.serial.scales.base import UNIT_GRAMS, Reading, ScaleConfigBase, ScaleProtocol

# decimal point code -> power of ten applied to the 6-digit integer
_SCALE = {0: 2, 1: 1, 2: 0, 3: -1, 4: -2, 5: -3, 6: -4, 7: -5}
# status word C bits 0-2 -> unit; None: lb or kg, as status word B bit 4 says
_SWC_UNITS: dict[int, str | None] = {0: None, 1: "g", 2: "t"}


class Config(ScaleConfigBase):
    protocol: Literal["toledo-continuous"]
    bytesize: Literal[7, 8] = 7
    parity: Literal["N", "E", "O"] = "E"
    checksum: bool = Field(True, description="the indicator sends a checksum byte after CR (verified)")
    tare_field: bool = Field(True, description="frames carry the 6-digit tare after the weight")


def checksum(body: bytes) -> int:
    """Two's complement of the 7-bit sum, so that the 7-bit sum including it is 0."""
    return (-sum(b & 0x7F for b in body)) & 0x7F


class Protocol(ScaleProtocol):
    name = "toledo-continuous"
    variants = (
        {"checksum": False},
        {"tare_field": False},
        {"checksum": False, "tare_field": False},
    )

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config
        self.framer = StxFramer(terminator=0x0D, trailer=1 if config.checksum else 0, max_len=32)
        self.bad_checksums = 0

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for frame in self.framer.feed(data):
            r = self.parse(frame)
            if r is not None:
                out.append(r)
        return out

    def parse(self, frame: bytes) -> Reading | None:
        if self.cfg.checksum:
            frame, chk = frame[:-1], frame[-1]
            if checksum(frame) != chk:
                self.bad_checksums += 1
                self.drop("checksum mismatch", f"expected 0x{checksum(frame):02X}, got 0x{chk:02X}")
                return None  # a corrupted frame; the next one arrives within ~50 ms
        return parse_frame(frame, self.cfg.tare_field)

    def zero_command(self) -> bytes:
        return b"Z"

    def tare_command(self) -> bytes:
        return b"T"

    def clear_tare_command(self) -> bytes:
        return b"C"


def _value(digits: bytes, power: int, factor: Decimal) -> int | None:
    if len(digits) != 6 or not digits.replace(b" ", b"0").isdigit():
        return None
    return int((Decimal(int(digits.replace(b" ", b"0"))).scaleb(power) * factor).to_integral_value())


def parse_frame(frame: bytes, tare_field: bool = True) -> Reading:
    """frame = STX..CR without the checksum."""
    expected = 17 if tare_field else 11
    if len(frame) != expected or frame[0] != 0x02 or frame[-1] != 0x0D:
        return Reading(
            "error",
            detail={"error": "bad frame length", "frame": frame[:32].hex()},
            refused=f"wrong length ({len(frame)} bytes, expected {expected})",
        )
    swa, swb, swc = frame[1], frame[2], frame[3]
    power = _SCALE[swa & 0x07]
    unit_code = swc & 0x07
    if unit_code not in _SWC_UNITS:
        return Reading(
            "error",
            detail={"error": f"unit code {unit_code} in status word C is not known", "frame": frame.hex()},
            refused="unknown unit code in status word C",
        )
    unit = _SWC_UNITS[unit_code] or ("kg" if swb & 0x10 else "lb")
    factor = UNIT_GRAMS[unit]
    grams = _value(frame[4:10], power, factor)
    tare = _value(frame[10:16], power, factor) if tare_field else None
    if grams is None:
        return Reading(
            "error", detail={"error": "weight is not 6 digits", "frame": frame.hex()}, refused="weight is not 6 digits"
        )
    if swb & 0x02:
        grams = -grams
    detail = {"swa": swa, "swb": swb, "swc": swc}
    if swb & 0x04:
        return Reading("underload" if swb & 0x02 else "overload", detail=detail)
    if grams < 0:
        return Reading("underload", grams=grams, detail=detail)
    status: Literal["stable", "motion"] = "motion" if swb & 0x08 else "stable"
    return Reading(status, grams=grams, net=bool(swb & 0x01), tare_g=tare, detail=detail)

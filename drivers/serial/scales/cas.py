"""CAS indicators' "22 bytes" format (CI-series manuals), streamed continuously, CR LF terminated.

`ST|US|OL` `,` `GS|NT` `,` device-id(1) lamp(1) `,` data(8) ` ` unit(2) CR LF, e.g.
`ST,GS,\\x01\\xc0,  0013.5 kg`. The lamp byte always has bit 7 set, so it never looks like CR or LF.
The 18-byte variant without device id and lamp byte (`ST,GS,` data unit) is accepted too.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from drivers.serial.framing import DelimitedFramer
from drivers.serial.scales.base import Reading, ScaleConfigBase, ScaleProtocol, to_grams

_FRAME = re.compile(
    rb"^(ST|US|OL),(GS|NT),(?:(.)(.),)?\s*([-+]?[ 0-9]*\.?[0-9]+)\s*(kg|g|t|lb)\s*$", re.DOTALL
)

_OVERLOAD = re.compile(rb"^OL,(GS|NT),", re.DOTALL)


class Config(ScaleConfigBase):
    protocol: Literal["cas"]
    device_id: int | None = Field(
        None, ge=0, le=255, description="only accept frames from this indicator id (byte value); none = any"
    )


class Protocol(ScaleProtocol):
    name = "cas"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config
        self.framer = DelimitedFramer(b"\r\n", max_len=config.max_frame_bytes)

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for frame in self.framer.feed(data):
            r = parse_frame(frame, self.cfg.device_id)
            if r is not None:
                out.append(r)
        return out

    def zero_command(self) -> bytes:
        return b"Z"  # CAS indicators take commands only on some models and settings

    def tare_command(self) -> bytes:
        return b"T"


def parse_frame(frame: bytes, device_id: int | None = None) -> Reading | None:
    m = _FRAME.match(frame)
    if not m and _OVERLOAD.match(frame):
        # The manuals name the OL header but not what the 8 data bytes hold then (the display
        # shows no number): an overload is an overload whatever they are.
        if device_id is not None and len(frame) == 20 and frame[8:9] == b"," and frame[6] != device_id:
            return None
        return Reading("overload", detail={"frame": frame[:32].hex()})
    if not m:
        return Reading(
            "error", detail={"error": "unrecognised frame", "frame": frame[:32].hex()}, refused="not a CAS frame"
        )
    head, kind, dev, lamp, value, unit = m.groups()
    if device_id is not None and dev is not None and dev[0] != device_id:
        return None  # another indicator on a shared line
    detail: dict[str, object] = {"lamp": lamp[0]} if lamp else {}
    if head == b"OL":
        return Reading("overload", detail=detail)
    grams = to_grams(value.decode("ascii"), unit.decode("ascii"))
    if grams is None:
        return Reading("error", detail={"error": "bad number", "frame": frame[:32].hex()}, refused="bad number")
    if grams < 0:
        return Reading("underload", grams=grams, detail=detail)
    return Reading("stable" if head == b"ST" else "motion", grams=grams, net=kind == b"NT", detail=detail)

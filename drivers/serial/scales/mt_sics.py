"""Mettler Toledo MT-SICS level 0/1 (Standard Interface Command Set), CR LF terminated.

Replies handled (MT-SICS reference manual, commands S, SI, Z, T, TAC, I2, I4):
`S S <value> <unit>` stable, `S D <value> <unit>` dynamic (in motion), `S I` busy,
`S +` overload, `S -` underload, `ES`/`ET`/`EL` syntax/transmission/logical error.
Some devices answer `SI` with the id `SI` instead of `S`; both are accepted.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from drivers.serial.framing import DelimitedFramer
from drivers.serial.scales.base import Reading, ScaleConfigBase, ScaleProtocol, to_grams

_WEIGHT = re.compile(r"^(?:S|SI|T)\s+([SD])\s+([-+]?\s*[0-9]+(?:\.[0-9]*)?)\s+([A-Za-z]{1,3})\s*$")
_STATUS = re.compile(r"^(S|SI|T|Z|TAC|I2|I4)\s+([IA+\-L])(?:\s+(.*))?$")
_ERRORS = {"ES": "syntax error", "ET": "transmission error", "EL": "logical error"}


class Config(ScaleConfigBase):
    protocol: Literal["mt-sics"]
    poll_command: Literal["SI", "S"] = Field(
        "SI", description="SI answers at once (so motion is seen); S waits for stability and can block"
    )


class Protocol(ScaleProtocol):
    name = "mt-sics"

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config
        self.framer = DelimitedFramer(b"\r\n", max_len=config.max_frame_bytes)

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for frame in self.framer.feed(data):
            out.append(parse_line(frame.decode("latin-1").strip()))
        return out

    def poll_command(self) -> bytes:
        return self.cfg.poll_command.encode() + b"\r\n"

    def zero_command(self) -> bytes:
        return b"Z\r\n"

    def tare_command(self) -> bytes:
        return b"T\r\n"

    def clear_tare_command(self) -> bytes:
        return b"TAC\r\n"


def parse_line(line: str) -> Reading:
    """One reply line -> a Reading; acknowledgements (Z A, TAC A, I2 A ...) are "info"."""
    if line in _ERRORS:
        return Reading("error", detail={"reply": line, "error": _ERRORS[line]})
    m = _WEIGHT.match(line)
    if m:
        grams = to_grams(m.group(2), m.group(3))
        if grams is None:
            return Reading("error", detail={"reply": line, "error": "unknown unit or number"})
        if line.startswith("T"):
            return Reading("info", tare_g=grams, detail={"reply": line, "ack": "tare"})
        return Reading("stable" if m.group(1) == "S" else "motion", grams=grams)
    m = _STATUS.match(line)
    if m:
        cmd, st, rest = m.group(1), m.group(2), m.group(3) or ""
        if st in "+-" and cmd not in ("S", "SI"):
            # `Z +` / `T -`: the zero setting or taring range was exceeded (MT-SICS reference,
            # commands Z and T): the command was refused; the load is not over or under range.
            side = "upper" if st == "+" else "lower"
            return Reading(
                "info", detail={"reply": line, "ack": cmd, "error": f"{side} limit of the {cmd} range exceeded"}
            )
        if st == "+":
            return Reading("overload", detail={"reply": line})
        if st == "-":
            return Reading("underload", detail={"reply": line})
        if st in ("I", "L"):
            return Reading("error", detail={"reply": line, "error": f"{cmd} not executable now"})
        return Reading("info", detail={"reply": line, "ack": cmd, "value": rest.strip().strip('"')})
    return Reading(
        "error", detail={"reply": line[:64], "error": "unrecognised reply"}, refused="not an MT-SICS reply"
    )

"""Any scale that sends one reading per line: a configurable regex with named groups.

Groups: `weight` (required, a decimal number), `unit` (optional; else the configured unit),
`motion` (optional; a non-empty match means in motion), `overload` (optional; non-empty = overload).
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field, field_validator

from drivers.serial.framing import DelimitedFramer
from drivers.serial.portcfg import decode_escapes
from drivers.serial.scales.base import UNIT_GRAMS, Reading, ScaleConfigBase, ScaleProtocol, to_grams


class Config(ScaleConfigBase):
    protocol: Literal["line-regex"]
    pattern: str = Field(
        r"^\s*(?:(?P<overload>OL)|(?P<motion>[?M])?\s*(?P<weight>[-+]?\d+(?:\.\d+)?)\s*"
        r"(?P<unit>kg|g|lb)?)\s*$",
        description="regex with named groups weight, and optionally unit, motion, overload",
    )
    unit: Literal["g", "kg", "lb", "oz", "t"] = Field("kg", description="unit when the line has none")
    terminator: str = Field("\n", description='line end, e.g. "\\r\\n" or "<CR>" (CR is stripped anyway)')
    poll_command: str | None = Field(
        None, description='sent every poll_interval_s, e.g. "W\\r"; none = streaming'
    )

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            rx = re.compile(v)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        if "weight" not in rx.groupindex:
            raise ValueError("needs a named group (?P<weight>...) for the number")
        return v

    @field_validator("terminator")
    @classmethod
    def _term(cls, v: str) -> str:
        if not decode_escapes(v):
            raise ValueError("must not be empty")
        return v


class Protocol(ScaleProtocol):
    name = "line-regex"
    variants = ({"terminator": "\r"}, {"terminator": "\x03"})

    def __init__(self, config: Config) -> None:
        super().__init__(config)
        self.cfg = config
        self.rx = re.compile(config.pattern)
        self.framer = DelimitedFramer(decode_escapes(config.terminator), max_len=config.max_frame_bytes)

    def feed(self, data: bytes) -> list[Reading]:
        out = []
        for frame in self.framer.feed(data):
            line = frame.decode("latin-1").strip("\r\n")
            if line.strip():
                out.append(self.parse(line))
        return out

    def parse(self, line: str) -> Reading:
        m = self.rx.search(line)
        if not m:
            return Reading(
                "error",
                detail={"error": "line does not match pattern", "line": line[:64]},
                refused="line does not match the pattern",
            )
        groups = m.groupdict()
        if groups.get("overload"):
            return Reading("overload", detail={"line": line[:64]})
        unit = groups.get("unit") or self.cfg.unit
        grams = to_grams(groups["weight"] or "", unit) if unit.lower() in UNIT_GRAMS else None
        if grams is None:
            return Reading(
                "error", detail={"error": "bad weight or unit", "line": line[:64]}, refused="bad weight or unit"
            )
        if grams < 0:
            return Reading("underload", grams=grams)
        return Reading("motion" if groups.get("motion") else "stable", grams=grams)

    def poll_command(self) -> bytes | None:
        return decode_escapes(self.cfg.poll_command) if self.cfg.poll_command else None

"""Serial line settings shared by every scanner and scale (declared once, documented once)."""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.config.base import Section

NAME_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")
BAUD_RATES = (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)


class PortSettings(Section):
    """Where the device is and how its line is set up; scanners and scales both extend this."""

    name: str = Field(description="device name used in records (`scanner:NAME`, `scale:NAME`) and the CLI")
    port: str = Field(description="device path: /dev/serial/by-id/... (stable across replug) or /dev/ttyUSB0")
    baudrate: int = Field(9600, description=f"one of {', '.join(map(str, BAUD_RATES))}")
    bytesize: Literal[7, 8] = Field(8, description="data bits")
    parity: Literal["N", "E", "O"] = Field("N", description="N (none), E (even) or O (odd)")
    stopbits: Literal[1, 2] = 1
    flow: Literal["none", "rtscts", "xonxoff"] = Field("none", description="flow control")
    reconnect_min_s: Annotated[float, Field(gt=0, le=60)] = Field(
        0.5, description="first wait before reopening a port that vanished (doubles each failure)"
    )
    reconnect_max_s: Annotated[float, Field(gt=0, le=600)] = Field(10.0, description="cap on that wait")

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_RE.match(v):
            raise ValueError(
                "must be 1-32 characters of lower case letters, digits, '-' or '_', "
                "starting with a letter or digit"
            )
        return v

    @field_validator("port")
    @classmethod
    def _port(cls, v: str) -> str:
        if not v.startswith("/") or "\0" in v:
            raise ValueError(
                "must be an absolute device path such as /dev/serial/by-id/usb-...-if00 "
                "or /dev/ttyUSB0 (see `coopagent serial list`)"
            )
        return v

    @field_validator("baudrate")
    @classmethod
    def _baud(cls, v: int) -> int:
        if v not in BAUD_RATES:
            raise ValueError(f"is not a standard rate; use one of {', '.join(map(str, BAUD_RATES))}")
        return v

    @model_validator(mode="after")
    def _backoff(self) -> PortSettings:
        if self.reconnect_min_s > self.reconnect_max_s:
            raise ValueError(
                f"reconnect_min_s ({self.reconnect_min_s}) must not exceed "
                f"reconnect_max_s ({self.reconnect_max_s})"
            )
        return self

    def serial_kwargs(self) -> dict[str, object]:
        """Keyword arguments for serial.Serial (pyserial constants are the plain values used here)."""
        return {
            "baudrate": self.baudrate,
            "bytesize": self.bytesize,
            "parity": self.parity,
            "stopbits": self.stopbits,
            "rtscts": self.flow == "rtscts",
            "xonxoff": self.flow == "xonxoff",
        }


def decode_escapes(text: str) -> bytes:
    """Turn a configured terminator such as '\\r\\n' or '<CR><LF>' or '\\x03' into bytes.

    TOML already turns "\\r" into a carriage return; the <CR>-style names are for people who
    write suffixes the way scanner manuals print them.
    """
    names = {
        "<CR>": "\r",
        "<LF>": "\n",
        "<TAB>": "\t",
        "<STX>": "\x02",
        "<ETX>": "\x03",
        "<GS>": "\x1d",
        "<RS>": "\x1e",
        "<EOT>": "\x04",
    }
    for k, v in names.items():
        text = text.replace(k, v)
    if "\\" in text:
        text = text.encode("latin-1").decode("unicode_escape")
    return text.encode("latin-1")

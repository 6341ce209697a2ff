"""What every scale protocol provides: a config model tagged by `protocol`, and a parser of raw bytes.

Adding a protocol means one module with a `Config(ScaleConfigBase)` carrying
`protocol: Literal["name"]` and a `Protocol(ScaleProtocol)`, listed in scales/__init__.py.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections import Counter
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Annotated, Any, ClassVar, Literal

from pydantic import Field

from drivers.serial.framing import DelimitedFramer, FrameStats, StxFramer
from drivers.serial.portcfg import PortSettings

Status = Literal["stable", "motion", "overload", "underload", "error", "info"]

# Exact factors to grams; a reading is converted with Decimal and rounded half-even once.
UNIT_GRAMS: dict[str, Decimal] = {
    "g": Decimal(1),
    "kg": Decimal(1000),
    "t": Decimal(1_000_000),
    "lb": Decimal("453.59237"),
    "oz": Decimal("28.349523125"),
    "mg": Decimal("0.001"),
}


@dataclass(frozen=True)
class Reading:
    """One parsed answer or stream frame. grams is set for stable and motion readings only;
    "info" readings (acknowledgements, identification) never become weights."""

    status: Status
    grams: int | None = None
    net: bool = False
    tare_g: int | None = None
    detail: dict[str, Any] = field(default_factory=dict)
    # Set when the frame was not understood at all (as opposed to a device reporting an error):
    # the reason, counted by the diagnostics of `scale test` and `scale detect`.
    refused: str | None = None


def to_grams(value: str, unit: str) -> int | None:
    """'  1.234', 'kg' -> 1234. None when the number or unit is not understood."""
    factor = UNIT_GRAMS.get(unit.strip().lower())
    if factor is None:
        return None
    try:
        number = Decimal(value.replace(" ", ""))
    except InvalidOperation:
        return None
    if not number.is_finite():
        return None
    return int((number * factor).to_integral_value())


class ScaleConfigBase(PortSettings):
    """Options every scale has; protocols add their own and may change the line defaults."""

    protocol: str
    poll_interval_s: Annotated[float, Field(ge=0.02, le=60)] = Field(
        0.2, description="how often a polling scale is asked for its weight (streaming ones ignore it)"
    )
    response_timeout_s: Annotated[float, Field(gt=0, le=30)] = Field(
        1.0, description="a polling scale that answers nothing this long is reported not responding"
    )
    zero_band_g: Annotated[int, Field(ge=0, le=100_000)] = Field(
        5,
        description="a stable reading at or below this counts as an empty platter (re-arms the next weight)",
    )
    change_band_g: Annotated[int, Field(ge=0, le=100_000)] = Field(
        5,
        description="a stable reading differing from the last recorded one by more than this is a new load",
    )
    max_frame_bytes: Annotated[int, Field(ge=16, le=4096)] = Field(
        256, description="longer frames are dropped"
    )


class ScaleProtocol(ABC):
    """Turns bytes from the scale into Readings; knows the commands to poll, zero and tare."""

    name: ClassVar[str]
    framer: DelimitedFramer | StxFramer  # set by each protocol's __init__
    # Settings of this protocol an indicator may differ in (e.g. {"checksum": False}):
    # `scale detect` and the diagnostics of `scale test` try each.
    variants: ClassVar[tuple[dict[str, Any], ...]] = ()

    def __init__(self, config: ScaleConfigBase) -> None:
        self.config = config
        # Frames dropped before they became a Reading (e.g. a bad checksum), by reason, with
        # the last example; refused Readings are counted by whoever reads them.
        self.dropped: Counter[str] = Counter()
        self.dropped_example: dict[str, str] = {}

    def drop(self, reason: str, example: str) -> None:
        self.dropped[reason] += 1
        self.dropped_example[reason] = example

    @abstractmethod
    def feed(self, data: bytes) -> list[Reading]:
        """Parse what arrived; never raises on any input."""

    def poll_command(self) -> bytes | None:
        return None

    def zero_command(self) -> bytes | None:
        return None

    def tare_command(self) -> bytes | None:
        return None

    def clear_tare_command(self) -> bytes | None:
        return None

    @property
    def stats(self) -> FrameStats:
        """The framer's counters (frames, garbage_bytes, overruns)."""
        return self.framer.stats

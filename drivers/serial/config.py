"""Config models of the serial devices and branch workflows (`[[scanners]]`, `[[scales]]`, `[workflow]`).

Every key is documented in docs/serial.md. ScaleConfig is a discriminated union on `protocol`;
each protocol module declares its own options (drivers/serial/scales/).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

from core.config.base import Section
from drivers.serial.portcfg import PortSettings, decode_escapes
from drivers.serial.scales import ScaleConfig, ScaleConfigBase

MODES = ("receive", "issue", "transfer", "waste", "count", "scan-only")
Mode = Literal["receive", "issue", "transfer", "waste", "count", "scan-only"]


class ScannerConfig(PortSettings):
    """A barcode scanner in serial (or USB-CDC / "USB COM") mode."""

    suffix: str = Field(
        "\r", description='frame end the scanner appends: "\\r", "\\n", "\\r\\n", "<CR>", "\\x03" ...'
    )
    prefix: str = Field("", description="frame start the scanner prepends, if programmed to; empty = none")
    max_frame_bytes: Annotated[int, Field(ge=16, le=4096)] = Field(
        4096, description="longer reads are dropped (a QR code holds at most ~3 kB; a scan's raw is <= 4096)"
    )
    mode: Mode = Field(
        "receive", description=f"workflow at start: one of {', '.join(MODES)}; command barcodes switch it"
    )
    scale: str | None = Field(
        None,
        description="name of the [[scales]] entry whose weights pair with this "
        "scanner's reads (receiving by weight, weighed counts)",
    )
    location: str | None = Field(
        None, description="default location for moves from this scanner, e.g. DOCK-1"
    )

    @field_validator("suffix")
    @classmethod
    def _suffix(cls, v: str) -> str:
        if not decode_escapes(v):
            raise ValueError('must not be empty; scanners end each read with e.g. "\\r" (CR) or "\\r\\n"')
        return v

    @property
    def suffix_bytes(self) -> bytes:
        return decode_escapes(self.suffix)

    @property
    def prefix_bytes(self) -> bytes:
        return decode_escapes(self.prefix)


class VariableMeasureRule(Section):
    """How one group of in-store EAN-13 prefixes (02, 20-29) embeds an item and a weight or price.

    Positions count the 13 printed digits from 1 (left) to 13 (the check digit), both ends included.
    """

    prefixes: list[str] = Field(description='two-digit prefixes, "02" or "20" to "29"')
    item: tuple[int, int] = Field((3, 7), description="first and last digit of the item (PLU) number")
    value: tuple[int, int] = Field((8, 12), description="first and last digit of the weight or price")
    measure: Literal["weight_g", "price_fils"] = Field(description="what the value digits hold")
    value_check_digit: int | None = Field(
        None,
        description="position of a price/weight check digit over the value (GS1 GenSpecs 7.9.2-7.9.4); "
        "the value must then be 4 or 5 digits",
    )

    @field_validator("prefixes")
    @classmethod
    def _prefixes(cls, v: list[str]) -> list[str]:
        if not v:
            raise ValueError("needs at least one prefix")
        bad = [p for p in v if not re.fullmatch(r"02|2[0-9]", p)]
        if bad:
            raise ValueError(f'{", ".join(map(repr, bad))}: in-store prefixes are "02" and "20" to "29"')
        return v

    @model_validator(mode="after")
    def _spans(self) -> VariableMeasureRule:
        for key, (a, b) in (("item", self.item), ("value", self.value)):
            if not 3 <= a <= b <= 12:
                raise ValueError(
                    f"{key} = [{a}, {b}]: must lie within digits 3 to 12 (1-2 are the prefix, "
                    "13 the check digit), first <= last"
                )
        if not (self.item[1] < self.value[0] or self.value[1] < self.item[0]):
            raise ValueError(f"item {list(self.item)} and value {list(self.value)} overlap")
        c = self.value_check_digit
        if c is not None:
            n = self.value[1] - self.value[0] + 1
            if n not in (4, 5):
                raise ValueError(f"value_check_digit needs a 4 or 5 digit value, not {n} digits")
            if not 3 <= c <= 12 or self.item[0] <= c <= self.item[1] or self.value[0] <= c <= self.value[1]:
                raise ValueError(f"value_check_digit = {c}: must be a digit 3-12 outside item and value")
        return self


def default_variable_measure() -> list[VariableMeasureRule]:
    """This deployment's labels (docs/serial.md): 2X IIIII VVVVV C, weight in grams or price in fils."""
    return [
        VariableMeasureRule(
            prefixes=["02", "20", "21", "22", "23", "24"],
            item=(3, 7),
            value=(8, 12),
            measure="weight_g",
            value_check_digit=None,
        ),
        VariableMeasureRule(
            prefixes=["25", "26", "27", "28", "29"],
            item=(3, 7),
            value=(8, 12),
            measure="price_fils",
            value_check_digit=None,
        ),
    ]


class WorkflowConfig(Section):
    """Receiving and stock-take: how reads, weights and command barcodes become stock records."""

    command_prefix: str = Field(
        "CMD:",
        min_length=1,
        max_length=16,
        description="barcodes starting with this are commands (see the command sheet)",
    )
    pair_window_s: Annotated[float, Field(ge=0, le=300)] = Field(
        5.0,
        description="a stable weight within this many seconds after an item scan is that item's weight; "
        "0 = never pair (every scan is a quantity)",
    )
    doc_pattern: str = Field(
        r"^(?=.*[A-Za-z])[A-Za-z0-9/_.-]{3,40}$",
        description="in a move mode (receive, issue, transfer, waste), a non-GTIN read matching this sets "
        "the delivery or transfer document",
    )
    blind_count: bool = Field(True, description="stock-take sessions hide running totals from the counter")
    max_multiplier: Annotated[int, Field(ge=1, le=1_000_000)] = Field(
        9999, description="largest quantity a CMD:QTY barcode may set"
    )
    currency_decimals: Annotated[int, Field(ge=0, le=4)] = Field(
        3, description="minor units of the currency in GS1 price AIs (KWD: 3, fils)"
    )
    variable_measure: list[VariableMeasureRule] = Field(
        default_factory=default_variable_measure, description="in-store EAN-13 rules, first match wins"
    )
    db_file: str = Field("workflows.sqlite3", description="workflow state file, under agent.data_dir")

    @field_validator("doc_pattern")
    @classmethod
    def _doc(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"is not a valid regular expression: {exc}") from None
        return v

    @field_validator("db_file")
    @classmethod
    def _db(cls, v: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,64}", v) or v.startswith("."):
            raise ValueError("must be a plain file name (it lives in agent.data_dir)")
        return v

    @model_validator(mode="after")
    def _unique_prefixes(self) -> WorkflowConfig:
        seen: set[str] = set()
        for i, rule in enumerate(self.variable_measure):
            dup = seen.intersection(rule.prefixes)
            if dup:
                raise ValueError(
                    f"variable_measure[{i}]: prefix {sorted(dup)[0]!r} is already in an earlier rule"
                )
            seen.update(rule.prefixes)
        return self


def cross_check(scanners: Sequence[ScannerConfig], scales: Sequence[ScaleConfigBase]) -> list[str]:
    """Rules across sections: a scanner's `scale` must exist, and no two devices share a port."""
    problems: list[str] = []
    names = {s.name for s in scales}
    for i, sc in enumerate(scanners):
        if sc.scale is not None and sc.scale not in names:
            known = ", ".join(sorted(names)) or "none configured"
            problems.append(
                f"scanners[{i}].scale = {sc.scale!r}: no [[scales]] entry has that name ({known})"
            )
    ports: dict[str, str] = {}
    for key, items in (("scanners", scanners), ("scales", scales)):
        for i, dev in enumerate(items):
            where = f"{key}[{i}]"
            if dev.port in ports:
                problems.append(
                    f"{where}.port = {dev.port!r}: already used by {ports[dev.port]}; one device per port"
                )
            ports.setdefault(dev.port, where)
    return problems


__all__ = ["MODES", "ScaleConfig", "ScannerConfig", "VariableMeasureRule", "WorkflowConfig", "cross_check"]

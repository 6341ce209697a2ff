"""What a barcode read means: AIM symbology identifier, GTIN / GS1 element strings (biip),
in-store variable-measure labels (our rule table), command barcodes, or plain text.

Every read becomes a `scan` record; a read that claims to be a GS1 code but fails its checks is
recorded with valid False and the reason (the evidence of a bad label is evidence too).
"""

from __future__ import annotations

import re
from decimal import Decimal
from functools import lru_cache
from typing import Any

import biip
from biip import ParseConfig

from drivers.serial.config import WorkflowConfig
from drivers.serial.varmeasure import apply_rules
from drivers.serial.workflows.commands import CommandError, parse_command

_AIM = re.compile(r"^\][A-Za-z][0-9A-Za-z]")
_DIGITS = re.compile(r"^[0-9]{8}$|^[0-9]{12,14}$")
_BIIP = ParseConfig(rcn_region=None, rcn_verify_variable_measure=False)
GS = "\x1d"


def _symbology(result: biip.ParseResult) -> str:
    """A readable name from the AIM identifier: "ean-13", "gs1-128", "gs1-datamatrix", "code-128" ..."""
    si = result.symbology_identifier
    if si is None:
        return "unknown"
    return (si.gs1_symbology or si.iso_symbology).name.lower().replace("_", "-")


class ScanInterpreter:
    """Pure function of the read and the workflow config, cached (shelves are scanned over and over)."""

    def __init__(self, wf: WorkflowConfig) -> None:
        self.wf = wf
        self.interpret_text = lru_cache(maxsize=2048)(self._interpret)

    def interpret(self, frame: bytes) -> dict[str, Any]:
        return dict(self.interpret_text(frame.decode("latin-1")))

    def _interpret(self, raw: str) -> dict[str, Any]:
        text = raw = raw.strip("\r\n")
        aim = text[:3] if _AIM.match(text) else None
        body = text[3:] if aim else text
        data: dict[str, Any] = {"raw": raw, "symbology": "unknown"}
        if aim:
            data["aim"] = aim
        if body.upper().startswith(self.wf.command_prefix.upper()):
            data["symbology"] = aim or "unknown"
            try:
                cmd = parse_command(body, self.wf.command_prefix, self.wf.max_multiplier)
            except CommandError as exc:
                return {**data, "type": "command", "valid": False, "reason": str(exc)}
            return {
                **data,
                "type": "command",
                "valid": True,
                "command": cmd.action,
                **({"arg": cmd.arg} if cmd.arg is not None else {}),
            }
        split = _add_on(aim, body)
        if split is not None:
            # A UPC/EAN symbol with a 2- or 5-digit add-on (periodicals, books) comes as
            # `]E0<main>]E1<2>` / `]E0<main>]E2<5>` or, combined, `]E3<main><add-on>` (AIM
            # UPC/EAN modifiers 0-3): the main symbol is the item, the add-on its issue or price.
            main, add_on = split
            return {
                **self._interpret("]E0" + main),
                "raw": raw,
                "aim": aim,
                "symbology": "ean-13-with-add-on",
                "add_on": add_on,
            }
        if not body or any(ord(c) < 0x20 and c != GS for c in body):
            return {**data, "type": "invalid", "valid": False, "reason": "empty or control characters"}
        try:
            result = biip.parse(text, config=_BIIP)
        except (biip.ParseError, ValueError, IndexError) as exc:
            # biip 5.2 raises IndexError on a lone "]" and ValueError on an unknown "]X" identifier;
            # found by the fuzz test (tests/serial/test_scanner_interpret.py).
            return {**data, "type": "invalid", "valid": False, "reason": f"unparseable: {exc}"[:200]}
        data["symbology"] = _symbology(result)
        gs1_aim = (
            result.symbology_identifier is not None and result.symbology_identifier.gs1_symbology is not None
        )
        plain_digits = bool(_DIGITS.match(body))
        claims_gs1 = plain_digits or gs1_aim
        # 8, 12, 13 or 14 bare digits are a GTIN or nothing: "96385074" with a bad check digit
        # must not pass as GS1 element string "(96) 385074".
        if result.gs1_message is not None and not (plain_digits and not gs1_aim):
            return {**data, **self._gs1(result)}
        if result.gtin is not None:
            gtin = result.gtin.as_gtin_14()
            if len(result.gtin.value) == 13 or (len(gtin) == 14 and gtin.startswith("0")):
                vm = apply_rules(gtin[-13:], self.wf.variable_measure) if gtin[1:3] in _VM_PREFIXES else None
                if vm is not None:
                    return {**data, "type": "variable_measure", "valid": True, **vm}
            return {**data, "type": "gtin", "valid": True, "gtin": gtin}
        if claims_gs1:
            reason = result.gtin_error or result.gs1_message_error or "not a valid GTIN or GS1 message"
            return {**data, "type": "invalid", "valid": False, "reason": reason}
        return {**data, "type": "text", "valid": True}

    def _gs1(self, result: biip.ParseResult) -> dict[str, Any]:
        assert result.gs1_message is not None
        ais: dict[str, str] = {}
        out: dict[str, Any] = {"type": "gs1", "valid": True}
        for es in result.gs1_message.element_strings:
            ais[es.ai.ai] = es.value
            if es.ai.ai.startswith("310") and es.decimal is not None:
                out["weight_g"] = int((es.decimal * 1000).to_integral_value())
            if es.ai.ai.startswith("392") and es.decimal is not None:
                out["price_minor"] = int(
                    (es.decimal * Decimal(10) ** self.wf.currency_decimals).to_integral_value()
                )
            if es.ai.ai in ("15", "17") and es.date is not None:
                out["best_before" if es.ai.ai == "15" else "expiry"] = es.date.isoformat()
        out["ais"] = ais
        if result.gtin is not None:
            out["gtin"] = result.gtin.as_gtin_14()
        if "10" in ais:
            out["batch"] = ais["10"]
        if "21" in ais:
            out["serial"] = ais["21"]
        return out


_ADD_ON_SEPARATE = re.compile(r"^([0-9]{12,13})\]E(?:1([0-9]{2})|2([0-9]{5}))$")
_ADD_ON_COMBINED = re.compile(r"^([0-9]{13})([0-9]{2}|[0-9]{5})$")


def _add_on(aim: str | None, body: str) -> tuple[str, str] | None:
    """(main symbol, add-on) of a UPC/EAN read carrying an add-on, else None."""
    if aim == "]E0":
        m = _ADD_ON_SEPARATE.match(body)
        return (m.group(1), m.group(2) or m.group(3)) if m else None
    if aim == "]E3":
        m = _ADD_ON_COMBINED.match(body)
        return (m.group(1), m.group(2)) if m else None
    return None


_VM_PREFIXES = {"02", *(f"2{i}" for i in range(10))}

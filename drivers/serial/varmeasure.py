"""In-store variable-measure EAN-13 (prefixes 02, 20-29) by this deployment's rule table.

biip knows the rules of only some countries, so the rule table lives in config
(workflow.variable_measure). The item's GTIN for totals is the label with the value
digits (and any value check digit) zeroed and the check digit recomputed, so that every
label of one weighed item counts under one GTIN.
"""

from __future__ import annotations

from typing import Any

from biip.checksums import gs1_price_weight_check_digit, gs1_standard_check_digit

from drivers.serial.config import VariableMeasureRule


def _span(code: str, span: tuple[int, int]) -> str:
    return code[span[0] - 1 : span[1]]


def apply_rules(code: str, rules: list[VariableMeasureRule]) -> dict[str, Any] | None:
    """code is a 13-digit EAN-13 whose check digit was verified. None when no rule covers its prefix.

    Returns the fields for the scan record, with valid False and a reason when the embedded
    value fails its own check digit.
    """
    rule = next((r for r in rules if code[:2] in r.prefixes), None)
    if rule is None:
        return None
    value = _span(code, rule.value)
    out: dict[str, Any] = {"variable_measure": True, "item": _span(code, rule.item), "rcn": code}
    if rule.value_check_digit is not None:
        expected = gs1_price_weight_check_digit(value)
        got = int(code[rule.value_check_digit - 1])
        if expected != got:
            return {
                **out,
                "valid": False,
                "reason": f"{rule.measure} check digit: expected {expected}, got {got}",
            }
    out[rule.measure] = int(value)
    base = list(code[:12])
    positions = list(range(rule.value[0], rule.value[1] + 1))
    if rule.value_check_digit is not None:
        positions.append(rule.value_check_digit)
    for p in positions:
        base[p - 1] = "0"
    stem = "".join(base)
    out["gtin"] = "0" + stem + str(gs1_standard_check_digit(stem))
    return out

"""What a read means: GTIN, GS1 AIs, variable-measure labels by our rule table, commands, invalid reads."""

from __future__ import annotations

from biip.checksums import gs1_price_weight_check_digit, gs1_standard_check_digit
from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial.config import VariableMeasureRule, WorkflowConfig
from drivers.serial.scanner import ScanInterpreter

SI = ScanInterpreter(WorkflowConfig())


def ean13(first12: str) -> str:
    return first12 + str(gs1_standard_check_digit(first12))


def test_ean13_with_aim_identifier() -> None:
    d = SI.interpret(b"]E05901234123457")
    assert d["valid"] and d["gtin"] == "05901234123457" and d["symbology"] == "ean-13" and d["aim"] == "]E0"


def test_bad_check_digit_is_recorded_invalid_with_reason() -> None:
    d = SI.interpret(b"5901234123458")
    assert d["valid"] is False and "check digit" in d["reason"] and d["raw"] == "5901234123458"


def test_gs1_128_with_fnc1_as_gs() -> None:
    d = SI.interpret(b"]C1010590123412345731030012343922012345\x1d10LOT-7\x1d21SN9")
    assert d["type"] == "gs1" and d["symbology"] == "gs1-128"
    assert d["gtin"] == "05901234123457" and d["weight_g"] == 1234 and d["price_minor"] == 123450
    assert d["ais"]["10"] == "LOT-7" and d["serial"] == "SN9"


def test_gs1_datamatrix_and_expiry() -> None:
    d = SI.interpret(b"]d2010590123412345717261231\x1d10B1")
    assert d["symbology"] == "gs1-datamatrix" and d["expiry"] == "2026-12-31" and d["batch"] == "B1"


def test_variable_measure_weight_label_default_rules() -> None:
    code = ean13("201234501234")
    d = SI.interpret(code.encode())
    assert d["type"] == "variable_measure" and d["weight_g"] == 1234 and d["item"] == "12345"
    # every label of item 12345 totals under one GTIN: value digits zeroed, check digit recomputed
    assert d["gtin"] == "0" + ean13("201234500000")


def test_variable_measure_price_label_and_prefix_02() -> None:
    d = SI.interpret(ean13("251234500750").encode())
    assert d["price_fils"] == 750 and "weight_g" not in d
    assert SI.interpret(ean13("020042000500").encode())["weight_g"] == 500


def test_rule_with_value_check_digit_verifies_it() -> None:
    rule = VariableMeasureRule(prefixes=["23"], item=(3, 6), value=(9, 12), value_check_digit=8, measure="weight_g")
    si = ScanInterpreter(WorkflowConfig(variable_measure=[rule]))
    value = "2875"
    good = ean13("234321" + "0" + str(gs1_price_weight_check_digit(value)) + value)
    assert si.interpret(good.encode())["weight_g"] == 2875
    bad = ean13("234321" + "0" + str((gs1_price_weight_check_digit(value) + 1) % 10) + value)
    d = si.interpret(bad.encode())
    assert d["valid"] is False and "check digit" in d["reason"]


def test_commands_and_text() -> None:
    assert SI.interpret(b"CMD:COUNT:OPEN:A-12")["command"] == "count-open"
    assert SI.interpret(b"cmd:qty:12")["arg"] == 12
    bad = SI.interpret(b"CMD:QTY:0")
    assert bad["valid"] is False and "1 to 9999" in bad["reason"]
    assert SI.interpret(b"CMD:FLY")["valid"] is False
    assert SI.interpret(b"INV-2024/118")["type"] == "text"
    assert SI.interpret(b"\x00\x07")["valid"] is False


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=80))
def test_any_bytes_give_a_scan_record_without_crashing(raw: bytes) -> None:
    d = SI.interpret(raw)
    assert isinstance(d["valid"], bool) and "raw" in d and "symbology" in d
    assert d["valid"] or d.get("reason")


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=60))
def test_any_command_text_parses_or_is_refused_with_a_reason(tail: str) -> None:
    from drivers.serial.workflows.commands import Command, CommandError, parse_command

    try:
        cmd = parse_command("CMD:" + tail)
    except CommandError as exc:
        assert str(exc)
    else:
        assert isinstance(cmd, Command)

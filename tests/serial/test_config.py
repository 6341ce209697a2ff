"""Every mistake a technician can make in the serial config gets a message naming key, value and the fix."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import TypeAdapter

from agent.config.loader import ConfigError, load_config, parse_config
from drivers.serial.config import ScaleConfig, ScannerConfig, cross_check

SC = {"name": "dock", "port": "/dev/ttyUSB0"}
SL = {"name": "dock", "port": "/dev/ttyUSB1", "protocol": "mt-sics"}


def problems(data: dict) -> str:
    with pytest.raises(ConfigError) as ei:
        parse_config(data)
    return str(ei.value)


def test_toml_example_from_the_issue(tmp_path: Path) -> None:
    p = tmp_path / "agent.toml"
    p.write_text(
        '[[scanners]]\nname = "dock"\nport = "/dev/serial/by-id/usb-Datalogic-if00"\nsuffix = "\\r"\n'
        '[[scales]]\nname = "dock"\nport = "/dev/ttyUSB0"\nprotocol = "toledo-8217"\n'
        "[workflow]\npair_window_s = 3\n"
    )
    cfg = load_config(p)
    assert cfg.scanners[0].suffix_bytes == b"\r"
    assert cfg.scales[0].protocol == "toledo-8217" and cfg.scales[0].parity == "E"
    assert cfg.workflow.pair_window_s == 3


@pytest.mark.parametrize(
    "data, expect",
    [
        (
            {"scales": [{**SL, "protocol": "mettler"}]},
            "scales[0]: protocol is missing or unknown; use one of: mt-sics",
        ),
        ({"scales": [{"name": "x", "port": "/dev/x"}]}, "protocol is missing or unknown"),
        ({"scales": [{**SL, "baudrate": 9601}]}, "baudrate = 9601: is not a standard rate"),
        ({"scales": [{**SL, "parity": "X"}]}, "parity = 'X'"),
        ({"scales": [{**SL, "bytesize": 6}]}, "bytesize = 6"),
        ({"scales": [{**SL, "poll_interval_s": 0}]}, "poll_interval_s = 0"),
        (
            {"scales": [{**SL, "protocol": "line-regex", "pattern": "(unclosed"}]},
            "is not a valid regular expression",
        ),
        (
            {"scales": [{**SL, "protocol": "line-regex", "pattern": r"\d+"}]},
            "needs a named group (?P<weight>",
        ),
        ({"scales": [{**SL, "protocol": "cas", "poll_command": "SI"}]}, "poll_command: unknown key"),
        ({"scanners": [{**SC, "port": "ttyUSB0"}]}, "port = 'ttyUSB0': must be an absolute device path"),
        ({"scanners": [{**SC, "name": "Dock 1"}]}, "name = 'Dock 1': must be 1-32 characters"),
        ({"scanners": [{**SC, "suffix": ""}]}, "suffix = '': must not be empty"),
        ({"scanners": [{**SC, "mode": "sell"}]}, "mode = 'sell'"),
        (
            {"scanners": [{**SC, "reconnect_min_s": 20}]},
            "reconnect_min_s (20.0) must not exceed reconnect_max_s",
        ),
        ({"scanners": [SC, SC]}, "name 'dock' is used twice"),
        (
            {"workflow": {"variable_measure": [{"prefixes": ["19"], "measure": "weight_g"}]}},
            '\'19\': in-store prefixes are "02" and "20" to "29"',
        ),
        (
            {"workflow": {"variable_measure": [{"prefixes": ["20"], "measure": "weight_g", "item": [3, 9]}]}},
            "overlap",
        ),
        (
            {"workflow": {"variable_measure": [{"prefixes": ["20"], "measure": "weight_g", "value": [8, 13]}]}},
            "must lie within digits 3 to 12",
        ),
        (
            {"workflow": {"variable_measure": [{"prefixes": ["20"], "measure": "weight_g", "value_check_digit": 8}]}},
            "value_check_digit = 8",
        ),
        (
            {
                "workflow": {
                    "variable_measure": [
                        {"prefixes": ["20"], "measure": "weight_g"},
                        {"prefixes": ["20"], "measure": "price_fils"},
                    ]
                }
            },
            "prefix '20' is already in an earlier rule",
        ),
        ({"workflow": {"variable_measure": [{"prefixes": ["20"], "measure": "kg"}]}}, "measure = 'kg'"),
        ({"workflow": {"doc_pattern": "["}}, "doc_pattern = '[': is not a valid regular expression"),
        ({"workflow": {"db_file": "../x.db"}}, "must be a plain file name"),
        ({"workflow": {"pair_window_s": -1}}, "pair_window_s = -1"),
    ],
)
def test_config_errors_name_key_value_and_fix(data: dict, expect: str) -> None:
    assert expect in problems(data)


def test_cross_checks() -> None:
    """Refused when the config is read (`coopagent config check`), with every problem named;
    cross_check itself lists them all."""
    data = {"scanners": [{**SC, "scale": "nope"}, {"name": "b", "port": "/dev/ttyUSB1"}], "scales": [SL]}
    with pytest.raises(ConfigError) as e:
        parse_config(data)
    assert "scanners[0].scale = 'nope'" in str(e.value) and "already used by scanners[1]" in str(e.value)
    scanners = [ScannerConfig.model_validate(d) for d in data["scanners"]]
    scales = [TypeAdapter(ScaleConfig).validate_python(d) for d in data["scales"]]
    msgs = cross_check(scanners, scales)
    assert any("scanners[0].scale = 'nope': no [[scales]] entry has that name (dock)" in m for m in msgs)
    assert any("scales[0].port = '/dev/ttyUSB1': already used by scanners[1]" in m for m in msgs)

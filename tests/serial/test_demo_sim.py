"""The `make demo` simulator (python -m drivers.serial.sim) drives the whole serial subsystem, as
built by build_components, through a receiving and a stock-take."""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from agent.config.loader import parse_config
from core.interfaces import Component
from drivers.serial import runtime
from drivers.serial.sim.__main__ import main
from tests.peers.net import wait_for
from tests.serial.conftest import Running
from tests.serial.doubles import FakeContext, MemorySink

pytestmark = pytest.mark.slow


def test_demo_script_through_the_serial_subsystem(
    tmp_path: Path, run_component: Callable[[Component], Running]
) -> None:
    scanner, scale = tmp_path / "tty-scanner", tmp_path / "tty-scale"
    rc: list[int] = []
    sim = threading.Thread(
        target=lambda: rc.append(
            main(
                [
                    "--scanner-link",
                    str(scanner),
                    "--scale-link",
                    str(scale),
                    "--pace",
                    "0.1",
                    "--exit",
                    "--wait-agent",
                    "30",
                ]
            )
        )
    )
    sim.start()
    wait_for(lambda: scanner.exists() and scale.exists(), what="the simulator's pty links")
    cfg = parse_config(
        {
            "agent": {"data_dir": str(tmp_path / "data")},
            "api": {"token_file": str(tmp_path / "no-token")},
            "scanners": [{"name": "dock", "port": str(scanner), "scale": "dock", "location": "DOCK-1"}],
            "scales": [{"name": "dock", "port": str(scale), "protocol": "mt-sics", "poll_interval_s": 0.05}],
            "workflow": {"pair_window_s": 3},
        }
    )
    ctx = FakeContext(cfg, MemorySink())
    try:
        for c in runtime.build_components(ctx):
            run_component(c)
        sim.join(timeout=60)
        assert rc == [0]
        wait_for(
            lambda: any(s["data"]["state"] == "closed" for s in ctx.records.of("count_session")),
            what="the closed count session",
        )
    finally:
        sim.join(timeout=60)
    moves = [(m["data"]["gtin"], m["data"].get("qty"), m["data"].get("weight_g")) for m in ctx.records.of("stock_move")]
    assert moves == [
        ("05901234123457", None, 2500),
        ("04006381333931", 6, None),
        ("02012345000001", None, 1234),
    ]
    closed = [s["data"] for s in ctx.records.of("count_session") if s["data"]["state"] == "closed"][0]
    assert closed["totals"] == {
        "02012345000001": {"lines": 1, "weight_g": 480},
        "05901234123457": {"lines": 2, "qty": 2},
        "09506000134352": {"lines": 1, "qty": 12},
    }

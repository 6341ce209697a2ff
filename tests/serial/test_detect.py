"""`coopagent scale detect PORT` finds protocol and line settings (issue 12).

The simulators run on real socat pty pairs with the line emulated (`reader=`, see
drivers/serial/sim/uart.py): a pty keeps the baud rate the reader sets, and the simulator
garbles its bytes through a bit-level UART model when that rate is not its own, so only
the right rate reads; a 7E1 device's parity bit arrives in bit 7 as on a real 8N1 port.
"""

from __future__ import annotations

import json
from collections.abc import Callable

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import cli
from drivers.serial.detect import detect, with_parity
from drivers.serial.sim.devices import CasSim, SimDevice, Toledo8217Sim, ToledoContinuousSim
from drivers.serial.sim.pty import PtyLink

Pty = Callable[[str], PtyLink]


def run_with(sim: SimDevice, *args: str) -> Result:
    sim.start()
    try:
        return CliRunner().invoke(cli, list(args), catch_exceptions=False)
    finally:
        sim.stop()


def test_with_parity_makes_7e1_characters() -> None:
    assert with_parity(b"W", "E") == b"\xd7"  # 'W' = 0x57 has five ones: even parity bit 1
    assert with_parity(b"S", "E") == b"S" and with_parity(b"S", "O") == b"\xd3"


@pytest.mark.slow
def test_detects_cas_at_4800(pty_pair: Pty) -> None:
    """A CAS indicator streaming at 4800 8N1: 9600 garbles, 4800 reads; named first, as a config."""
    link = pty_pair("det-cas")
    sim = CasSim(link.device_side, reader=link.agent_side, baudrate=4800)
    sim.place(1500)
    r = run_with(sim, "scale", "detect", str(link.agent_side))
    assert r.exit_code == 0, r.output
    assert "9600 baud 8N1: listening" in r.output and "4800 baud 8N1: listening" in r.output
    assert '1. protocol = "cas", baudrate = 4800, bytesize = 8, parity = "N"' in r.output
    assert "1.500 kg stable" in r.output and 'protocol = "cas"\nbaudrate = 4800' in r.output


@pytest.mark.slow
def test_detects_toledo_continuous_without_checksum_at_7e1(pty_pair: Pty) -> None:
    """A Toledo continuous indicator at 9600 7E1 set not to send checksums: the checksum variant
    and 7E1 (from the parity bits) are named."""
    link = pty_pair("det-tc")
    sim = ToledoContinuousSim(link.device_side, reader=link.agent_side, checksum=False)
    sim.place(2500)
    r = run_with(sim, "scale", "detect", str(link.agent_side), "--json")
    assert r.exit_code == 0, r.output
    best = json.loads(r.output)["matches"][0]
    assert best["settings"] == {
        "protocol": "toledo-continuous",
        "checksum": False,
        "baudrate": 9600,
        "bytesize": 7,
        "parity": "E",
    }


@pytest.mark.slow
def test_detects_polled_toledo_8217_at_2400(pty_pair: Pty) -> None:
    """A Toledo 8217 answers only `W`, at 2400 7E1: detect must ask, at the right rate."""
    link = pty_pair("det-8217")
    sim = Toledo8217Sim(link.device_side, reader=link.agent_side, baudrate=2400)
    sim.place(1234)
    res = None
    sim.start()
    try:
        res = detect(str(link.agent_side), dwell_s=0.5)
    finally:
        sim.stop()
    assert res.matches, res.as_dict()
    assert res.matches[0].settings == {"protocol": "toledo-8217", "baudrate": 2400, "bytesize": 7, "parity": "E"}
    assert "W" in sim.commands
    assert res.seconds < 30


@pytest.mark.slow
def test_detect_on_a_silent_port_says_so(pty_pair: Pty) -> None:
    link = pty_pair("det-silent")
    r = CliRunner().invoke(cli, ["scale", "detect", str(link.agent_side), "--dwell", "0.2"], catch_exceptions=False)
    assert r.exit_code == 1, r.output
    assert "no setting read a frame" in r.output and "no byte arrived" in r.output

"""`scale test` / `scanner test` explain a device that says nothing useful (issue 12).

Every test runs the real CLI against a simulator on a real socat pty pair. A pty enforces no
line settings, so the mismatches are emulated by the simulator (drivers/serial/sim/uart.py,
`reader=`): it reads the baud rate the CLI set on its end of the pty from the pty's termios
and passes each byte through a bit-level UART model; a 7E1 device's parity bit shows in bit 7,
as it does to a reader set to 8N1 on a real line. Checksum, protocol and line-end mistakes
need no emulation: the simulator sends those bytes as such a device does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agent.cli.main import cli
from drivers.serial.sim.devices import (
    CasSim,
    LineSim,
    NoiseSim,
    ScannerSim,
    SimDevice,
    ToledoContinuousSim,
    reader_baudrate,
)
from drivers.serial.sim.pty import PtyLink

Pty = Callable[[str], PtyLink]


def run(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args), catch_exceptions=False)


def scale_test(link: PtyLink, *args: str) -> Result:
    return run("scale", "test", str(link.agent_side), "--explain-after", "1", "--seconds", "10", *args)


def with_sim(sim: SimDevice, fn: Callable[[], Result]) -> Result:
    sim.start()
    try:
        return fn()
    finally:
        sim.stop()


def test_parity_mismatch_7e1_device_read_as_8n1(pty_pair: Pty) -> None:
    """A line printer scale set to 9600 7E1, configured as 8N1: every byte's parity bit lands in
    bit 7, so no line matches the pattern. The diagnosis names 7E1 and the two keys to set, and
    with them set the same device reads."""
    link = pty_pair("par")
    sim = LineSim(link.device_side, reader=link.agent_side, bytesize=7, parity="E")
    sim.place(1234)
    r = with_sim(sim, lambda: scale_test(link, "--protocol", "line-regex"))
    assert r.exit_code == 1, r.output
    assert "bytes arrive but no frame parses" in r.output
    assert "7E1" in r.output and 'set bytesize = 7, parity = "E"' in r.output

    link = pty_pair("par-fixed")  # socat ends once both ends closed: a fresh pair
    sim = LineSim(link.device_side, reader=link.agent_side, bytesize=7, parity="E")
    sim.place(1234)
    cfg = link.agent_side.parent / "agent.toml"
    cfg.write_text(
        f'[[scales]]\nname = "s"\nport = "{link.agent_side}"\nprotocol = "line-regex"\n'
        'bytesize = 7\nparity = "E"\n'
    )
    r = with_sim(sim, lambda: run("scale", "test", "s", "--config", str(cfg), "--count", "3", "--seconds", "10"))
    assert r.exit_code == 0, r.output
    assert "1.234 kg  stable" in r.output


def test_checksum_expected_but_not_sent(pty_pair: Pty) -> None:
    """The indicator is set not to send the checksum byte: the reader takes the next frame's STX
    for it, so every frame fails its checksum. The message says so and that checksum = false fixes it."""
    link = pty_pair("nochk")
    sim = ToledoContinuousSim(link.device_side, checksum=False)
    sim.place(2500)
    r = with_sim(sim, lambda: scale_test(link, "--protocol", "toledo-continuous"))
    assert r.exit_code == 1, r.output
    assert "checksum mismatch (expected 0x" in r.output and "got 0x02" in r.output
    assert "does not send a checksum" in r.output and "set checksum = false" in r.output


def test_checksum_sent_but_not_expected(pty_pair: Pty) -> None:
    """checksum = false while the indicator sends one: the weights read, but one stray byte
    follows every frame; the summary suggests checksum = true (so frames get verified)."""
    link = pty_pair("chk")
    cfg = link.agent_side.parent / "agent.toml"
    cfg.write_text(
        f'[[scales]]\nname = "s"\nport = "{link.agent_side}"\nprotocol = "toledo-continuous"\nchecksum = false\n'
    )
    sim = ToledoContinuousSim(link.device_side)
    sim.place(2500)
    r = with_sim(sim, lambda: run("scale", "test", "s", "--config", str(cfg), "--seconds", "1.5"))
    assert r.exit_code == 0, r.output
    assert "2.500 kg  stable" in r.output
    assert "frames parse, but" in r.output and "sends a checksum" in r.output
    assert "set checksum = true" in r.output


def test_wrong_protocol_names_the_right_one(pty_pair: Pty) -> None:
    """A CAS indicator configured as line-regex: frames arrive, none matches; the captured bytes
    parse as CAS, so that is what the message says to set."""
    link = pty_pair("proto")
    sim = CasSim(link.device_side)
    sim.place(700)
    r = with_sim(sim, lambda: scale_test(link, "--protocol", "toledo-8217", "--json"))
    assert r.exit_code == 1, r.output
    doc = json.loads(r.output.strip().splitlines()[-1])["diagnosis"]
    assert doc["state"] == "unparsed" and doc["bytes"] > 0 and doc["frames"] == 0
    assert doc["findings"][0]["fix"] == 'set protocol = "cas"'


def test_wrong_baud_rate_says_baud(pty_pair: Pty) -> None:
    """A CAS indicator at 9600 read at 2400: the UART model turns its frames into a few bytes of
    garble; the message names the baud rate."""
    link = pty_pair("baud")
    sim = CasSim(link.device_side, reader=link.agent_side)
    sim.place(700)
    r = with_sim(sim, lambda: scale_test(link, "--protocol", "cas", "--baudrate", "2400"))
    assert r.exit_code == 1, r.output
    assert "bytes arrive but no frame parses" in r.output
    assert "baud rate" in r.output and "scale detect" in r.output


def test_garbage_is_not_blamed_on_a_setting_that_does_not_parse_it(pty_pair: Pty) -> None:
    """Seeded random bytes: no protocol replay parses them, so no protocol or checksum is
    suggested; the bytes are not text, so the line settings are blamed."""
    link = pty_pair("noise")
    r = with_sim(NoiseSim(link.device_side), lambda: scale_test(link, "--protocol", "cas"))
    assert r.exit_code == 1, r.output
    assert "bytes arrive but no frame parses" in r.output and "baud rate" in r.output
    assert "set protocol" not in r.output and "checksum" not in r.output


@pytest.mark.slow
def test_no_byte_at_all(pty_pair: Pty) -> None:
    """Nobody on the other end (the simulator is not started): silence is said, with what to
    check; a polled protocol adds that it was asked and did not answer."""
    link = pty_pair("silent")
    r = scale_test(link, "--protocol", "cas")
    assert r.exit_code == 1, r.output
    assert "no byte arrived in 1 s" in r.output
    assert "check the cable, the port (`coopagent serial list`)" in r.output and "by-id" in r.output
    r = scale_test(link, "--protocol", "mt-sics", "--json")
    doc = json.loads(r.output.strip().splitlines()[-1])["diagnosis"]
    assert doc["state"] == "silent"
    assert any("answers only when asked: b'SI\\r\\n' was sent" in f["cause"] for f in doc["findings"])


def _scanner_while(args: list[str], sim: ScannerSim, code: str, reader: Path) -> Result:
    """The CLI in a thread while the scanner scans, from the moment the CLI has set its end of the
    pty to 9600 baud (a fresh pty is at 38400: scans before that would be garbled by the model)."""
    out: list[Result] = []
    t = threading.Thread(target=lambda: out.append(run(*args)))
    sim.start()
    try:
        t.start()
        while t.is_alive():
            if reader_baudrate(reader) == 9600:
                sim.scan(code)
            t.join(timeout=0.1)
    finally:
        sim.stop()
    return out[0]


def test_scanner_suffix_mismatch(pty_pair: Pty) -> None:
    """The scanner ends reads with LF, the config expects CR: bytes arrive, no read is framed."""
    link = pty_pair("sfx")
    sim = ScannerSim(link.device_side, suffix=b"\n")
    args = ["scanner", "test", str(link.agent_side), "--explain-after", "1", "--seconds", "10"]
    r = _scanner_while(args, sim, "]E05901234123457", link.agent_side)
    assert r.exit_code == 1, r.output
    assert "bytes arrive but no read is framed" in r.output
    assert 'set suffix = "\\n"' in r.output


def test_scanner_parity_and_silence(pty_pair: Pty) -> None:
    """A 7E1 scanner read as 8N1 (its CR becomes 0x8D), then a scanner nobody scans with."""
    link = pty_pair("scan7")
    sim = ScannerSim(link.device_side, reader=link.agent_side, bytesize=7, parity="E")
    args = ["scanner", "test", str(link.agent_side), "--explain-after", "1", "--seconds", "10"]
    r = _scanner_while(args, sim, "]E05901234123457", link.agent_side)
    assert r.exit_code == 1, r.output
    assert 'set bytesize = 7, parity = "E"' in r.output

    link = pty_pair("scan-idle")
    r = run("scanner", "test", str(link.agent_side), "--explain-after", "1", "--seconds", "1.5", "--json")
    assert r.exit_code == 0, r.output
    docs = [json.loads(line)["diagnosis"] for line in r.output.strip().splitlines()]
    assert docs[0]["state"] == "silent" and "scan a barcode now" in docs[0]["findings"][0]["fix"]

"""The serial family's doctor checks on real pty pairs: a scale that answers, one switched off,
one unplugged (socat gone, its link removed), one speaking another protocol, and a scanner."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from drivers.serial.sim.devices import CasSim, MtSicsSim
from drivers.serial.sim.pty import PtyLink
from tests.doctor.conftest import Pc


def _scale(link: PtyLink, **over: Any) -> dict[str, Any]:
    return {"scales": [{"name": "dock-scale", "port": str(link.agent_side), "protocol": "mt-sics", **over}]}


def test_scale_answers_and_frames_parse(tmp_path: Path, pty_pair: Callable[[str], PtyLink]) -> None:
    pc = Pc(tmp_path / "pc")
    link = pty_pair("scale")
    sim = MtSicsSim(link.device_side).start()
    sim.place(1200)
    try:
        _, checks = pc.doctor(**_scale(link))
    finally:
        sim.stop()
    assert checks["serial.dock-scale.port"]["result"] == "ok"
    frames = checks["serial.dock-scale.frames"]
    assert frames["result"] == "ok" and "1200 g" in frames["message"], frames


def test_unplugged_scale(tmp_path: Path, pty_pair: Callable[[str], PtyLink]) -> None:
    pc = Pc(tmp_path / "pc")
    link = pty_pair("scale")
    config = pc.config(**_scale(link))
    link.stop()  # unplug: the device node is gone
    code, checks = pc.doctor(config)
    assert code == 2
    port = checks["serial.dock-scale.port"]
    assert port["result"] == "error" and "unplugged" in port["message"] and "by-id" in port["fix"]
    assert checks["serial.dock-scale.frames"]["result"] == "skipped"


@pytest.mark.slow
def test_scale_switched_off_does_not_answer(tmp_path: Path, pty_pair: Callable[[str], PtyLink]) -> None:
    """The port is there (USB adapter plugged) but nothing answers the polls for 3 s."""
    pc = Pc(tmp_path / "pc")
    link = pty_pair("scale")
    code, checks = pc.doctor(**_scale(link))
    assert code == 2
    assert checks["serial.dock-scale.port"]["result"] == "ok"
    frames = checks["serial.dock-scale.frames"]
    assert frames["result"] == "error" and "no byte arrived" in frames["message"], frames
    assert "check the cable" in frames["fix"] and "scale detect" in frames["fix"], frames


@pytest.mark.slow
def test_scale_speaking_another_protocol(tmp_path: Path, pty_pair: Callable[[str], PtyLink]) -> None:
    """A CAS scale streams frames, but the config says MT-SICS: bytes arrive, nothing parses."""
    pc = Pc(tmp_path / "pc")
    link = pty_pair("scale")
    sim = CasSim(link.device_side).start()
    sim.place(500)
    try:
        _, checks = pc.doctor(**_scale(link))
    finally:
        sim.stop()
    frames = checks["serial.dock-scale.frames"]
    assert frames["result"] == "error" and "no frame parses" in frames["message"], frames
    assert 'set protocol = "cas"' in frames["fix"], "the doctor names the protocol that reads (as scale test does)"


def test_scanner_port_opens_frames_need_a_scan(tmp_path: Path, pty_pair: Callable[[str], PtyLink]) -> None:
    pc = Pc(tmp_path / "pc")
    link = pty_pair("scan")
    _, checks = pc.doctor(scanners=[{"name": "store-room", "port": str(link.agent_side)}])
    assert checks["serial.store-room.port"]["result"] == "ok"
    frames = checks["serial.store-room.frames"]
    assert frames["result"] == "skipped" and "scanner test store-room" in frames["message"]

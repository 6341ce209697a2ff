"""Readers on real pseudo-terminal pairs (socat) against device simulators at their own line settings."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from agent.config.loader import parse_config
from drivers.serial.devices import ScaleDevice, ScannerDevice
from drivers.serial.sim.devices import (
    CasSim,
    LineSim,
    MtSicsSim,
    ScaleSim,
    ScannerSim,
    Toledo8217Sim,
    ToledoContinuousSim,
)
from drivers.serial.sim.pty import PtyLink
from tests.peers.net import wait_for
from tests.serial.conftest import Running
from tests.serial.doubles import FakeContext, MemorySink


def scanner_ctx(port: Path, **kw: Any) -> tuple[FakeContext, ScannerDevice]:
    cfg = parse_config(
        {
            "scanners": [
                {
                    "name": "dock",
                    "port": str(port),
                    "mode": "scan-only",
                    "reconnect_min_s": 0.05,
                    "reconnect_max_s": 0.2,
                    **kw,
                }
            ]
        }
    )
    ctx = FakeContext(cfg, MemorySink())
    return ctx, ScannerDevice(cfg.scanners[0], ctx, cfg.workflow)


def test_scanner_reads_become_scan_records(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    link = pty_pair("scan")
    ctx, dev = scanner_ctx(link.agent_side, suffix="\r\n", prefix="<STX>")
    run_component(dev)
    sim = ScannerSim(link.device_side, suffix=b"\r\n", prefix=b"\x02").start()
    try:
        wait_for(lambda: ctx.records.events("online"), what="online event")
        sim.scan("]E05901234123457")
        sim.write(b"garbage without prefix\r\n" + bytes(range(256)) * 20)
        sim.scan("5901234123458")
        sim.scan("]C1010590123412345710LOT1\x1d21S1")
        scans = wait_for(lambda: len(ctx.records.of("scan")) >= 3 and ctx.records.of("scan"), what="3 scans")
    finally:
        sim.stop()
    data = [s["data"] for s in scans]
    assert data[0]["gtin"] == "05901234123457" and data[0]["valid"]
    assert data[1]["valid"] is False and "check digit" in data[1]["reason"]
    assert data[2]["batch"] == "LOT1" and data[2]["serial"] == "S1"
    assert all(s["src"] == "scanner:dock" and s["at"] > 0 for s in scans)
    assert ctx.health["scanner:dock"] == "ok"


def test_unplug_and_replug_recover_with_one_event_each(tmp_path: Path, run_component: Callable[..., Running]) -> None:
    """The by-id link vanishes on unplug: one offline event, retries with backoff, online again on replug."""
    link = PtyLink(tmp_path / "by-id-scanner", tmp_path / "dev-side").start()
    ctx, dev = scanner_ctx(link.agent_side)
    run_component(dev)
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        link.stop()
        wait_for(lambda: ctx.records.events("offline"), what="offline after unplug")
        assert ctx.health["scanner:dock"] == "down"
        link.start()
        wait_for(lambda: len(ctx.records.events("online")) == 2, what="online after replug")
        sim = ScannerSim(link.device_side).start()
        sim.scan("]E05901234123457")
        wait_for(lambda: ctx.records.of("scan"), what="a scan after replug")
        sim.stop()
        # backoff retries while unplugged wrote no further events
        assert [e["event"] for e in ctx.records.events()] == ["online", "offline", "online"]
    finally:
        link.stop()


def test_missing_port_at_start_is_offline_until_it_appears(
    tmp_path: Path, run_component: Callable[..., Running]
) -> None:
    link = PtyLink(tmp_path / "late", tmp_path / "late-dev")
    ctx, dev = scanner_ctx(link.agent_side)
    run_component(dev)
    wait_for(lambda: ctx.records.events("offline"), what="offline at start")
    with link:
        wait_for(lambda: ctx.records.events("online"), what="online once plugged")
    detail = ctx.records.events("offline")[0]["detail"]
    assert detail["port"] == str(link.agent_side) and "reason" in detail


SCALES: list[tuple[str, type[ScaleSim], dict[str, Any]]] = [
    ("mt-sics", MtSicsSim, {}),
    ("toledo-8217", Toledo8217Sim, {}),
    ("toledo-continuous", ToledoContinuousSim, {}),
    ("cas", CasSim, {}),
    ("line-regex", LineSim, {"terminator": "\\r\\n"}),
]


@pytest.mark.parametrize("protocol, sim_cls, extra", SCALES, ids=[s[0] for s in SCALES])
def test_scale_records_one_weight_per_placement(
    protocol: str,
    sim_cls: type[ScaleSim],
    extra: dict[str, Any],
    pty_pair: Callable[[str], PtyLink],
    run_component: Callable[..., Running],
) -> None:
    link = pty_pair(protocol)
    cfg = parse_config(
        {
            "scales": [
                {
                    "name": "dock",
                    "port": str(link.agent_side),
                    "protocol": protocol,
                    "poll_interval_s": 0.05,
                    **extra,
                }
            ]
        }
    )
    ctx = FakeContext(cfg, MemorySink())
    dev = ScaleDevice(cfg.scales[0], ctx)
    sim = sim_cls(link.device_side).start()
    run_component(dev)
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        sim.place(1500, motion=True)
        sim.place(1500)
        wait_for(lambda: ctx.records.of("weight"), what="first weight")
        sim.over = True
        wait_for(
            lambda: [e for e in ctx.records.events("error") if e["detail"].get("state") == "overload"],
            what="overload event",
        )
        sim.place(0)
        wait_for(lambda: ctx.records.events("recovered"), what="recovered")
        sim.place(2250)
        wait_for(lambda: len(ctx.records.of("weight")) >= 2, what="second weight")
    finally:
        sim.stop()
    grams = [w["data"]["grams"] for w in ctx.records.of("weight")]
    assert grams == [1500, 2250]
    assert all(w["data"]["scale"] == "dock" and w["src"] == "scale:dock" for w in ctx.records.of("weight"))


def test_mt_sics_zero_and_tare_reach_the_scale(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    link = pty_pair("zt")
    cfg = parse_config(
        {"scales": [{"name": "dock", "port": str(link.agent_side), "protocol": "mt-sics", "poll_interval_s": 0.05}]}
    )
    ctx = FakeContext(cfg, MemorySink())
    dev = ScaleDevice(cfg.scales[0], ctx)
    sim = MtSicsSim(link.device_side, si_reply_id="SI").start()
    run_component(dev)
    try:
        sim.place(700)
        wait_for(lambda: ctx.records.of("weight"), what="weight answered with SI id")
        assert dev.request("tare") and dev.request("zero")
        wait_for(lambda: "T" in sim.commands and "Z" in sim.commands, what="T and Z sent")
    finally:
        sim.stop()


def test_silent_polled_scale_is_reported_not_responding(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    link = pty_pair("silent")
    cfg = parse_config(
        {
            "scales": [
                {
                    "name": "dock",
                    "port": str(link.agent_side),
                    "protocol": "toledo-8217",
                    "poll_interval_s": 0.05,
                    "response_timeout_s": 0.3,
                }
            ]
        }
    )
    ctx = FakeContext(cfg, MemorySink())
    run_component(ScaleDevice(cfg.scales[0], ctx))
    wait_for(
        lambda: [e for e in ctx.records.events("error") if e["detail"].get("state") == "not responding"],
        what="not responding event",
    )
    assert ctx.health["scale:dock"] == "degraded"


def test_reads_wait_out_a_buffer_outage_in_order_and_overflow_is_a_gap(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    """While the buffer refuses records, reads are held (bounded) with their arrival time and id,
    then committed in order; what did not fit becomes one `gap` record, not silence."""
    link = pty_pair("outage")
    ctx, dev = scanner_ctx(link.agent_side)
    dev.held.hold_max = 3
    dev.held.retry_s = 0.05
    run_component(dev)
    sim = ScannerSim(link.device_side).start()
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        ctx.records.fail = True
        codes = ["5901234123457", "4006381333931", "9506000134352", "96385074", "12345670"]
        for code in codes:
            sim.scan(code)
        wait_for(lambda: dev.held.dropped == 2, what="two reads beyond the hold limit")
        assert ctx.health["scanner:dock"] == "degraded" and ctx.records.of("scan") == []
        ctx.records.fail = False
        wait_for(lambda: ctx.records.of("gap"), what="the gap record")
    finally:
        sim.stop()
    scans = ctx.records.of("scan")
    assert [s["data"]["raw"] for s in scans] == codes[:3]
    assert scans[0]["at"] <= scans[1]["at"] <= scans[2]["at"]
    assert ctx.records.of("gap")[0]["data"]["what"] == "2 scan reads"
    assert ctx.health["scanner:dock"] == "ok"


def test_a_flood_of_garbage_neither_grows_memory_nor_stops_the_reader(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    import random

    link = pty_pair("flood")
    ctx, dev = scanner_ctx(link.agent_side, max_frame_bytes=256)
    run_component(dev)
    sim = ScannerSim(link.device_side).start()
    rnd = random.Random(1234)
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        noise = bytes(b for b in rnd.randbytes(1 << 20) if b != 0x0D)
        sim.write(noise + b"\r")  # without a prefix, only a suffix ends an overlong frame
        sim.scan("5901234123457")
        wait_for(
            lambda: any(s["data"]["raw"].endswith("5901234123457") for s in ctx.records.of("scan")),
            timeout=30,
            what="the read after 1 MiB of noise",
        )
        assert dev.framer.buffered <= 256 + 1
        assert dev.framer.stats.overruns >= 1
        assert [s["data"]["raw"] for s in ctx.records.of("scan")] == ["5901234123457"]
    finally:
        sim.stop()


def test_a_refused_command_is_a_device_event(
    tmp_path: Path, pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    """A stock room has no screen: a command the workflow refuses must leave a visible trace."""
    from drivers.serial import runtime

    link = pty_pair("refuse")
    cfg = parse_config(
        {
            "agent": {"data_dir": str(tmp_path / "data")},
            "api": {"token_file": str(tmp_path / "t")},
            "scanners": [{"name": "dock", "port": str(link.agent_side), "mode": "count"}],
        }
    )
    ctx = FakeContext(cfg, MemorySink())
    for c in runtime.build_components(ctx):
        run_component(c)
    sim = ScannerSim(link.device_side).start()
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        sim.scan("CMD:COUNT:CLOSE")
        ev = wait_for(lambda: ctx.records.events("command_refused"), what="command_refused event")
    finally:
        sim.stop()
    assert ev[0]["device"] == "scanner:dock" and "no open session" in ev[0]["detail"]["reason"]
    assert ctx.records.of("scan")[0]["data"]["command"] == "count-close"


def test_a_weight_waits_out_a_buffer_outage(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    link = pty_pair("w-outage")
    cfg = parse_config({"scales": [{"name": "dock", "port": str(link.agent_side), "protocol": "cas"}]})
    ctx = FakeContext(cfg, MemorySink())
    dev = ScaleDevice(cfg.scales[0], ctx)
    dev.held.retry_s = 0.05
    sim = CasSim(link.device_side).start()
    run_component(dev)
    try:
        wait_for(lambda: ctx.records.events("online"), what="online")
        ctx.records.fail = True
        sim.place(1500)
        # The weight is queued before the refused submit marks the scale degraded: wait for both
        # (a CI run on a loaded machine read the health between the two).
        wait_for(lambda: len(dev.held) == 1 and ctx.health.get("scale:dock") == "degraded",
                 what="the weight held and the scale degraded")
        ctx.records.fail = False
        wait_for(lambda: ctx.records.of("weight"), what="the weight committed")
    finally:
        sim.stop()
    assert [w["data"]["grams"] for w in ctx.records.of("weight")] == [1500]
    wait_for(lambda: ctx.health["scale:dock"] == "ok", what="health back to ok")


def test_scanner_set_to_7e1_reads_a_7e1_scanner_on_a_line_that_keeps_bit_7(
    pty_pair: Callable[[str], PtyLink], run_component: Callable[..., Running]
) -> None:
    """A pty (like some USB adapters) ignores CS7, so a 7E1 scanner's parity bit arrives in bit 7
    even when the port is set to 7 data bits; the CR became 0x8D and no read was ever framed.
    The reader clears bit 7 itself for bytesize = 7. The simulator emulates the 7E1 line
    (`reader=`, drivers/serial/sim/uart.py)."""
    link = pty_pair("scan7e1")
    ctx, dev = scanner_ctx(link.agent_side, bytesize=7, parity="E")
    run_component(dev)
    sim = ScannerSim(link.device_side, reader=link.agent_side, bytesize=7, parity="E").start()
    try:
        wait_for(lambda: ctx.records.events("online"), what="online event")

        def scanned() -> bool:
            sim.scan("]E05901234123457")
            return bool(ctx.records.of("scan"))

        wait_for(scanned, what="a scan record")
    finally:
        sim.stop()
    assert ctx.records.of("scan")[0]["data"]["gtin"] == "05901234123457"

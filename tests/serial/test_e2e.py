"""A dock scanner and scale on pty pairs, driven through the real agent (buffer, chain, Mosquitto)
to the reference receiver: a receiving, then a stock-take that survives an agent restart."""

from __future__ import annotations

from typing import Any

import pytest

from drivers.serial import runtime
from drivers.serial.sim.devices import MtSicsSim, ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.peers.agent import Branch
from tests.peers.net import wait_for

pytestmark = pytest.mark.slow

GTIN_A = "5901234123457"
GTIN_B = "4006381333931"


def received(branch: Branch, kind: str) -> list[dict[str, Any]]:
    return [r for r in branch.rx_records() if r["kind"] == kind]


def test_receiving_and_stock_take_reach_the_receiver(branch: Branch) -> None:
    scan_link = PtyLink(branch.root / "tty-scanner", branch.root / "dev-scanner").start()
    scale_link = PtyLink(branch.root / "tty-scale", branch.root / "dev-scale").start()
    scanner = ScannerSim(scan_link.device_side).start()
    scale = MtSicsSim(scale_link.device_side).start()
    devices = {
        "scanners": [{"name": "dock", "port": str(scan_link.agent_side), "scale": "dock", "location": "DOCK-1"}],
        "scales": [
            {
                "name": "dock",
                "port": str(scale_link.agent_side),
                "protocol": "mt-sics",
                "poll_interval_s": 0.05,
            }
        ],
        "workflow": {"pair_window_s": 5},
    }
    try:
        branch.start_receiver()
        agent = branch.start_agent(**devices)
        wait_for(
            lambda: agent.health().get("scanner:dock") == "ok" and agent.health().get("scale:dock") == "ok",
            what="scanner and scale online",
        )
        engine = runtime.workflow_engine()
        assert engine is not None

        # Receiving: the delivery note, an item weighed on the dock scale, then 3 pieces of another.
        scanner.scan("INV-77")
        scanner.scan("]E0" + GTIN_A)
        wait_for(lambda: engine.store.stations_with_pending() == ["dock"], what="item waiting for its weight")
        scale.place(2500)
        wait_for(lambda: not engine.store.stations_with_pending(), what="weight paired")
        scale.place(0)
        scanner.scan("CMD:QTY:3")
        scanner.scan(GTIN_B)
        # Stock-take on the same scanner: opening the session completes B as 3 pieces.
        scanner.scan("CMD:COUNT:OPEN:A-12")
        wait_for(lambda: engine.status()["sessions"], what="session open")
        scanner.scan(GTIN_A)
        wait_for(lambda: engine.status()["sessions"][0]["lines"] == 1, what="first count line")

        branch.stop_agent()  # the agent restarts in the middle of the count
        agent = branch.start_agent(**devices)
        wait_for(lambda: agent.health().get("scanner:dock") == "ok", what="scanner online again")
        engine = runtime.workflow_engine()
        assert engine is not None and engine.status()["sessions"][0]["lines"] == 1
        scanner.scan(GTIN_A)
        wait_for(lambda: engine.status()["sessions"][0]["lines"] == 2, what="count after restart")
        with branch.client() as c:  # the agent's own API serves the count routes with its token
            st = c.get("/v1/count/status")
            assert st.status_code == 200, st.text
            assert st.json()["sessions"][0]["lines"] == 2 and "totals" not in st.json()["sessions"][0]
            assert c.get("/v1/count/status", headers={"Authorization": "Bearer nope"}).status_code == 401
        scanner.scan("CMD:COUNT:CLOSE")

        wait_for(
            lambda: [s for s in received(branch, "count_session") if s["data"]["state"] == "closed"],
            timeout=20,
            what="closed session at the receiver",
        )
    finally:
        branch.stop_agent()
        scanner.stop()
        scale.stop()
        scan_link.stop()
        scale_link.stop()

    moves = [r["data"] for r in received(branch, "stock_move")]
    assert [(m["gtin"], m.get("weight_g"), m.get("qty"), m["doc"]) for m in moves] == [
        ("0" + GTIN_A, 2500, None, "INV-77"),
        ("0" + GTIN_B, None, 3, "INV-77"),
    ]
    assert all(m["type"] == "receive" and m["to"] == "DOCK-1" for m in moves)
    closed = [s["data"] for s in received(branch, "count_session") if s["data"]["state"] == "closed"][0]
    assert closed["totals"] == {"0" + GTIN_A: {"lines": 2, "qty": 2}} and closed["locations"] == ["A-12"]
    counts = received(branch, "count")
    assert len(counts) == 2 and {c["data"]["session"] for c in counts} == {closed["session"]}
    weights = [r["data"]["grams"] for r in received(branch, "weight")]
    assert weights == [2500]
    scans = received(branch, "scan")
    assert len(scans) == 8 and all(s["src"] == "scanner:dock" for s in scans)
    assert moves and all(m["scan"] in {s["id"] for s in scans} for m in moves)
    events = [(r["data"]["device"], r["data"]["event"]) for r in received(branch, "device_event")]
    assert ("scanner:dock", "online") in events and ("scale:dock", "online") in events

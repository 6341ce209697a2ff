"""Receiving and stock-take on the workflow engine with its real SQLite state file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from biip.checksums import gs1_standard_check_digit

from agent.config.loader import parse_config
from drivers.serial.scanner import ScanInterpreter
from drivers.serial.workflows.engine import WorkflowEngine, WorkflowError
from tests.serial.doubles import MemorySink

T0 = 1_767_225_600_000  # 2026-01-01 UTC: the validator refuses times before 2020
GTIN_A = "5901234123457"
GTIN_B = "4006381333931"


def ean13(first12: str) -> str:
    return first12 + str(gs1_standard_check_digit(first12))


class Dock:
    """An engine plus the interpreter a scanner would use; scans at explicit times (ms)."""

    def __init__(self, root: Path, sink: MemorySink | None = None, **wf: Any) -> None:
        self.cfg = parse_config(
            {
                "agent": {"data_dir": str(root)},
                "scanners": [
                    {"name": "dock", "port": "/dev/ttyUSB0", "scale": "dock", "location": "DOCK-1"},
                    {"name": "room", "port": "/dev/ttyUSB1", "mode": "count"},
                ],
                "scales": [{"name": "dock", "port": "/dev/ttyUSB2", "protocol": "mt-sics"}],
                "workflow": {"pair_window_s": 2, **wf},
            }
        )
        self.sink = sink or MemorySink()
        self.engine = WorkflowEngine(self.cfg.workflow, self.cfg.scanners, root, self.sink)
        self.si = ScanInterpreter(self.cfg.workflow)

    def scan(self, code: str, at: int, device: str = "dock") -> dict[str, Any]:
        """at is ms after T0."""
        return self.engine.on_scan(device, self.si.interpret(code.encode()), T0 + at, scan_id=f"scan-{at}")

    def weight(self, grams: int, at: int) -> None:
        self.engine.on_weight("dock", grams, T0 + at)

    def tick(self, now: int) -> None:
        self.engine.tick(now=T0 + now)

    def moves(self) -> list[dict[str, Any]]:
        return [r["data"] for r in self.sink.of("stock_move")]


def test_receiving_doc_then_items_with_qty_weight_and_labels(tmp_path: Path) -> None:
    d = Dock(tmp_path)
    assert d.scan(GTIN_A, 1000)["result"] == "ignored"  # no delivery document yet
    assert d.scan("INV-2024/118", 1100) == {"result": "set", "doc": "INV-2024/118"}
    d.scan("CMD:QTY:12", 1200)
    assert d.scan(GTIN_A, 1300)["result"] == "waiting-for-weight"
    assert d.scan(GTIN_B, 1400)["result"] == "waiting-for-weight"  # completes A as 12 pieces
    d.weight(2480, 1900)  # B weighed within the window
    d.scan(ean13("201234501234"), 5000)  # a weight label: no waiting
    d.scan(GTIN_A, 6000)
    d.weight(999, 9000)  # too late for A (window 2 s)
    d.tick(9001)
    moves = d.moves()
    assert [(m["gtin"][-13:], m.get("qty"), m.get("weight_g")) for m in moves] == [
        (GTIN_A, 12, None),
        (GTIN_B, None, 2480),
        (ean13("201234500000"), None, 1234),
        (GTIN_A, 1, None),
    ]
    assert all(
        m["type"] == "receive" and m["doc"] == "INV-2024/118" and m["to"] == "DOCK-1" and m["from"] == "supplier"
        for m in moves
    )
    assert moves[0]["scan"] == "scan-1300"
    assert [r["at"] - T0 for r in d.sink.of("stock_move")] == [1300, 1400, 5000, 6000]


def test_mode_commands_issue_transfer_waste(tmp_path: Path) -> None:
    d = Dock(tmp_path, pair_window_s=0)
    for code in (
        "CMD:MODE:TRANSFER",
        "CMD:LOC:A-1",
        "CMD:TO:B-2",
        "CMD:DOC:TR-9",
        GTIN_A,
        "CMD:MODE:WASTE",
        GTIN_B,
        "CMD:MODE:ISSUE",
        "CMD:DOC:CLEAR",
    ):
        d.scan(code, 1)
    assert d.scan(GTIN_A, 2) == {"result": "ignored", "reason": "issue: scan the document first"}
    d.scan("ISS-4", 3)
    d.scan(GTIN_A, 4)
    assert [(m["type"], m["from"], m["to"], m["doc"]) for m in d.moves()] == [
        ("transfer", "A-1", "B-2", "TR-9"),
        ("waste", "A-1", "waste", "TR-9"),
        ("issue", "A-1", "issued", "ISS-4"),
    ]


def test_stock_take_by_command_barcodes_blind_and_totals(tmp_path: Path) -> None:
    d = Dock(tmp_path)
    opened = d.scan("CMD:COUNT:OPEN:A-12", 1000, device="room")
    assert opened["result"] == "session-open" and opened["blind"] is True
    for i, code in enumerate([GTIN_A, GTIN_A, GTIN_B, "CMD:QTY:6", GTIN_B, "not-a-gtin-000"]):
        d.scan(code, 2000 + i, device="room")
    status = d.engine.status()["sessions"]
    assert status[0]["lines"] == 4 and "totals" not in status[0]  # blind: the counter sees no quantities
    closed = d.scan("CMD:COUNT:CLOSE", 3000, device="room")
    assert closed == {"result": "session-closed", "session": opened["session"], "lines": 4}
    counts = [r["data"] for r in d.sink.of("count")]
    assert [(c["gtin"][-13:], c["qty"]) for c in counts] == [
        (GTIN_A, 1),
        (GTIN_A, 1),
        (GTIN_B, 1),
        (GTIN_B, 6),
    ]
    assert all(c["session"] == opened["session"] and c["location"] == "A-12" for c in counts)
    sessions = [r["data"] for r in d.sink.of("count_session")]
    assert [s["state"] for s in sessions] == ["open", "closed"]
    assert sessions[1]["totals"] == {
        "0" + GTIN_B: {"lines": 2, "qty": 7},
        "0" + GTIN_A: {"lines": 2, "qty": 2},
    }
    assert sessions[1]["locations"] == ["A-12"]


def test_recount_and_concurrent_sessions_on_different_devices(tmp_path: Path) -> None:
    d = Dock(tmp_path)
    with pytest.raises(WorkflowError, match="no closed count at A-12"):
        d.engine.open_session("A-12", "room", recount=True)
    s1 = d.engine.open_session("A-12", "room", blind=False)
    with pytest.raises(WorkflowError, match="already being counted"):
        d.engine.open_session("A-12", "dock")
    s2 = d.engine.open_session("B-3", "dock")
    with pytest.raises(WorkflowError, match="already has session"):
        d.engine.open_session("C-1", "room")
    d.scan(GTIN_A, 10, device="room")
    d.scan(GTIN_B, 11, device="dock")
    d.tick(10_000)  # the dock's item waited for a weight that never came
    assert d.engine.status()["sessions"][0]["totals"] == {"0" + GTIN_A: {"lines": 1, "qty": 1}}
    c1 = d.engine.close_session(device="room")
    c2 = d.engine.close_session(s2["session"])
    assert list(c1["totals"]) == ["0" + GTIN_A] and list(c2["totals"]) == ["0" + GTIN_B]
    re = d.engine.open_session("A-12", "room", recount=True)
    assert re["recount_of"] == s1["session"]


def test_sessions_and_pending_items_survive_a_restart(tmp_path: Path) -> None:
    sink = MemorySink()
    d = Dock(tmp_path, sink)
    s = d.scan("CMD:COUNT:OPEN:A-12", 1, device="room")
    d.scan(GTIN_A, 2, device="room")
    d.scan("INV-7", 3)
    d.scan(GTIN_B, 4)  # pending: waits for a weight
    d.engine.close()  # the agent stops (or dies) here

    d2 = Dock(tmp_path, sink)
    d2.tick(10_000)
    assert [m["gtin"][-13:] for m in d2.moves()] == [GTIN_B]
    assert d2.moves()[0]["doc"] == "INV-7"
    d2.scan(GTIN_B, 20_000, device="room")
    closed = d2.engine.close_session(device="room")
    assert closed["session"] == s["session"] and closed["lines"] == 2


def test_outbox_keeps_records_while_the_buffer_refuses_and_delivers_them_once(tmp_path: Path) -> None:
    sink = MemorySink()
    d = Dock(tmp_path, sink, pair_window_s=0)
    d.scan("INV-1", 1)
    sink.fail = True
    d.scan(GTIN_A, 2)
    d.scan(GTIN_B, 3)
    assert d.moves() == [] and d.engine.store.outbox_size() == 2
    d.engine.close()
    sink.fail = False
    d2 = Dock(tmp_path, sink, pair_window_s=0)
    assert d2.engine.flush() == 2
    assert [m["gtin"][-13:] for m in d2.moves()] == [GTIN_A, GTIN_B]
    assert d2.engine.flush() == 0 and len(sink.of("stock_move")) == 2


def test_a_record_the_buffer_refuses_for_good_is_parked_not_blocking(tmp_path: Path) -> None:
    """A record the validator rejects would be retried forever and hold back every record behind
    it in the outbox; it is parked in the `rejected` table instead."""
    sink = MemorySink()
    d = Dock(tmp_path, sink, pair_window_s=0)
    with d.engine.store.tx() as db:
        d.engine.store.enqueue(
            db,
            {
                "id": "0190a000-0000-7000-8000-000000000001",
                "kind": "count",
                "at": T0,
                "src": "scanner:dock",
                "data": {"session": "s"},
            },
        )
    d.scan("INV-1", 2)
    d.scan(GTIN_A, 3)
    assert [m["gtin"][-13:] for m in d.moves()] == [GTIN_A]
    assert d.engine.store.rejected_count() == 1 and d.engine.store.outbox_size() == 0


def test_mode_survives_restart_until_the_config_changes_it(tmp_path: Path) -> None:
    d = Dock(tmp_path, pair_window_s=0)
    d.scan("CMD:MODE:WASTE", 1)
    d.engine.close()
    d2 = Dock(tmp_path, pair_window_s=0)
    d2.scan("W-1", 2)
    d2.scan(GTIN_A, 3)
    assert d2.moves()[-1]["type"] == "waste"
    d2.engine.close()
    d3 = Dock(tmp_path, pair_window_s=0)
    d3.cfg.scanners[0].mode = "issue"
    d3.engine.close()
    d3.engine = type(d3.engine)(d3.cfg.workflow, d3.cfg.scanners, tmp_path, d3.sink)
    d3.scan(GTIN_A, 4)
    assert d3.moves()[-1]["type"] == "issue"


def test_bad_commands_are_refused_not_applied(tmp_path: Path) -> None:
    d = Dock(tmp_path)
    assert d.scan("CMD:QTY:100000", 1)["result"] == "refused"
    assert d.scan("CMD:COUNT:CLOSE", 2)["result"] == "refused"
    assert d.scan("CMD:MODE:SELL", 3)["result"] == "refused"

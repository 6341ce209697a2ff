"""Scanner and scale readers: bytes -> scan / weight records -> the workflow engine."""

from __future__ import annotations

import collections
import logging
import threading
import time
from typing import TYPE_CHECKING, Any

import serial

from core.interfaces import AgentContext
from drivers.serial.config import ScannerConfig, WorkflowConfig
from drivers.serial.framing import DelimitedFramer
from drivers.serial.holding import HeldRecords
from drivers.serial.placement import PlacementFilter
from drivers.serial.port import SerialReader
from drivers.serial.scales import ScaleConfigBase, make_protocol
from drivers.serial.scanner import ScanInterpreter

if TYPE_CHECKING:
    from drivers.serial.workflows.engine import WorkflowEngine

log = logging.getLogger(__name__)


class ScannerDevice(SerialReader):
    kind = "scanner"

    def __init__(
        self, cfg: ScannerConfig, ctx: AgentContext, wf: WorkflowConfig, engine: WorkflowEngine | None = None
    ) -> None:
        super().__init__(cfg, ctx)
        self.scfg = cfg
        self.interpreter = ScanInterpreter(wf)
        self.engine = engine
        self.framer = self._framer()
        self.held = HeldRecords(self, "scan reads")

    def _framer(self) -> DelimitedFramer:
        return DelimitedFramer(self.scfg.suffix_bytes, self.scfg.prefix_bytes, self.scfg.max_frame_bytes)

    def on_open(self, port: serial.Serial) -> None:
        self.framer = self._framer()

    def on_bytes(self, data: bytes, at_ms: int) -> None:
        for frame in self.framer.feed(data):
            self.handle_frame(frame, at_ms)

    def on_idle(self, port: serial.Serial, now: float) -> None:
        if self.held:
            self.held.deliver(now)

    def handle_frame(self, frame: bytes, at_ms: int) -> None:
        if not frame.strip(b"\r\n"):
            return  # an empty frame: CR LF from a scanner configured for CR, or a double suffix
        scan = self.interpreter.interpret(frame)
        record = {"kind": "scan", "at": at_ms, "src": self.name, "data": {**scan, "scanner": self.cfg.name}}
        self.held.add(record, time.monotonic(), lambda rec: self._workflow(scan, rec))

    def _workflow(self, scan: dict[str, Any], record: dict[str, Any]) -> None:
        if self.engine is None:
            return
        try:
            outcome = self.engine.on_scan(self.cfg.name, scan, record["at"], record["id"])
        except Exception:  # a workflow bug must not stop the scanner; the scan is already recorded
            log.exception("%s: workflow failed on a scan", self.name)
            return
        log.debug("%s: %s", self.name, outcome)
        if outcome.get("result") == "refused":
            # No screen at the dock: the refusal is evidence the centre (and the technician) can see.
            self.event("command_refused", {"command": scan.get("raw"), "reason": outcome.get("reason")})


class ScaleDevice(SerialReader):
    kind = "scale"

    def __init__(self, cfg: ScaleConfigBase, ctx: AgentContext, engine: WorkflowEngine | None = None) -> None:
        super().__init__(cfg, ctx)
        self.scfg = cfg
        self.engine = engine
        self.protocol = make_protocol(cfg)
        self.filter = PlacementFilter(cfg.zero_band_g, cfg.change_band_g)
        self._writes: collections.deque[bytes] = collections.deque(maxlen=16)
        self._lock = threading.Lock()
        self._last_poll = 0.0
        self._last_rx = 0.0
        self._silent = False
        self.held = HeldRecords(self, "weights")

    def request(self, what: str) -> bool:
        """Queue a zero / tare / clear-tare command for the reader thread; False if the protocol has none."""
        cmd = {
            "zero": self.protocol.zero_command,
            "tare": self.protocol.tare_command,
            "clear-tare": self.protocol.clear_tare_command,
        }[what]()
        if cmd is None:
            return False
        with self._lock:
            self._writes.append(cmd)
        return True

    def on_open(self, port: serial.Serial) -> None:
        self.protocol = make_protocol(self.scfg)
        self._last_rx = time.monotonic()
        self._last_poll = 0.0

    def on_idle(self, port: serial.Serial, now: float) -> None:
        with self._lock:
            pending = list(self._writes)
            self._writes.clear()
        for cmd in pending:
            port.write(cmd)
        if self.held:
            self.held.deliver(now)
        poll = self.protocol.poll_command()
        if poll is not None and now - self._last_poll >= self.scfg.poll_interval_s:
            self._last_poll = now
            port.write(poll)
        if not self._silent and now - self._last_rx > max(
            self.scfg.response_timeout_s, 2 * self.scfg.poll_interval_s
        ):
            self._silent = True
            self.problem("silent", True)
            self.event("error", {"state": "not responding", "port": self.cfg.port})

    def on_bytes(self, data: bytes, at_ms: int) -> None:
        self._last_rx = time.monotonic()
        if self._silent:
            self._silent = False
            self.problem("silent", False)
            self.event("recovered", {"state": "responding"})
        for reading in self.protocol.feed(data):
            d = self.filter.update(reading)
            if d.state_change is not None:
                self._state_event(d.state_change, reading.detail)
            if d.weight_g is not None:
                self._record_weight(d.weight_g, reading.net, reading.tare_g, at_ms)

    def _state_event(self, state: str, detail: dict[str, Any]) -> None:
        if state == "ok":
            self.event("recovered", {"state": "ok"})
        else:
            self.event("error", {"state": state, **{k: v for k, v in detail.items() if k != "frame"}})

    def _record_weight(self, grams: int, net: bool, tare_g: int | None, at_ms: int) -> None:
        data: dict[str, Any] = {"grams": grams, "scale": self.cfg.name, "net": net}
        if tare_g:
            data["tare_g"] = tare_g
        record = {"kind": "weight", "at": at_ms, "src": self.name, "data": data}
        self.held.add(record, time.monotonic(), lambda rec: self._workflow(grams, at_ms))

    def _workflow(self, grams: int, at_ms: int) -> None:
        if self.engine is None:
            return
        try:
            self.engine.on_weight(self.cfg.name, grams, at_ms)
        except Exception:  # a workflow bug must not stop the scale; the weight is already recorded
            log.exception("%s: workflow failed on a weight", self.name)

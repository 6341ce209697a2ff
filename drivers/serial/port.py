"""The port side every serial device shares: open, read, survive unplug and replug.

A SerialReader is a supervised Component. It opens the configured path (a /dev/serial/by-id
link disappears on unplug and comes back on replug), reads whatever arrives and hands the
bytes to its subclass, and on any port error closes, reports `offline`, and retries with
exponential backoff until the path works again (`online`). Only changes are reported, so a
scanner left unplugged all weekend writes one offline event, not thousands.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import abstractmethod
from typing import Any

import serial

from core.interfaces import AgentContext, Component, Health
from drivers.serial.portcfg import PortSettings

log = logging.getLogger(__name__)

READ_TIMEOUT_S = 0.02  # bounds both shutdown time and the poll timer's resolution


def open_port(cfg: PortSettings, timeout: float = READ_TIMEOUT_S) -> serial.Serial:
    """Open with the configured line settings; exclusive, so two readers never split one device's bytes."""
    return serial.Serial(
        port=cfg.port, timeout=timeout, write_timeout=1.0, exclusive=True, **cfg.serial_kwargs()
    )


def strip_bit7(data: bytes, cfg: PortSettings) -> bytes:
    """With 7 data bits, clear bit 7 (the parity bit when the line is read as 8 bits).

    A UART set to CS7 already delivers 7-bit bytes; a pty and some USB adapters ignore CS7,
    and then the device's parity bit would land in bit 7 of every byte.
    """
    return data.translate(_MASK7) if cfg.bytesize == 7 else data


_MASK7 = bytes(b & 0x7F for b in range(256))


def wall_ms() -> int:
    return time.time_ns() // 1_000_000


class SerialReader(Component):
    kind = "serial"

    def __init__(self, cfg: PortSettings, ctx: AgentContext) -> None:
        self.cfg = cfg
        self.ctx = ctx
        self.name = f"{self.kind}:{cfg.name}"
        self.state: str | None = None  # None until the first open attempt, then "online"/"offline"
        self._health: Health = "down"
        self._problems: set[str] = set()  # why an online device is degraded ("buffer", "silent")

    def health(self) -> Health:
        return self._health

    def event(self, event: str, detail: dict[str, Any]) -> None:
        """A spec device_event; never lets a buffer problem stop the reader."""
        try:
            self.ctx.device_event(self.name, event, detail, src=self.name)
        except Exception:  # the buffer reports its own failures; the reader must keep reading
            log.exception("%s: could not record device_event %s", self.name, event)

    def problem(self, name: str, present: bool) -> None:
        """Mark or clear one reason for `degraded`; health is recomputed from all of them."""
        if present:
            self._problems.add(name)
        else:
            self._problems.discard(name)
        self._update_health()

    def _update_health(self, stopped: bool = False) -> None:
        health: Health = (
            "down" if stopped or self.state != "online" else ("degraded" if self._problems else "ok")
        )
        if health != self._health:
            self._health = health
            self.ctx.set_health(self.name, health)

    def _set_state(self, state: str, detail: dict[str, Any]) -> None:
        if state == self.state:
            return
        self.state = state
        log.info("%s %s (%s)", self.name, state, self.cfg.port)
        self._update_health()
        self.event(state, {"port": self.cfg.port, **detail})

    def run(self, stop: threading.Event) -> None:
        delay = self.cfg.reconnect_min_s
        self.ctx.set_health(self.name, self._health)
        try:
            while not stop.is_set():
                try:
                    port = open_port(self.cfg)
                except (serial.SerialException, OSError, ValueError) as exc:
                    self._set_state("offline", {"reason": str(exc)[:200]})
                    if stop.wait(delay):
                        return
                    delay = min(delay * 2, self.cfg.reconnect_max_s)
                    continue
                delay = self.cfg.reconnect_min_s
                try:
                    self.on_open(port)
                    self._set_state("online", {})
                    self._read_loop(port, stop)
                except (serial.SerialException, OSError) as exc:
                    self._set_state("offline", {"reason": str(exc)[:200]})
                    stop.wait(self.cfg.reconnect_min_s)
                finally:
                    port.close()
        finally:
            self.on_stop()

    def _read_loop(self, port: serial.Serial, stop: threading.Event) -> None:
        while not stop.is_set():
            data = strip_bit7(port.read(max(1, port.in_waiting)), self.cfg)
            if data:
                self.on_bytes(data, wall_ms())
            self.on_idle(port, time.monotonic())

    def on_open(self, port: serial.Serial) -> None:
        """Reset framing for a fresh connection (a half frame from before the unplug is garbage)."""

    @abstractmethod
    def on_bytes(self, data: bytes, at_ms: int) -> None:
        """Bytes that arrived at at_ms (wall clock, epoch ms): frame, parse and record them."""

    def on_idle(self, port: serial.Serial, now: float) -> None:
        """Called after every read (at least every READ_TIMEOUT_S): polling and timeouts."""

    def on_stop(self) -> None:
        self._update_health(stopped=True)

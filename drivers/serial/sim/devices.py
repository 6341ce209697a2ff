"""Simulated scanners and scales: threads that talk on the device side of a PtyLink.

Each opens its end with the serial settings its protocol document gives (Toledo: 9600 7E1),
so a misconfigured reader would see the same thing as in the field. Responders answer the
commands they receive; streamers send a frame every `interval_s`.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Self

import serial

from drivers.serial.sim import frames


class SimDevice:
    line: dict[str, Any] = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}

    def __init__(self, path: Path, **line: Any) -> None:
        self.path = path
        self.line = {**self.line, **line}
        self.port: serial.Serial | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.lock = threading.Lock()
        self.received = bytearray()

    def start(self) -> Self:
        self.port = serial.Serial(str(self.path), timeout=0.02, **self.line)
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=f"sim-{type(self).__name__}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        if self.port is not None:
            self.port.close()
            self.port = None

    def write(self, data: bytes) -> None:
        with self.lock:
            if self.port is not None:
                self.port.write(data)
                self.port.flush()

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except (serial.SerialException, OSError):
            return  # the link was pulled: the simulated device is gone too

    def step(self) -> None:
        """One turn of the device loop; the default only collects what the reader sent."""
        assert self.port is not None
        data = self.port.read(256)
        if data:
            self.received += data[-4096:]


class ScannerSim(SimDevice):
    def __init__(self, path: Path, suffix: bytes = b"\r", prefix: bytes = b"", **line: Any) -> None:
        super().__init__(path, **line)
        self.suffix = suffix
        self.prefix = prefix

    def scan(self, code: str) -> None:
        self.write(self.prefix + code.encode("latin-1") + self.suffix)


class ScaleSim(SimDevice):
    """Shared weight state: grams, motion, overload, underload; zero and tare act on it."""

    def __init__(self, path: Path, **line: Any) -> None:
        super().__init__(path, **line)
        self.grams = 0
        self.tare_g = 0
        self.motion = False
        self.over = False
        self.under = False
        self.commands: list[str] = []

    def place(self, grams: int, motion: bool = False) -> None:
        self.grams, self.motion, self.over, self.under = grams, motion, False, False

    @property
    def net(self) -> int:
        return self.grams - self.tare_g


class MtSicsSim(ScaleSim):
    """Answers S, SI, Z, T, TAC, I2, I4 (CR LF); `si_reply_id` mimics devices that answer SI with SI."""

    def __init__(self, path: Path, si_reply_id: str = "S", **line: Any) -> None:
        super().__init__(path, **line)
        self.si_reply_id = si_reply_id
        self._buf = b""

    def step(self) -> None:
        assert self.port is not None
        self._buf += self.port.read(64)
        while b"\r\n" in self._buf:
            line, self._buf = self._buf.split(b"\r\n", 1)
            cmd = line.decode("latin-1").strip()
            self.commands.append(cmd)
            self.write(self.reply(cmd))

    def reply(self, cmd: str) -> bytes:
        if cmd in ("S", "SI"):
            if self.over:
                return b"S +\r\n"
            if self.under:
                return b"S -\r\n"
            if cmd == "S" and self.motion:
                return b"S I\r\n"
            return frames.mt_sics_weight(self.net, not self.motion, "S" if cmd == "S" else self.si_reply_id)
        if cmd == "Z":
            self.tare_g, self.grams = 0, 0
            return b"Z A\r\n"
        if cmd == "T":
            self.tare_g = self.grams
            return f"T S {self.tare_g:>10} g\r\n".encode()
        if cmd == "TAC":
            self.tare_g = 0
            return b"TAC A\r\n"
        if cmd == "I2":
            return b'I2 A "SIM-MT 6000 g"\r\n'
        if cmd == "I4":
            return b'I4 A "0123456789"\r\n'
        return b"ES\r\n"


class Toledo8217Sim(ScaleSim):
    """W: weight or status record; Z, T, C: act and answer with a status record. 9600 7E1."""

    line = {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 1}

    def step(self) -> None:
        assert self.port is not None
        for b in self.port.read(16):
            c = chr(b & 0x7F)
            self.commands.append(c)
            if c == "W":
                if self.motion or self.over or self.under or self.net < 0:
                    self.write(
                        frames.toledo_8217_status(
                            motion=self.motion, over=self.over, under=self.under or self.net < 0
                        )
                    )
                else:
                    self.write(frames.toledo_8217_weight(self.net))
            elif c in "ZTC":
                if c == "Z":
                    self.grams = self.tare_g = 0
                elif c == "T":
                    self.tare_g = self.grams
                else:
                    self.tare_g = 0
                self.write(frames.toledo_8217_status(center_zero=self.net == 0))


class StreamingScaleSim(ScaleSim):
    def __init__(self, path: Path, interval_s: float = 0.02, **line: Any) -> None:
        super().__init__(path, **line)
        self.interval_s = interval_s

    def step(self) -> None:
        self.write(self.frame())
        if self._stop.wait(self.interval_s):
            return

    def frame(self) -> bytes:
        raise NotImplementedError


class ToledoContinuousSim(StreamingScaleSim):
    line = {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 1}

    def frame(self) -> bytes:
        return frames.toledo_continuous(
            self.net,
            self.tare_g,
            motion=self.motion,
            net=self.tare_g > 0,
            out_of_range=self.over or self.under,
        )


class CasSim(StreamingScaleSim):
    def frame(self) -> bytes:
        return frames.cas_22(self.net, stable=not self.motion, overload=self.over, net=self.tare_g > 0)


class LineSim(StreamingScaleSim):
    """A generic scale printing `  1.234 kg` (`? 1.234 kg` in motion, `OL` when overloaded) per line."""

    def frame(self) -> bytes:
        if self.over:
            return b"OL\r\n"
        return f"{'?' if self.motion else ' '} {self.net / 1000:.3f} kg\r\n".encode()

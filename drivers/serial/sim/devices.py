"""Simulated scanners and scales: threads that talk on the device side of a PtyLink.

Each opens its end with the serial settings its protocol document gives (Toledo: 9600 7E1).
A pty enforces none of them, so by default a misconfigured reader still reads clean bytes.
Given `reader=` (the path of the reader's end), a simulator emulates the line: it reads the
reader's baud rate from that pty's termios (the one line setting a Linux pty keeps; it
forces CS8 without parity) and passes every byte in both directions through
`uart.receive`, so a wrong baud rate garbles as it does on a cable, and a 7E1 device's
parity bit shows in bit 7 as it does to a reader set to 8N1. The reader's own data format is
taken as 8N1; a reader set to 7 data bits clears bit 7 itself (drivers/serial/port.py).
Responders answer the commands they receive; streamers send a frame every `interval_s`.
"""

from __future__ import annotations

import os
import random
import termios
import threading
from pathlib import Path
from typing import Any, Self

import serial

from drivers.serial.sim import frames
from drivers.serial.sim.uart import Line, receive

_SPEEDS = {getattr(termios, f"B{b}"): b for b in (1200, 2400, 4800, 9600, 19200, 38400, 57600, 115200)}


def reader_baudrate(path: Path) -> int | None:
    """The baud rate the reader set on its end of the pty (None when it cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _SPEEDS.get(termios.tcgetattr(fd)[4])
    except termios.error:
        return None
    finally:
        os.close(fd)


class SimDevice:
    line: dict[str, Any] = {"baudrate": 9600, "bytesize": 8, "parity": "N", "stopbits": 1}

    def __init__(self, path: Path, reader: Path | None = None, **line: Any) -> None:
        self.path = path
        self.reader = reader
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
        if self.reader is not None:
            data = receive(data, Line.of(self.line), self._reader_line())
        with self.lock:
            if self.port is not None:
                self.port.write(data)
                self.port.flush()

    def recv(self, n: int) -> bytes:
        """Read what the reader sent, as this device's UART understands it."""
        assert self.port is not None
        data: bytes = self.port.read(n)
        if data and self.reader is not None:
            mine = Line.of(self.line)
            data = receive(data, self._reader_line(), Line(mine.baudrate, 8, "N", 1))
            if mine.bytesize == 7:
                data = bytes(b & 0x7F for b in data)
        return data

    def _reader_line(self) -> Line:
        assert self.reader is not None
        return Line(reader_baudrate(self.reader) or int(self.line["baudrate"]), 8, "N", 1)

    def _run(self) -> None:
        try:
            while not self._stop.is_set():
                self.step()
        except (serial.SerialException, OSError):
            return  # the link was pulled: the simulated device is gone too

    def step(self) -> None:
        """One turn of the device loop; the default only collects what the reader sent."""
        data = self.recv(256)
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
        self._buf += self.recv(64)
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
        for b in self.recv(16):
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
    """`checksum` / `tare_field` False: an indicator set not to send them."""

    line = {"baudrate": 9600, "bytesize": 7, "parity": "E", "stopbits": 1}

    def __init__(
        self, path: Path, interval_s: float = 0.02, checksum: bool = True, tare_field: bool = True, **line: Any
    ) -> None:
        super().__init__(path, interval_s, **line)
        self.checksum = checksum
        self.tare_field = tare_field

    def frame(self) -> bytes:
        return frames.toledo_continuous(
            self.net,
            self.tare_g,
            motion=self.motion,
            net=self.tare_g > 0,
            out_of_range=self.over or self.under,
            negative=self.under or self.net < 0,  # under range is out of range with the sign bit
            checksum=self.checksum,
            tare_field=self.tare_field,
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


class NoiseSim(StreamingScaleSim):
    """Line noise: `burst` seeded random bytes every interval (a floating input, a wrong device)."""

    def __init__(self, path: Path, interval_s: float = 0.02, seed: int = 12, burst: int = 16, **line: Any) -> None:
        super().__init__(path, interval_s, **line)
        self.rng = random.Random(seed)  # noqa: S311 - noise for tests, not secrets
        self.burst = burst

    def frame(self) -> bytes:
        return self.rng.randbytes(self.burst)

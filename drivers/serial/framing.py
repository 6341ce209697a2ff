"""Framers: raw bytes in, whole frames out, in bounded memory (pyserial's Packetizer idea, with limits).

A framer never raises on input and never holds more than max_len bytes: garbage, partial and
overlong frames are counted and dropped, so a noisy line cannot stop or bloat a reader.
Feeding one byte at a time gives the same frames as feeding everything at once.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class FrameStats:
    frames: int = 0
    garbage_bytes: int = 0
    overruns: int = 0


class DelimitedFramer:
    """Frames that end with `suffix` (CR, LF, CR LF, ETX, ...) and may start with `prefix`.

    With a prefix, a frame is what follows the prefix's last occurrence before the suffix (a
    scanner that glitches mid-read starts again with a new prefix), and a frame without its
    prefix is garbage. A frame longer than max_len is dropped; without a prefix nothing marks
    where the next frame starts, so an overlong frame is dropped up to the next suffix.
    """

    def __init__(self, suffix: bytes, prefix: bytes = b"", max_len: int = 4096) -> None:
        if not suffix:
            raise ValueError("suffix must not be empty")
        self.suffix = suffix
        self.prefix = prefix
        self.max_len = max_len
        self.stats = FrameStats()
        self._buf = bytearray()
        self._overlong = False  # the frame in progress already exceeded max_len
        self._limit = max_len + len(prefix) + len(suffix)

    def feed(self, data: bytes) -> list[bytes]:
        out: list[bytes] = []
        self._buf += data
        slen = len(self.suffix)
        while True:
            idx = self._buf.find(self.suffix)
            if idx < 0:
                break
            frame = bytes(self._buf[:idx])
            del self._buf[: idx + slen]
            overlong, self._overlong = self._overlong, False
            if self.prefix:
                p = frame.rfind(self.prefix)
                if p < 0:
                    self.stats.garbage_bytes += len(frame)
                    continue
                self.stats.garbage_bytes += p
                frame = frame[p + len(self.prefix) :]
            elif overlong:
                self.stats.garbage_bytes += len(frame)
                continue
            if len(frame) > self.max_len:
                self.stats.overruns += 1
                self.stats.garbage_bytes += len(frame)
                continue
            self.stats.frames += 1
            out.append(frame)
        if len(self._buf) > self._limit:
            self._trim()
        return out

    def _trim(self) -> None:
        """Bound memory: keep only bytes that can still belong to a frame of at most max_len."""
        if self.prefix:
            p = self._buf.rfind(self.prefix)
            if p > 0:
                self.stats.garbage_bytes += p
                del self._buf[:p]
            if len(self._buf) <= self._limit:
                return
        # The frame in progress is overlong: keep a tail that may begin a prefix or the suffix.
        keep = len(self.prefix) + len(self.suffix) - 1
        if not self._overlong:
            self.stats.overruns += 1
        self._overlong = True
        self.stats.garbage_bytes += len(self._buf) - keep
        del self._buf[: len(self._buf) - keep]

    @property
    def buffered(self) -> int:
        return len(self._buf)


class StxFramer:
    """Frames STX ... terminator [+ trailer bytes], as Toledo's 8213/8217 and continuous outputs send.

    Bytes outside STX..terminator are garbage. A new STX inside a frame restarts it (the previous
    one was cut off). `trailer` is the number of bytes after the terminator (1 for a checksum).
    `mask7` clears bit 7 first: 7E1 devices read at 8N1 carry the parity bit in it.
    """

    STX = 0x02

    def __init__(
        self, terminator: int = 0x0D, trailer: int = 0, max_len: int = 64, mask7: bool = True
    ) -> None:
        self.terminator = terminator
        self.trailer = trailer
        self.max_len = max_len
        self.mask7 = mask7
        self.stats = FrameStats()
        self._buf = bytearray()
        self._in_frame = False
        self._trailer_left = -1

    def feed(self, data: bytes) -> list[bytes]:
        """Return whole frames including STX, terminator and trailer (checksums cover them all)."""
        out: list[bytes] = []
        for b in data:
            if self.mask7:
                b &= 0x7F
            if self._trailer_left > 0:
                self._buf.append(b)
                self._trailer_left -= 1
                if self._trailer_left == 0:
                    self._emit(out)
                continue
            if b == self.STX:
                if self._in_frame:
                    self.stats.garbage_bytes += len(self._buf)
                self._buf = bytearray(b"\x02")
                self._in_frame = True
                continue
            if not self._in_frame:
                self.stats.garbage_bytes += 1
                continue
            self._buf.append(b)
            if b == self.terminator:
                if self.trailer:
                    self._trailer_left = self.trailer
                else:
                    self._emit(out)
            elif len(self._buf) > self.max_len:
                self.stats.overruns += 1
                self.stats.garbage_bytes += len(self._buf)
                self._buf = bytearray()
                self._in_frame = False
        return out

    def _emit(self, out: list[bytes]) -> None:
        out.append(bytes(self._buf))
        self.stats.frames += 1
        self._buf = bytearray()
        self._in_frame = False
        self._trailer_left = -1

    @property
    def buffered(self) -> int:
        return len(self._buf)

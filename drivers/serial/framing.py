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

    With a prefix, the frame starts after the prefix's last occurrence (a scanner that glitches
    mid-read re-sends it); a frame without its prefix is garbage. An overlong frame is dropped up
    to the next suffix, so the frame after it is read intact.
    """

    def __init__(self, suffix: bytes, prefix: bytes = b"", max_len: int = 4096) -> None:
        if not suffix:
            raise ValueError("suffix must not be empty")
        self.suffix = suffix
        self.prefix = prefix
        self.max_len = max_len
        self.stats = FrameStats()
        self._buf = bytearray()
        self._discarding = False

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
            if self._discarding:
                self._discarding = False
                self.stats.garbage_bytes += len(frame)
                continue
            if len(frame) > self.max_len:
                self.stats.overruns += 1
                self.stats.garbage_bytes += len(frame)
                continue
            if self.prefix:
                p = frame.rfind(self.prefix)
                if p < 0:
                    self.stats.garbage_bytes += len(frame)
                    continue
                self.stats.garbage_bytes += p
                frame = frame[p + len(self.prefix):]
            self.stats.frames += 1
            out.append(frame)
        # Keep only what could still end in a suffix; the rest of an overlong frame is dropped.
        if len(self._buf) > self.max_len + len(self.prefix) + slen:
            keep = slen - 1
            self.stats.garbage_bytes += len(self._buf) - keep
            if not self._discarding:
                self.stats.overruns += 1
            self._discarding = True
            del self._buf[: len(self._buf) - keep]
        return out

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

    def __init__(self, terminator: int = 0x0D, trailer: int = 0, max_len: int = 64, mask7: bool = True) -> None:
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

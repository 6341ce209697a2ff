"""Framers: whole frames out of any byte stream, in bounded memory, the same however bytes arrive."""

from __future__ import annotations

import random

from hypothesis import given, settings
from hypothesis import strategies as st

from drivers.serial.framing import DelimitedFramer, StxFramer


def feed_chunks(framer: DelimitedFramer | StxFramer, data: bytes, rnd: random.Random) -> list[bytes]:
    out, i = [], 0
    while i < len(data):
        n = rnd.randint(1, 7)
        out += framer.feed(data[i : i + n])
        i += n
    return out


def test_cr_lf_frames_with_prefix() -> None:
    f = DelimitedFramer(b"\r\n", prefix=b"@", max_len=32)
    assert f.feed(b"noise@abc\r\n@de") == [b"abc"]
    assert f.feed(b"f\r\nno-prefix\r\n") == [b"def"]
    assert f.stats.frames == 2 and f.stats.garbage_bytes == len(b"noise") + len(b"no-prefix")


def test_overlong_frame_is_dropped_and_next_frame_survives() -> None:
    """A scanner left pressed against a long code must not eat the next read."""
    f = DelimitedFramer(b"\r", max_len=16)
    out = f.feed(b"x" * 1000)
    assert out == [] and f.buffered <= 16 + 1
    assert f.feed(b"yyy\rgood\r") == [b"good"]
    assert f.stats.overruns == 1


def test_stx_framer_restarts_on_new_stx_and_masks_parity() -> None:
    f = StxFramer(terminator=0x0D)
    assert f.feed(b"\x0201.2\x0201.234\r") == [b"\x0201.234\r"]
    # A 7E1 device read at 8N1: the parity bit shows up as bit 7.
    assert f.feed(bytes([0x82, 0xB0, 0x31, 0x8D])) == [b"\x0201\r"]


def test_stx_trailer_keeps_checksum_even_if_it_is_stx() -> None:
    f = StxFramer(terminator=0x0D, trailer=1)
    assert f.feed(b"\x02abc\r\x02") == [b"\x02abc\r\x02"]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=40), st.sampled_from([b"\r", b"\n", b"\r\n", b"@"])), max_size=60),
    st.integers(0, 2**32 - 1),
    st.sampled_from([b"", b"@", b"@@"]),
)
def test_delimited_any_chunking_same_frames_and_bounded(parts: list[bytes], seed: int, prefix: bytes) -> None:
    data = b"".join(parts)
    whole = DelimitedFramer(b"\r\n", prefix=prefix, max_len=24)
    expected = whole.feed(data)
    chunked = DelimitedFramer(b"\r\n", prefix=prefix, max_len=24)
    assert feed_chunks(chunked, data, random.Random(seed)) == expected
    bytewise = DelimitedFramer(b"\r\n", prefix=prefix, max_len=24)
    got = []
    for b in data:
        got += bytewise.feed(bytes([b]))
        assert bytewise.buffered <= 24 + len(prefix) + 2
    assert got == expected
    assert all(len(fr) <= 24 for fr in got)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(st.one_of(st.binary(max_size=30), st.sampled_from([b"\x02", b"\r", b"\x0201.234\r"])), max_size=60),
    st.integers(0, 2**32 - 1),
)
def test_stx_any_chunking_same_frames_and_bounded(parts: list[bytes], seed: int) -> None:
    data = b"".join(parts)
    expected = StxFramer(trailer=1, max_len=20).feed(data)
    assert feed_chunks(StxFramer(trailer=1, max_len=20), data, random.Random(seed)) == expected
    f = StxFramer(trailer=1, max_len=20)
    for b in data:
        f.feed(bytes([b]))
        assert f.buffered <= 22

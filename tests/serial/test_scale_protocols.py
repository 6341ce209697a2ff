"""Scale protocol parsers against frames built from the protocol documents, plus fuzzing:
random and bit-flipped bytes never crash a parser, memory stays bounded, chunking changes nothing."""

from __future__ import annotations

import random
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import TypeAdapter

from drivers.serial.scales import ScaleConfig, make_protocol
from drivers.serial.scales.base import Reading, ScaleProtocol
from drivers.serial.sim import frames

ADAPTER: TypeAdapter[Any] = TypeAdapter(ScaleConfig)


def proto(protocol: str, **kw: Any) -> ScaleProtocol:
    return make_protocol(ADAPTER.validate_python({"name": "t", "port": "/dev/null", "protocol": protocol, **kw}))


def statuses(rs: list[Reading]) -> list[tuple[str, int | None]]:
    return [(r.status, r.grams) for r in rs]


def test_mt_sics_replies() -> None:
    p = proto("mt-sics")
    data = (
        frames.mt_sics_weight(1250)
        + frames.mt_sics_weight(1250, stable=False)
        + b"S +\r\nS -\r\nES\r\n"
        + b"S S      1.234 kg\r\n"
        + frames.mt_sics_weight(500, reply_id="SI")
        + b"S I\r\nZ A\r\n"
    )
    assert statuses(p.feed(data)) == [
        ("stable", 1250),
        ("motion", 1250),
        ("overload", None),
        ("underload", None),
        ("error", None),
        ("stable", 1234),
        ("stable", 500),
        ("error", None),
        ("info", None),
    ]
    assert p.poll_command() == b"SI\r\n" and p.zero_command() == b"Z\r\n" and p.clear_tare_command() == b"TAC\r\n"
    assert proto("mt-sics", poll_command="S").poll_command() == b"S\r\n"


def test_mt_sics_pounds_convert_exactly() -> None:
    assert statuses(proto("mt-sics").feed(b"S S      2.000 lb\r\n")) == [("stable", 907)]


def test_toledo_8217_weight_and_status_bits() -> None:
    p = proto("toledo-8217")
    got = p.feed(
        frames.toledo_8217_weight(1234)
        + frames.toledo_8217_status(motion=True)
        + frames.toledo_8217_status(over=True)
        + frames.toledo_8217_status(under=True)
        + frames.toledo_8217_status(center_zero=True)
    )
    assert statuses(got) == [
        ("stable", 1234),
        ("motion", None),
        ("overload", None),
        ("underload", None),
        ("info", None),
    ]
    assert got[4].detail["center_of_zero"] is True
    assert proto("toledo-8217", unit="lb").feed(b"\x0201.000\r")[0].grams == 454
    cfg = ADAPTER.validate_python({"name": "t", "port": "/dev/x", "protocol": "toledo-8217"})
    assert (cfg.baudrate, cfg.bytesize, cfg.parity) == (9600, 7, "E")


def test_toledo_continuous_simulator_under_range_reads_as_underload() -> None:
    """The simulator's under-range state sent out-of-range without the sign bit, which the
    manuals (and the parser) read as over range; found writing test_manual_frames.py."""
    from pathlib import Path

    from drivers.serial.sim.devices import ToledoContinuousSim

    sim = ToledoContinuousSim(Path("/nonexistent"))  # frame() only: no port opened
    sim.under = True
    assert [r.status for r in proto("toledo-continuous").feed(sim.frame())] == ["underload"]
    sim.under, sim.over = False, True
    assert [r.status for r in proto("toledo-continuous").feed(sim.frame())] == ["overload"]


def test_toledo_continuous_status_words_and_checksum() -> None:
    p = proto("toledo-continuous")
    good = frames.toledo_continuous(2500, tare_g=300, net=True)
    bad = bytearray(frames.toledo_continuous(999))
    bad[6] ^= 0x01  # one flipped bit: the checksum must catch it
    got = p.feed(
        good + bytes(bad) + frames.toledo_continuous(700, motion=True) + frames.toledo_continuous(0, out_of_range=True)
    )
    assert statuses(got) == [("stable", 2500), ("motion", 700), ("overload", None)]
    assert got[0].net and got[0].tare_g == 300
    assert p.bad_checksums == 1  # type: ignore[attr-defined]
    short = proto("toledo-continuous", checksum=False, tare_field=False)
    assert statuses(short.feed(frames.toledo_continuous(42, checksum=False, tare_field=False))) == [("stable", 42)]


def test_cas_22_byte_and_18_byte_frames() -> None:
    p = proto("cas")
    got = p.feed(
        frames.cas_22(13500)
        + frames.cas_22(200, stable=False)
        + frames.cas_22(0, overload=True)
        + b"ST,NT,  0001.5kg\r\n"
        + frames.cas_22(-50)
    )
    assert statuses(got) == [
        ("stable", 13500),
        ("motion", 200),
        ("overload", None),
        ("stable", 1500),
        ("underload", -50),
    ]
    assert got[3].net
    only2 = proto("cas", device_id=2)
    assert only2.feed(frames.cas_22(100, device_id=1) + frames.cas_22(300, device_id=2))[0].grams == 300


def test_line_regex_default_and_custom() -> None:
    p = proto("line-regex")
    assert statuses(p.feed(b"  1.250 kg\r\n? 1.300 kg\r\n500 g\nnonsense\n")) == [
        ("stable", 1250),
        ("motion", 1300),
        ("stable", 500),
        ("error", None),
    ]
    custom = proto(
        "line-regex",
        pattern=r"^W(?P<weight>\d+)(?P<motion>M?)$",
        unit="g",
        terminator="<CR>",
        poll_command="P<CR>",
    )
    assert statuses(custom.feed(b"W120\rW130M\r")) == [("stable", 120), ("motion", 130)]
    assert custom.poll_command() == b"P\r"


VALID_STREAMS = {
    "mt-sics": frames.mt_sics_weight(1250) + frames.mt_sics_weight(90, stable=False) + b"S +\r\n",
    "toledo-8217": frames.toledo_8217_weight(1234) + frames.toledo_8217_status(motion=True),
    "toledo-continuous": frames.toledo_continuous(2500) + frames.toledo_continuous(10, motion=True),
    "cas": frames.cas_22(13500) + frames.cas_22(200, stable=False),
    "line-regex": b"  1.250 kg\r\n? 1.300 kg\r\n",
}


@pytest.mark.parametrize("protocol", sorted(VALID_STREAMS))
@settings(max_examples=150, deadline=None)
@given(
    noise=st.binary(max_size=300),
    flips=st.lists(st.integers(0, 10_000), max_size=8),
    seed=st.integers(0, 2**32 - 1),
)
def test_fuzz_never_crashes_bounded_and_chunking_invariant(
    protocol: str, noise: bytes, flips: list[int], seed: int
) -> None:
    stream = bytearray(VALID_STREAMS[protocol] * 3 + noise + VALID_STREAMS[protocol])
    for f in flips:
        stream[f % len(stream)] ^= 1 << (f % 8)
    data = bytes(stream)
    expected = proto(protocol).feed(data)
    rnd = random.Random(seed)
    p = proto(protocol)
    got: list[Reading] = []
    i = 0
    while i < len(data):
        n = rnd.randint(1, 9)
        got += p.feed(data[i : i + n])
        assert p.framer.buffered <= 256 + 4  # type: ignore[attr-defined]
        i += n
    assert got == expected
    for r in got:
        assert r.status in ("stable", "motion", "overload", "underload", "error", "info")
        assert r.grams is None or isinstance(r.grams, int)

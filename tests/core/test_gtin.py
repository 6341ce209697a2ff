"""wire.records checks GTINs without biip (the centre installs wire/ without device libraries);
it must accept exactly what biip's Gtin.parse accepts, and word a refusal the same way."""

from __future__ import annotations

import pytest
from biip import ParseError
from biip.gtin import Gtin
from hypothesis import given, settings
from hypothesis import strategies as st

from wire.records import gtin_problem


def biip_problem(value: str) -> str | None:
    try:
        Gtin.parse(value)
    except ParseError as exc:
        return str(exc)
    return None


def with_check_digit(body: str) -> str:
    weighted = sum(int(d) * (3 if i % 2 == 0 else 1) for i, d in enumerate(reversed(body)))
    return body + str(-weighted % 10)


digits = st.text(st.sampled_from("0123456789"), min_size=7, max_size=13)
valid = digits.filter(lambda b: len(b) + 1 in (8, 12, 13, 14)).map(with_check_digit)
# Near misses: one digit changed, Unicode decimals (Arabic-Indic, fullwidth), whitespace, letters.
odd = st.text(st.sampled_from("0123456789０٣۵ \tX-"), min_size=0, max_size=16)


@settings(max_examples=2000, deadline=None)
@given(st.one_of(valid, digits, odd, valid.map(lambda v: v[:-1] + str((int(v[-1]) + 1) % 10)),
                 valid.map(lambda v: f" {v} "), st.text(max_size=15)))
def test_gtin_problem_matches_biip(value: str) -> None:
    assert gtin_problem(value) == biip_problem(value)


@pytest.mark.parametrize("value", ["6281007032285", "96385074", "00000000", "０" * 13, "012345678905",
                                   "10012345678902"])
def test_known_gtins(value: str) -> None:
    assert gtin_problem(value) is None and biip_problem(value) is None

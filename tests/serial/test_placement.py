"""One weight record per placement; states are reported on change, never recorded as weights."""

from __future__ import annotations

from drivers.serial.placement import PlacementFilter
from drivers.serial.scales.base import Reading


def run(readings: list[Reading]) -> tuple[list[int], list[str]]:
    f = PlacementFilter(zero_band_g=5, change_band_g=5)
    weights, states = [], []
    for r in readings:
        d = f.update(r)
        if d.weight_g is not None:
            weights.append(d.weight_g)
        if d.state_change:
            states.append(d.state_change)
    return weights, states


def S(g: int) -> Reading:  # noqa: N802
    return Reading("stable", grams=g)


def M(g: int) -> Reading:  # noqa: N802
    return Reading("motion", grams=g)


def test_once_per_placement_and_after_change_or_zero() -> None:
    seq = [S(0), M(400), S(500), S(500), S(502), M(520), S(501), S(800), S(800), S(3), S(0), S(800), S(800)]
    assert run(seq)[0] == [500, 800, 800]


def test_motion_and_errors_are_never_weights() -> None:
    seq = [
        M(700),
        M(900),
        Reading("overload"),
        Reading("overload"),
        Reading("error"),
        S(1200),
        S(1200),
        Reading("info", tare_g=100),
    ]
    weights, states = run(seq)
    assert weights == [1200]
    assert states == ["overload", "ok"]  # a single error reading does not flap the state

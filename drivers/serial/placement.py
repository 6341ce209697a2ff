"""One weight per placement: the rule that turns a stream of readings into `weight` records.

A scale reports the same stable weight many times a second. A weight is recorded once when
the load settles, and again only after it changes by more than change_band_g or the platter
returns to (near) zero. Motion never re-arms: a box rocked on the platter is the same box.
Overload, underload and errors are states, reported when they start and end, never weights.
"""

from __future__ import annotations

from dataclasses import dataclass

from drivers.serial.scales.base import Reading


@dataclass
class Decision:
    weight_g: int | None = None  # record this weight
    state_change: str | None = None  # the scale entered this state ("overload", "ok", ...)


class PlacementFilter:
    def __init__(self, zero_band_g: int = 5, change_band_g: int = 5, confirm: int = 2) -> None:
        self.zero_band_g = zero_band_g
        self.change_band_g = change_band_g
        self.confirm = confirm  # readings in a row before a state change is reported (no flapping)
        self.armed = True
        self.last_g: int | None = None
        self.state = "ok"
        self._pending = "ok"
        self._pending_n = 0

    def update(self, r: Reading) -> Decision:
        d = Decision()
        if r.status == "info":
            return d
        state = r.status if r.status in ("overload", "underload", "error") else "ok"
        self._pending_n = self._pending_n + 1 if state == self._pending else 1
        self._pending = state
        if state != self.state and self._pending_n >= self.confirm:
            self.state = state
            d.state_change = state
        if r.status != "stable" or r.grams is None:
            return d
        g = r.grams
        if g <= self.zero_band_g:
            self.armed = True
            self.last_g = None
            return d
        if self.armed or (self.last_g is not None and abs(g - self.last_g) > self.change_band_g):
            self.armed = False
            self.last_g = g
            d.weight_g = g
        return d

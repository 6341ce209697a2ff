"""Judging frames: covered or dark, out of focus, scene moved; and motion. Pure functions of images.

Everything works on a small grey thumbnail (64x36 for the scene, the sub stream's own size
for sharpness), so a frame costs well under a millisecond and the rules test without a
camera. The reference picture is learnt from the first good frames after start: a camera
that starts already covered says "covered", not "moved", because darkness is judged alone.

- covered/dark: mean grey below dark_level, or the picture nearly uniform (std below
  min_contrast): a hand, tape or a bag over the lens.
- moved: the thumbnail's correlation with the reference below moved_ratio; a blurred view
  keeps a high correlation at this scale, so blur is not mistaken for a move.
- blurred: Laplacian variance (the usual focus measure) below blur_ratio of the reference.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
import numpy.typing as npt

from drivers.camera.config import MotionConfig, TamperConfig

Gray = npt.NDArray[np.uint8]
THUMB = (64, 36)


def to_gray(frame: npt.NDArray[Any]) -> Gray:
    return np.asarray(frame if frame.ndim == 2 else cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), dtype=np.uint8)


def thumb(gray: Gray) -> npt.NDArray[np.float32]:
    small = cv2.resize(gray, THUMB, interpolation=cv2.INTER_AREA).astype(np.float32)
    return np.asarray(cv2.GaussianBlur(small, (5, 5), 0), dtype=np.float32)


def sharpness(gray: Gray) -> float:
    return float(cv2.Laplacian(gray, cv2.CV_64F).var())


def correlation(a: npt.NDArray[np.float32], b: npt.NDArray[np.float32]) -> float:
    a0, b0 = a - a.mean(), b - b.mean()
    denom = float(np.sqrt((a0 * a0).sum() * (b0 * b0).sum()))
    return float((a0 * b0).sum() / denom) if denom > 1e-6 else 0.0


@dataclass
class Verdict:
    condition: str | None  # None, "covered", "dark", "moved", "blurred"
    metrics: dict[str, float]


@dataclass
class TamperJudge:
    """Stateful: learns the reference, then reports a condition once it has lasted hold_s."""

    cfg: TamperConfig
    ref_thumb: npt.NDArray[np.float32] | None = None
    ref_sharpness: float = 0.0
    _learn_since: float | None = None
    _pending: str | None = None
    _pending_since: float = 0.0
    active: str | None = None  # the condition last reported (None = clear)
    _samples: list[float] = field(default_factory=list)

    def classify(self, gray: Gray) -> Verdict:
        mean, std = float(gray.mean()), float(gray.std())
        m = {"mean": round(mean, 1), "std": round(std, 1)}
        if std < self.cfg.min_contrast:
            return Verdict("covered", m)
        if mean < self.cfg.dark_level:
            return Verdict("dark", m)
        if self.ref_thumb is None:
            return Verdict(None, m)
        corr = correlation(thumb(gray), self.ref_thumb)
        sharp = sharpness(gray)
        m.update(correlation=round(corr, 3), sharpness=round(sharp, 1), ref_sharpness=round(self.ref_sharpness, 1))
        if corr < self.cfg.moved_ratio:
            return Verdict("moved", m)
        if self.ref_sharpness > 0 and sharp < self.cfg.blur_ratio * self.ref_sharpness:
            return Verdict("blurred", m)
        return Verdict(None, m)

    def feed(self, gray: Gray, now: float | None = None) -> tuple[str, Verdict] | None:
        """Returns ("tamper", verdict) or ("tamper_end", verdict) when the judged state changes."""
        now = time.monotonic() if now is None else now
        verdict = self.classify(gray)
        if self.ref_thumb is None:
            self._learn(gray, verdict, now)
        cond = verdict.condition
        if cond != self._pending:
            self._pending, self._pending_since = cond, now
        if cond != self.active and now - self._pending_since >= self.cfg.hold_s:
            self.active = cond
            return ("tamper", verdict) if cond else ("tamper_end", verdict)
        return None

    def _learn(self, gray: Gray, verdict: Verdict, now: float) -> None:
        if verdict.condition is not None:
            self._learn_since, self._samples = None, []
            return
        if self._learn_since is None:
            self._learn_since = now
        self._samples.append(sharpness(gray))
        if now - self._learn_since >= self.cfg.learn_s:
            self.ref_thumb = thumb(gray)
            self.ref_sharpness = float(np.median(self._samples))


@dataclass
class MotionDetector:
    """Share of thumbnail pixels that changed by more than 25 grey levels since the last frame."""

    cfg: MotionConfig
    _last: npt.NDArray[np.float32] | None = None

    def changed(self, gray: Gray) -> float:
        t = thumb(gray)
        last, self._last = self._last, t
        if last is None:
            return 0.0
        return float((np.abs(t - last) > 25).mean())

    def moving(self, gray: Gray) -> bool:
        return self.changed(gray) >= self.cfg.threshold


def in_hours(hours: str, minute_of_day: int) -> bool:
    """'20:00-07:00' spans midnight; '09:00-17:00' does not."""
    a, b = hours.split("-")
    start = int(a[:2]) * 60 + int(a[3:])
    end = int(b[:2]) * 60 + int(b[3:])
    if start <= end:
        return start <= minute_of_day < end
    return minute_of_day >= start or minute_of_day < end

"""Cut [start, end] out of a camera's ring into one MP4, by stream copy (no decoding).

Every ring segment starts at a keyframe (the segment muxer cuts only there). The clip
starts at the keyframe at or before the requested start (the first segment's keyframes are
probed), as evidence needs, so it is at most one GOP longer than asked. `-t` ends it within
a frame of `end`. `-movflags +faststart` puts the index first so the centre can play it
while it downloads.

Fast path: segments of one recording run follow each other without a gap and MPEG-TS can
be joined byte for byte, so ffmpeg reads them through the `concat:` protocol as one input
(one demuxer, no probing of each file: a 60 s 1080p clip is cut in ~0.2 s). A span that
crosses a recording gap (camera outage, restart: the stream clock starts again) goes
through the concat demuxer instead, which re-bases each file's timestamps; its `inpoint`
likewise starts at the keyframe at or before the in point.
"""

from __future__ import annotations

import json
import logging
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from drivers.camera.ring import Ring, Segment
from drivers.camera.secrets import scrub

log = logging.getLogger(__name__)

CONTIGUOUS_MS = 300  # segments this close belong to one run (names are anchored to ~10 ms)


class ClipUnavailable(Exception):
    """The ring holds nothing of the requested span (camera offline then, or pruned)."""


class ClipFailed(Exception):
    """ffmpeg could not cut the clip; the message is scrubbed ffmpeg output."""


@dataclass(frozen=True)
class Clip:
    path: Path
    start_ms: int  # what the clip covers: from the keyframe at or before the request
    end_ms: int
    segments: int


def _quote(path: Path) -> str:
    # concat list syntax: single-quoted, a quote inside is written '\''
    return "'" + str(path).replace("'", "'\\''") + "'"


def _start_time(ffprobe: str, seg: Segment) -> float:
    """First timestamp of a segment: ffmpeg's segmenter keeps the stream's clock (reset_timestamps 0)."""
    out = subprocess.run(
        [ffprobe, "-v", "error", "-show_entries", "format=start_time", "-of", "json", str(seg.path)],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    try:
        return float(json.loads(out.stdout)["format"]["start_time"])
    except (ValueError, KeyError, TypeError):
        return 0.0


def contiguous(segs: list[Segment]) -> bool:
    return all(abs(b.start_ms - a.end_ms) <= CONTIGUOUS_MS for a, b in zip(segs, segs[1:], strict=False))


def keyframes(ffprobe: str, seg: Segment) -> list[float]:
    """Keyframe times of a segment, in seconds from its first packet (one ffprobe of one file)."""
    out = subprocess.run(
        [
            ffprobe,
            "-v",
            "error",
            "-select_streams",
            "v:0",
            "-show_entries",
            "packet=pts_time,flags",
            "-of",
            "csv=p=0",
            str(seg.path),
        ],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    pts: list[tuple[float, bool]] = []
    for line in out.stdout.splitlines():
        parts = line.split(",")
        try:
            pts.append((float(parts[0]), "K" in parts[1]))
        except (ValueError, IndexError):
            continue
    if not pts:
        return [0.0]
    t0 = min(t for t, _ in pts)
    return sorted(t - t0 for t, key in pts if key) or [0.0]


def _fast_args(
    segs: list[Segment], start_ms: int, end_ms: int, ffmpeg: str, ffprobe: str
) -> tuple[list[str], int, int]:
    """One input over the joined segments, from the keyframe at or before start_ms.

    The first segment of a recording run is longer than a GOP (it starts with the stream), and a
    camera whose GOP is shorter than segment_s puts several keyframes in one segment: the first
    segment's keyframes are probed and ffmpeg is started just before the right one (with stream
    copy, ffmpeg drops packets before -ss and starts at the next keyframe)."""
    first, last = segs[0], segs[-1]
    offset = max(0.0, (start_ms - first.start_ms) / 1000)
    k = 0.0
    if offset > 0:
        k = max([t for t in keyframes(ffprobe, first) if t <= offset + 0.001], default=0.0)
    clip_start = first.start_ms + int(k * 1000)
    clip_end = min(end_ms, last.end_ms)
    args = [ffmpeg, "-hide_banner", "-loglevel", "error", "-nostdin", "-y"]
    if k > 0:
        args += ["-ss", f"{k - 0.01:.3f}"]
    args += ["-i", "concat:" + "|".join(str(s.path) for s in segs), "-t", f"{(clip_end - clip_start) / 1000:.3f}"]
    return args, clip_start, clip_end


def _demuxer_list(segs: list[Segment], start_ms: int, end_ms: int, ffprobe: str) -> str:
    first, last = segs[0], segs[-1]
    lines = ["ffconcat version 1.0"]
    for seg in segs:
        base = _start_time(ffprobe, seg) if seg in (first, last) else 0.0
        lines.append(f"file {_quote(seg.path)}")
        if seg is first and start_ms > first.start_ms:
            lines.append(f"inpoint {base + (start_ms - first.start_ms) / 1000:.3f}")
        if seg is last and last.end_ms > end_ms:
            lines.append(f"outpoint {base + (end_ms - last.start_ms) / 1000:.3f}")
    return "\n".join(lines) + "\n"


def cut_clip(
    ring: Ring,
    start_ms: int,
    end_ms: int,
    out: Path,
    ffmpeg: str = "ffmpeg",
    ffprobe: str = "ffprobe",
    timeout_s: float = 60.0,
) -> Clip:
    if end_ms <= start_ms:
        raise ValueError(f"clip end {end_ms} is not after start {start_ms}")
    out.parent.mkdir(parents=True, exist_ok=True)
    tail = ["-map", "0:v:0", "-c", "copy", "-movflags", "+faststart", "-f", "mp4", str(out)]
    listing: Path | None = None
    with ring.lock:  # pruning waits until the cut has read the files
        segs = ring.covering(start_ms, end_ms)
        if not segs:
            raise ClipUnavailable(f"no recording of camera {ring.dir.name} between {start_ms} and {end_ms}")
        first, last = segs[0], segs[-1]
        if contiguous(segs) and "|" not in str(ring.dir):
            args, clip_start, clip_end = _fast_args(segs, start_ms, end_ms, ffmpeg, ffprobe)
        else:
            with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", dir=out.parent, delete=False) as lst:
                lst.write(_demuxer_list(segs, start_ms, end_ms, ffprobe))
            listing = Path(lst.name)
            args = [
                ffmpeg,
                "-hide_banner",
                "-loglevel",
                "error",
                "-nostdin",
                "-y",
                "-f",
                "concat",
                "-safe",
                "0",
                "-i",
                str(listing),
            ]
            clip_start, clip_end = max(start_ms, first.start_ms), min(end_ms, last.end_ms)
        try:
            proc = subprocess.run(args + tail, capture_output=True, text=True, timeout=timeout_s, check=False)
        finally:
            if listing is not None:
                listing.unlink(missing_ok=True)
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        out.unlink(missing_ok=True)
        raise ClipFailed(f"ffmpeg could not cut the clip: {scrub(proc.stderr.strip())[-500:]}")
    log.debug(
        "clip %s: %d segments -> %s (%s)",
        ring.dir.name,
        len(segs),
        out.name,
        "demuxer" if listing else "concat protocol",
    )
    return Clip(out, clip_start, clip_end, len(segs))

"""Cut [start, end] out of a camera's ring into one MP4, by stream copy (no decoding).

ffmpeg's concat demuxer joins the segments that overlap the request; its `inpoint`
directive seeks the first one, and with stream copy it starts at the keyframe at or
before the in point (ffmpeg docs: "you will usually get extra packets before the actual
In point"), which is what evidence needs: the clip never starts after the requested
start. `outpoint` ends it within one frame. `-movflags +faststart` puts the index first
so a browser at the centre can play it while it downloads.
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


class ClipUnavailable(Exception):
    """The ring holds nothing of the requested span (camera offline then, or pruned)."""


class ClipFailed(Exception):
    """ffmpeg could not cut the clip; the message is scrubbed ffmpeg output."""


@dataclass(frozen=True)
class Clip:
    path: Path
    start_ms: int  # what the clip covers, clamped to what the ring holds
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
    with ring.lock:  # pruning waits until the cut has read the files
        segs = ring.covering(start_ms, end_ms)
        if not segs:
            raise ClipUnavailable(f"no recording of camera {ring.dir.name} between {start_ms} and {end_ms}")
        first, last = segs[0], segs[-1]
        inpoint = max(0, start_ms - first.start_ms) / 1000
        outpoint = (min(end_ms, last.end_ms) - last.start_ms) / 1000
        lines = ["ffconcat version 1.0"]
        for seg in segs:
            base = _start_time(ffprobe, seg) if seg in (first, last) else 0.0
            lines.append(f"file {_quote(seg.path)}")
            if seg is first and inpoint > 0:
                lines.append(f"inpoint {base + inpoint:.3f}")
            if seg is last and last.end_ms > end_ms:
                lines.append(f"outpoint {base + outpoint:.3f}")
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile("w", suffix=".ffconcat", dir=out.parent, delete=False) as lst:
            lst.write("\n".join(lines) + "\n")
        try:
            proc = subprocess.run(
                [
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
                    lst.name,
                    "-map",
                    "0:v:0",
                    "-c",
                    "copy",
                    "-movflags",
                    "+faststart",
                    "-f",
                    "mp4",
                    str(out),
                ],
                capture_output=True,
                text=True,
                timeout=timeout_s,
                check=False,
            )
        finally:
            Path(lst.name).unlink(missing_ok=True)
    if proc.returncode != 0 or not out.exists() or out.stat().st_size == 0:
        out.unlink(missing_ok=True)
        raise ClipFailed(f"ffmpeg could not cut the clip: {scrub(proc.stderr.strip())[-500:]}")
    clip = Clip(out, max(start_ms, first.start_ms), min(end_ms, last.end_ms), len(segs))
    log.debug("clip %s: %d segments -> %s", ring.dir.name, len(segs), out.name)
    return clip

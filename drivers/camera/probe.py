"""ffprobe one stream: codec, resolution, frame rate (`coopagent camera test` and the doctor)."""

from __future__ import annotations

import json
import subprocess
from typing import Any


def probe(url: str, ffprobe: str, timeout_s: float, transport: str) -> dict[str, Any]:
    """The first video stream's codec_name, width, height, avg_frame_rate; RuntimeError says why not
    (its text may hold the URL: scrub it before showing it)."""
    out = subprocess.run(
        [ffprobe, "-v", "error", "-rtsp_transport", transport, "-timeout", str(int(timeout_s * 1e6)),
         "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height,avg_frame_rate",
         "-of", "json", url],
        capture_output=True, text=True, timeout=timeout_s * 3, check=False,
    )
    if out.returncode != 0:
        raise RuntimeError(out.stderr.strip().splitlines()[-1] if out.stderr.strip() else "ffprobe failed")
    streams = json.loads(out.stdout).get("streams") or [{}]
    return dict(streams[0])

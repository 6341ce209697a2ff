"""A branch's evidence at the centre, made through the real ingest path: real H.264 clips made by
ffmpeg, batches sealed and signed with the wire package (DeviceSim), published to a real
Mosquitto, verified, chained and stored by a running Receiver, the clips' chunks reassembled
and accepted against their signed SHA-256. Shared by the evidence tests and bench/bench_export.py.

The story: a device seals 6 batches; seq 2 holds a VOID sale at T0; seq 6 announces the clip
a rule made for that void (reason.record = the void's id) and `extra` more media, asked for by
centre commands, each at its own time.
"""

from __future__ import annotations

import hashlib
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim

T0 = 1_764_100_000_000  # the void
CHUNK = 64 * 1024


def make_clip(path: Path, *, seconds: float = 2, size: str = "320x240", pattern: str = "testsrc",
              bitrate: str | None = None) -> Path:
    """A real H.264 MP4 (faststart, so a browser plays it before the end), made by ffmpeg."""
    cmd = ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", f"{pattern}=size={size}:rate=10", "-t", str(seconds),
           "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"]
    if bitrate:
        cmd += ["-b:v", bitrate]
    subprocess.run([*cmd, str(path)], check=True, timeout=120)
    return path


def make_jpeg(path: Path) -> Path:
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240", "-frames:v", "1",
                    str(path)], check=True, timeout=60)
    return path


def variant(src: Path, dst: Path, n: int) -> Path:
    """The same video with other bytes (a title in its metadata): distinct clips without re-encoding."""
    subprocess.run(["ffmpeg", "-v", "error", "-y", "-i", str(src), "-c", "copy", "-metadata", f"title=clip {n}",
                    "-movflags", "+faststart", str(dst)], check=True, timeout=60)
    return dst


@dataclass
class Site:
    dev: DeviceSim
    void_id: str = ""
    clip_for_void: str = ""  # the media record id of the void's clip
    media: dict[str, str] = field(default_factory=dict)  # media id -> its media record id
    files: dict[str, Path] = field(default_factory=dict)  # media id -> the clip sent
    sales: list[str] = field(default_factory=list)  # every sale's record id, in seq order


def _media_record(dev: DeviceSim, media_id: str, path: Path, start: int, end: int,
                  reason: dict[str, Any]) -> dict[str, Any]:
    content = path.read_bytes()
    mtype = "image/jpeg" if path.suffix == ".jpg" else "video/mp4"
    rec = dev.record("media", {
        "media": media_id, "camera": "till-3-cam", "type": mtype, "start": start, "end": end,
        "size": len(content), "sha256": hashlib.sha256(content).digest(), "chunk": CHUNK,
        "chunks": -(-len(content) // CHUNK), "reason": reason,
    })
    rec["at"] = end
    return rec


def populate(rx: Receiver, agent: AgentSide, dev: DeviceSim, void_clip: Path, extra: list[Path],
             timeout: float = 60) -> Site:
    """Send the story through the broker and wait until the receiver has acked every batch and
    accepted every clip; returns what the tests select and compare."""
    site = Site(dev)
    central = rx.signer.key.public_key()
    batches: list[list[dict[str, Any]]] = [[dev.record() for _ in range(3)] for _ in range(5)]
    void = dev.record("sale", {"receipt": "R-4711", "till": 3, "total": 1250, "currency": "KWD", "void": True,
                               "lines": [{"gtin": "06291041500213", "qty": 5, "unit_price": 250, "amount": 1250}]})
    void["at"] = T0
    batches[1].append(void)
    site.void_id = void["id"]
    media_recs = []
    clip = _media_record(dev, "void-clip", void_clip, T0 - 5000, T0 + 5000,
                         {"record": void["id"], "kind": "sale", "rule": "voids"})
    site.clip_for_void, site.media["void-clip"], site.files["void-clip"] = clip["id"], clip["id"], void_clip
    media_recs.append(clip)
    for i, path in enumerate(extra):
        mid = f"cmd-{i}"
        start = T0 + 60_000 * (i + 1)
        rec = _media_record(dev, mid, path, start, start + 10_000, {"command": f"c-{i}"})
        site.media[mid], site.files[mid] = rec["id"], path
        media_recs.append(rec)
    batches.append(media_recs)
    for recs in batches:
        site.sales += [r["id"] for r in recs if r["kind"] == "sale"]
        agent.publish("batch", dev.dev, dev.next_batch(records=recs))
    agent.wait_ack(central, dev.dev, len(batches), timeout=30)
    for mid, path in site.files.items():
        content = path.read_bytes()
        for i in range(0, len(content), CHUNK):
            agent.publish(f"media/{mid}/{i // CHUNK}", dev.dev, content[i : i + CHUNK])
    with ReceiverStore(rx.config.receiver) as s:
        wait_for(lambda: all(s.media_path(dev.dev, m) for m in site.files), timeout=timeout,
                 what="every clip accepted by the receiver")
    return site

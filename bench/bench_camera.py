"""Camera benchmarks (issue 4), against the real GStreamer RTSP test camera on loopback.

    .venv/bin/python -m bench.bench_camera [--record-s 75] [--cameras 8] [--results docs/bench-results/camera.json]

1. CPU of recording one 1080p stream (our Recorder: ffmpeg segment muxer + the Python thread
   reading its segment list) against a bare `ffmpeg -c copy` of the same stream, same run,
   same time window. Goal: ratio <= 1.2.
2. Time to cut a 60 s clip from that recording (stream copy). Goal <= 1 s.
3. CPU of frame grabbing on the sub stream (640x360, judged at 2 fps).
4. RSS of 8 cameras (recorder + grabber each): this process plus its ffmpeg children. Goal <= 250 MB.
5. Time from a frozen camera (server SIGSTOPped, connections open) to the offline event. Goal <= 10 s.

The server's encoders are shared between clients (--shared), so adding clients costs the
server nothing and the figures are the client side only. CPU is utime+stime from /proc.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import record
from drivers.camera.clips import cut_clip
from drivers.camera.config import CameraConfig, RecordingConfig
from drivers.camera.grabber import FrameGrabber
from drivers.camera.recorder import Recorder
from drivers.camera.ring import Ring
from tests.peers.net import free_port, port_open, wait_for

GST = Path(__file__).resolve().parents[1] / "tests" / "peers" / "rtsp_gst.py"
TICK = os.sysconf("SC_CLK_TCK")


def cpu_s(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK  # utime, stime


def mem_mb(pid: int, key: str) -> float:
    """VmRSS from status, or Pss from smaps_rollup: RSS counts each shared library page once per
    process (ffmpeg maps ~50 MB of libraries), PSS shares them out, so a sum of PSS is the truth."""
    path = Path(f"/proc/{pid}/status" if key == "VmRSS" else f"/proc/{pid}/smaps_rollup")
    for line in path.read_text().splitlines():
        if line.startswith(key + ":"):
            return int(line.split()[1]) / 1024
    return 0.0


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        p = task / "children"
        if p.exists():
            out += [int(c) for c in p.read_text().split()]
    return out


class Server:
    def __init__(self, width: int, height: int, fps: int) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [
                "/usr/bin/python3",
                str(GST),
                "--port",
                str(self.port),
                "--width",
                str(width),
                "--height",
                str(height),
                "--sub-width",
                "640",
                "--sub-height",
                "360",
                "--fps",
                str(fps),
                "--gop",
                str(fps),
                "--kbps",
                "4000",
                "--shared",
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for(lambda: port_open(self.port), timeout=20, what="RTSP server")

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        os.kill(self.proc.pid, 18)  # SIGCONT, in case it was frozen
        self.proc.terminate()
        self.proc.wait(timeout=10)


def run_component(comp: Any) -> tuple[threading.Event, threading.Thread]:
    stop = threading.Event()
    t = threading.Thread(target=comp.run, args=(stop,), daemon=True)
    t.start()
    return stop, t


def bench_record_and_clip(srv: Server, tmp: Path, seconds: float) -> dict[str, Any]:
    cfg = RecordingConfig(segment_s=2, io_timeout_s=5)
    ring = Ring(tmp / "rec", 60, 2**34)
    rec = Recorder("bench", lambda: srv.url("main"), ring, cfg)
    stop, t = run_component(rec)
    bare = subprocess.Popen(
        [
            "ffmpeg",
            "-hide_banner",
            "-loglevel",
            "error",
            "-nostdin",
            "-rtsp_transport",
            "tcp",
            "-i",
            srv.url("main"),
            "-map",
            "0:v:0",
            "-c",
            "copy",
            "-f",
            "mpegts",
            str(tmp / "bare.ts"),
        ]
    )
    wait_for(lambda: rec._proc is not None and rec.segments_written >= 1, timeout=30, what="recording")
    ffm = rec._proc
    assert ffm is not None
    me = os.getpid()
    t0 = (cpu_s(ffm.pid), cpu_s(bare.pid), cpu_s(me), time.monotonic())
    stop_at = time.monotonic() + seconds
    threading.Event().wait(max(0.0, stop_at - time.monotonic()))
    t1 = (cpu_s(ffm.pid), cpu_s(bare.pid), cpu_s(me), time.monotonic())
    wall = t1[3] - t0[3]
    ours = (t1[0] - t0[0]) + (t1[2] - t0[2])  # ffmpeg child + this process (the list reader thread)
    theirs = t1[1] - t0[1]
    bare.terminate()
    bare.wait()
    stop.set()
    t.join(20)
    segs = ring.segments()
    span = (segs[-1].end_ms - segs[0].start_ms) / 1000
    start = segs[0].start_ms + 3000
    end = start + 60_000
    t_cut = time.monotonic()
    clip = cut_clip(ring, start, end, tmp / "clip60.mp4")
    cut_s = time.monotonic() - t_cut
    probe = json.loads(
        subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-show_entries",
                "format=duration:stream=width,height",
                "-of",
                "json",
                str(clip.path),
            ],
            capture_output=True,
            text=True,
        ).stdout
    )
    return {
        "record_wall_s": round(wall, 1),
        "record_cpu_pct": round(100 * ours / wall, 2),
        "record_ffmpeg_only_cpu_pct": round(100 * (t1[0] - t0[0]) / wall, 2),
        "bare_copy_cpu_pct": round(100 * theirs / wall, 2),
        "ratio": round(ours / theirs, 3) if theirs else None,
        "ratio_ffmpeg_only": round((t1[0] - t0[0]) / theirs, 3) if theirs else None,
        "ring_span_s": round(span, 1),
        "clip60_cut_s": round(cut_s, 3),
        "clip60_duration_s": float(probe["format"]["duration"]),
        "clip60_size_mb": round(clip.path.stat().st_size / 2**20, 1),
        "clip60_resolution": f"{probe['streams'][0]['width']}x{probe['streams'][0]['height']}",
    }


def grab_cfg(name: str, srv: Server, **over: Any) -> CameraConfig:
    return CameraConfig.model_validate(
        {"name": name, "url": srv.url("main"), "sub_url": srv.url("sub"), "grab_fps": 2, **over}
    )


def bench_grab(srv: Server, seconds: float) -> dict[str, Any]:
    g = FrameGrabber(grab_cfg("grab", srv), lambda: srv.url("sub"), lambda e, d: None)
    stop, t = run_component(g)
    wait_for(lambda: g.frames > 10, timeout=30, what="frames")
    c0, w0, f0 = cpu_s(os.getpid()), time.monotonic(), g.frames
    threading.Event().wait(seconds)
    c1, w1, f1 = cpu_s(os.getpid()), time.monotonic(), g.frames
    stop.set()
    t.join(20)
    return {
        "grab_cpu_pct": round(100 * (c1 - c0) / (w1 - w0), 2),
        "grab_frames_per_s": round((f1 - f0) / (w1 - w0), 1),
        "judged_per_s": 2,
    }


def bench_rss(srv: Server, tmp: Path, n: int, seconds: float) -> dict[str, Any]:
    """Cameras are added one by one, each recording and grabbing before the next starts (many
    clients joining one shared gst-rtsp-server media at the same instant break it)."""
    cfg = RecordingConfig(segment_s=2, io_timeout_s=5)
    running = []
    for i in range(n):
        ring = Ring(tmp / f"rss{i}", 5, 2**30)
        rec = Recorder(f"c{i}", lambda: srv.url("main"), ring, cfg)
        g = FrameGrabber(grab_cfg(f"c{i}", srv), lambda: srv.url("sub"), lambda e, d: None)
        running += [run_component(rec), run_component(g)]
        wait_for(lambda r=rec, g=g: r.segments_written >= 1 and g.frames > 0, timeout=60, what=f"camera {i}")
    me = os.getpid()
    threading.Event().wait(seconds)
    kids = [k for k in children(me) if Path(f"/proc/{k}").exists()]
    own = mem_mb(me, "VmRSS")
    kid_rss = sum(mem_mb(k, "VmRSS") for k in kids)
    kid_pss = sum(mem_mb(k, "Pss") for k in kids)
    own_pss = mem_mb(me, "Pss")
    for stop, _ in running:
        stop.set()
    for _, t in running:
        t.join(20)
    return {
        "cameras": n,
        "rss_agent_mb": round(own, 1),
        "pss_agent_mb": round(own_pss, 1),
        "rss_ffmpeg_children_mb": round(kid_rss, 1),
        "pss_ffmpeg_children_mb": round(kid_pss, 1),
        "pss_total_mb": round(own_pss + kid_pss, 1),
        "ffmpeg_children": len(kids),
    }


def bench_freeze(srv: Server) -> dict[str, Any]:
    events: list[tuple[str, float]] = []
    g = FrameGrabber(
        grab_cfg("freeze", srv, stale_after_s=5),
        lambda: srv.url("sub"),
        lambda e, d: events.append((e, time.monotonic())),
    )
    stop, t = run_component(g)
    wait_for(lambda: "online" in [e for e, _ in events], timeout=30, what="online")
    os.kill(srv.proc.pid, 19)  # SIGSTOP: frozen with the connections open
    frozen = time.monotonic()
    wait_for(lambda: "offline" in [e for e, _ in events], timeout=30, what="offline")
    detected = next(ts for e, ts in events if e == "offline") - frozen
    os.kill(srv.proc.pid, 18)
    stop.set()
    t.join(30)
    return {"freeze_detected_s": round(detected, 2), "stale_after_s": 5}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--record-s", type=float, default=75.0, help="recording window (>= 65 for the 60 s clip)")
    p.add_argument("--grab-s", type=float, default=20.0)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--phases", default="record,grab,rss,freeze", help="comma-separated subset to run")
    record.add_argument(p)
    p.add_argument("--out", dest="results", help="the same as --results")
    a = p.parse_args()
    run = record.Run("camera", a.results)
    results: dict[str, Any] = {"machine": {"cpus": os.cpu_count(), "load_1m": os.getloadavg()[0]}}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        phases = {
            "record": lambda srv: bench_record_and_clip(srv, tmp, a.record_s),
            "grab": lambda srv: bench_grab(srv, a.grab_s),
            "rss": lambda srv: bench_rss(srv, tmp, a.cameras, 10),
            "freeze": lambda srv: bench_freeze(srv),
        }
        for name in a.phases.split(","):
            srv = Server(1920, 1080, a.fps)  # a fresh camera per phase: no state carried over
            try:
                results[name] = phases[name](srv)
            finally:
                srv.stop()
            print(json.dumps({name: results[name]}), flush=True)
    results["machine"]["load_1m_after"] = os.getloadavg()[0]
    print(json.dumps(results, indent=2))
    run.write(results)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Camera memory (issue 13): ways of recording N cameras by stream copy, measured one after another.

    .venv/bin/python -m bench.bench_camera_memory [--cameras 8] [--seconds 40]
        [--out docs/bench-results/camera-memory.json]

Same cameras as bench_budget (a 720p 15 fps 2 Mbit/s H.264 clip looped by tests/peers/rtsp_file.py,
no encoding), each variant alone for the window, PSS summed over its processes (mean of samples
every 2 s) and CPU seconds per wall second from /proc:

- per-camera ffmpeg: N processes running the recorder's own command (ffmpeg_record_args);
- one ffmpeg: one process with N inputs and N segment outputs (same options per stream);
- PyAV in process: a Python process that imports what the agent imports for cameras (numpy,
  opencv) and PyAV, and remuxes N streams in N threads, cutting MPEG-TS segments at keyframes
  itself; measured against the same process with the same imports and no streams
  (`python-baseline`), because in the agent only the difference is added.

Each variant must write segments for every camera during the window, or the run fails.
Then `one-ffmpeg-freeze`: what a shared process does when one of its cameras freezes; and
`pool-eviction`: what `[recording] processes = "shared"` (drivers/camera/pool.py) costs the
other cameras when one freezes.
PyAV is not a requirement of the project: the `pyav` variant needs `.venv/bin/pip install av`
and is skipped without it.
"""

from __future__ import annotations

import argparse
import functools
import importlib.util
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from bench import record
from bench.bench_budget import FileCameras, encode_clip
from bench.procs import Group
from drivers.camera.recorder import ffmpeg_record_args
from tests.peers.net import wait_for

ROOT = Path(__file__).resolve().parents[1]


def pyav_child(urls: list[str], out: Path, segment_s: float, with_av: bool) -> None:
    """The in-process recorder, as it would run in the agent: one thread per camera."""
    import cv2  # noqa: F401 - the agent's camera imports, so the baseline is the agent's
    import numpy  # noqa: F401

    if not with_av:
        print("ready", flush=True)
        sys.stdin.read()
        return
    import av

    started = threading.Barrier(len(urls) + 1)

    def remux(i: int, url: str) -> None:
        d = out / f"cam{i}"
        d.mkdir(parents=True, exist_ok=True)
        inp = av.open(url, options={"rtsp_transport": "tcp", "timeout": "5000000"}, timeout=10)
        vs = inp.streams.video[0]
        tb = float(vs.time_base or 0)
        seg = None
        ost = None
        seg_start = 0
        n = 0
        first = True
        for pkt in inp.demux(vs):
            if pkt.dts is None or pkt.pts is None:
                continue
            if pkt.is_keyframe and (seg is None or (pkt.pts - seg_start) * tb >= segment_s):
                if seg is not None:
                    seg.close()
                    if first:
                        first = False
                        started.wait()
                seg = av.open(str(d / f"seg-{n:06d}.ts"), "w", format="mpegts")
                ost = seg.add_stream_from_template(vs)
                seg_start, n = pkt.pts, n + 1
            if seg is None or ost is None:
                continue
            pkt.stream = ost
            seg.mux(pkt)

    for i, url in enumerate(urls):
        threading.Thread(target=remux, args=(i, url), daemon=True).start()
    started.wait()
    print("ready", flush=True)
    sys.stdin.read()


def segs(d: Path) -> int:
    return len(list(d.rglob("*.ts")))


def measure(group: Group, seconds: float, out_dirs: list[Path]) -> dict[str, Any]:
    before = [segs(d) for d in out_dirs]
    tick = threading.Event()
    c0, t0 = group.cpu_s(), time.monotonic()
    load0 = os.getloadavg()[0]
    samples = []
    end = t0 + seconds
    while True:
        samples.append(group.pss())
        if time.monotonic() >= end or tick.wait(min(2.0, max(0.0, end - time.monotonic()))):
            break
    c1, t1 = group.cpu_s(), time.monotonic()
    grown = [segs(d) - b for d, b in zip(out_dirs, before, strict=True)]
    if min(grown) <= 0:
        raise RuntimeError(f"a camera wrote no segment in the window: {grown}")
    totals = [s["total"] for s in samples]
    return {
        "pss_mean_mb": round(sum(totals) / len(totals), 1),
        "pss_max_mb": round(max(totals), 1),
        "processes": int(samples[-1]["processes"]),
        "cpu_s_per_s": round((c1 - c0) / (t1 - t0), 4),
        "segments_in_window": sum(grown),
        "load_1m": [round(load0, 2), round(os.getloadavg()[0], 2)],
    }


def stop(procs: list[subprocess.Popen[Any]]) -> None:
    for p in procs:
        if p.stdin:
            p.stdin.close()
        p.terminate()
    for p in procs:
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def per_camera(urls: list[str], tmp: Path, seconds: float) -> dict[str, Any]:
    dirs = [tmp / "per" / f"cam{i}" for i in range(len(urls))]
    procs = []
    for d, url in zip(dirs, urls, strict=True):
        d.mkdir(parents=True)
        procs.append(subprocess.Popen(ffmpeg_record_args("ffmpeg", url, d / "part-%06d.ts", 1.0, 5.0),
                                      stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL))
    try:
        wait_for(lambda: all(segs(d) >= 2 for d in dirs), timeout=60, what="per-camera ffmpegs recording")
        return measure(Group("per-camera", [p.pid for p in procs], follow=False), seconds, dirs)
    finally:
        stop(procs)


def one_ffmpeg(urls: list[str], tmp: Path, seconds: float) -> dict[str, Any]:
    dirs = [tmp / "one" / f"cam{i}" for i in range(len(urls))]
    inputs: list[str] = []
    outputs: list[str] = []
    for i, (d, url) in enumerate(zip(dirs, urls, strict=True)):
        d.mkdir(parents=True)
        single = ffmpeg_record_args("ffmpeg", url, d / "part-%06d.ts", 1.0, 5.0)
        k = single.index("-i")
        inputs += single[single.index("-rtsp_transport"):k + 2]
        tail = single[k + 2:]
        tail[tail.index("0:v:0")] = f"{i}:v:0"
        tail[tail.index("pipe:1")] = str(d / "list.csv")
        outputs += tail
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "warning", "-nostdin", *inputs, *outputs],
                            stdin=subprocess.DEVNULL)
    try:
        wait_for(lambda: all(segs(d) >= 2 for d in dirs), timeout=60, what="one ffmpeg recording all")
        return measure(Group("one-ffmpeg", [proc.pid], follow=False), seconds, dirs)
    finally:
        stop([proc])


def one_ffmpeg_freeze(main_clip: Path, sub_clip: Path, fps: int, tmp: Path, seconds: float) -> dict[str, Any]:
    """What one process for several cameras does when one camera freezes (its server SIGSTOPped,
    the connection open): two cameras on two servers, one ffmpeg; camera b frozen for `seconds`
    (longer than the 5 s read timeout), then resumed. Counted: segments of each camera per phase,
    and whether the process is still running."""
    servers = [FileCameras(main_clip, sub_clip, fps, tmp / f"freeze-{n}.log") for n in ("a", "b")]
    dirs = [tmp / "freeze" / n for n in ("a", "b")]
    inputs: list[str] = []
    outputs: list[str] = []
    for i, (d, srv) in enumerate(zip(dirs, servers, strict=True)):
        d.mkdir(parents=True)
        single = ffmpeg_record_args("ffmpeg", srv.url("main"), d / "part-%06d.ts", 1.0, 5.0)
        k = single.index("-i")
        inputs += single[single.index("-rtsp_transport"):k + 2]
        tail = single[k + 2:]
        tail[tail.index("0:v:0")] = f"{i}:v:0"
        tail[tail.index("pipe:1")] = str(d / "list.csv")
        outputs += tail
    proc = subprocess.Popen(["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", *inputs, *outputs],
                            stdin=subprocess.DEVNULL)
    tick = threading.Event()
    try:
        wait_for(lambda: all(segs(d) >= 2 for d in dirs), timeout=60, what="one ffmpeg recording both")
        phases: dict[str, Any] = {}
        before = [segs(d) for d in dirs]
        os.kill(servers[1].proc.pid, signal.SIGSTOP)
        tick.wait(seconds)  # the freeze lasts this long: it is the experiment, not a sync point
        frozen = [segs(d) for d in dirs]
        phases["frozen"] = {"a": frozen[0] - before[0], "b": frozen[1] - before[1],
                            "seconds": seconds, "ffmpeg_running": proc.poll() is None}
        os.kill(servers[1].proc.pid, signal.SIGCONT)
        tick.wait(seconds)
        after = [segs(d) for d in dirs]
        phases["resumed"] = {"a": after[0] - frozen[0], "b": after[1] - frozen[1],
                             "seconds": seconds, "ffmpeg_running": proc.poll() is None}
        return phases
    finally:
        stop([proc])
        for srv in servers:
            os.kill(srv.proc.pid, signal.SIGCONT)
            srv.stop()


def pool_eviction(main_clip: Path, sub_clip: Path, fps: int, tmp: Path, cameras: int) -> dict[str, Any]:
    """What `[recording] processes = "shared"` costs when a camera freezes: N cameras in the pool,
    the last one on its own server, frozen (SIGSTOP) once all record. Measured: time from the
    freeze to its eviction, and the largest gap the pool's restart left in the others' rings."""
    from drivers.camera.config import RecordingConfig
    from drivers.camera.pool import PooledRecorder, RecordingPool
    from drivers.camera.ring import Ring

    shared, lone = (FileCameras(main_clip, sub_clip, fps, tmp / f"pool-{n}.log") for n in ("shared", "lone"))
    cfg = RecordingConfig(processes="shared")
    pool = RecordingPool(cfg)
    urls = [(lone if i == cameras - 1 else shared).url("main") for i in range(cameras)]
    recs = [PooledRecorder(pool, f"c{i}", functools.partial(str, urls[i]), Ring(tmp / "pool" / f"c{i}", 10, 2**30), cfg)
            for i in range(cameras)]
    stop_ev = threading.Event()
    threads = [threading.Thread(target=c.run, args=(stop_ev,), daemon=True) for c in (pool, *recs)]
    t_start = time.monotonic()
    for t in threads:
        t.start()
    try:
        wait_for(lambda: all(r.segments_written >= 3 for r in recs), timeout=120, what="every camera in the pool")
        first_s = time.monotonic() - t_start
        others, frozen = recs[:-1], recs[-1]
        os.kill(lone.proc.pid, signal.SIGSTOP)
        frozen_at, frozen_ms = time.monotonic(), time.time() * 1000
        wait_for(frozen.evicted.is_set, timeout=120, what="the frozen camera's eviction")
        evicted_s = time.monotonic() - frozen_at
        counts = [r.segments_written for r in others]
        wait_for(lambda: all(r.segments_written >= n + 5 for r, n in zip(others, counts, strict=True)),
                 timeout=120, what="the others recording again")
        gaps = []
        for r in others:
            segs = [sg for sg in r.ring.segments() if sg.end_ms >= frozen_ms]
            gaps.append(max((b.start_ms - a.end_ms) / 1000 for a, b in zip(segs, segs[1:], strict=False)))
        os.kill(lone.proc.pid, signal.SIGCONT)
        n = frozen.segments_written
        wait_for(lambda: frozen.segments_written >= n + 2, timeout=120, what="the frozen camera in its own ffmpeg")
        return {"cameras": cameras, "all_recording_after_start_s": round(first_s, 1),
                "freeze_to_eviction_s": round(evicted_s, 1),
                "largest_gap_in_the_others_s": round(max(gaps), 1), "io_timeout_s": cfg.io_timeout_s,
                "segment_s": cfg.segment_s, "pool_runs": pool.runs,
                "frozen_camera_recorded_alone_after_resume": frozen._proc is not None}
    finally:
        stop_ev.set()
        for t in threads:
            t.join(20)
        os.kill(lone.proc.pid, signal.SIGCONT)
        shared.stop()
        lone.stop()


def in_python(urls: list[str], tmp: Path, seconds: float, with_av: bool) -> dict[str, Any]:
    out = tmp / ("pyav" if with_av else "base")
    out.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.bench_camera_memory", "--child", "av" if with_av else "base",
         "--child-out", str(out), *[f"--url={u}" for u in urls]],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline().strip()  # the child's "ready": every camera has closed a segment
        if line != "ready":
            raise RuntimeError(f"PyAV child said {line!r}")
        if not with_av:
            group = Group("baseline", [proc.pid], follow=False)
            tick = threading.Event()
            samples = []
            for _ in range(5):
                samples.append(group.pss()["total"])
                tick.wait(1.0)  # a sampling period
            return {"pss_mean_mb": round(sum(samples) / len(samples), 1), "processes": 1}
        return measure(Group("pyav", [proc.pid], follow=False), seconds, [out / f"cam{i}" for i in range(len(urls))])
    finally:
        stop([proc])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--seconds", type=float, default=40.0)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--kbps", type=int, default=2000)
    p.add_argument("--variants", default="per-camera,one-ffmpeg,python-baseline,pyav,one-ffmpeg-freeze,pool-eviction")
    p.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "coop-bench-clips")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-results" / "camera-memory.json")
    p.add_argument("--child", choices=["av", "base"], help=argparse.SUPPRESS)
    p.add_argument("--child-out", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--url", action="append", default=[], help=argparse.SUPPRESS)
    a = p.parse_args()
    if a.child:
        pyav_child(a.url, a.child_out, 1.0, a.child == "av")
        return 0
    a.clips.mkdir(parents=True, exist_ok=True)
    main_clip = encode_clip(a.clips / f"main-720p-{a.fps}fps-{a.kbps}k.h264", 1280, 720, a.fps, a.kbps)
    sub_clip = encode_clip(a.clips / f"sub-360p-{a.fps}fps-400k.h264", 640, 360, a.fps, 400)
    results: dict[str, Any] = {
        "command": " ".join(["python -m bench.bench_camera_memory", *sys.argv[1:]]),
        "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "cpus": os.cpu_count(),
        "cameras": a.cameras,
        "stream": f"1280x720 {a.fps} fps {a.kbps} kbit/s H.264, GOP {a.fps}",
    }
    rec = record.Run("camera-memory", str(a.out))
    with tempfile.TemporaryDirectory(prefix="bench-cammem-") as d:
        tmp = Path(d)
        cams = FileCameras(main_clip, sub_clip, a.fps, tmp / "rtsp.log")
        try:
            urls = [cams.url("main")] * a.cameras
            runs = {
                "per-camera": lambda: per_camera(urls, tmp, a.seconds),
                "one-ffmpeg": lambda: one_ffmpeg(urls, tmp, a.seconds),
                "python-baseline": lambda: in_python(urls, tmp, a.seconds, with_av=False),
                "pyav": lambda: in_python(urls, tmp, a.seconds, with_av=True),
                "one-ffmpeg-freeze": lambda: one_ffmpeg_freeze(main_clip, sub_clip, a.fps, tmp, 20.0),
                "pool-eviction": lambda: pool_eviction(main_clip, sub_clip, a.fps, tmp, a.cameras),
            }
            for name in a.variants.split(","):
                if name == "pyav" and importlib.util.find_spec("av") is None:
                    results[name] = "skipped: PyAV is not installed (.venv/bin/pip install av; not a requirement)"
                    continue
                results[name] = runs[name]()
                print(json.dumps({name: results[name]}), flush=True)
        finally:
            cams.stop()
    if "pyav" in results and "python-baseline" in results:
        results["pyav_added_to_agent_mb"] = round(
            results["pyav"]["pss_mean_mb"] - results["python-baseline"]["pss_mean_mb"], 1)
    rec.write(results)  # with the commit, the machine and the load before and after (bench/record.py)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())

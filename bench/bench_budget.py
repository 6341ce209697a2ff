"""Whole-branch budget (issue 13): the real agent (`coopagent run`) under a busy Saturday, against the floor.

    .venv/bin/python -m bench.bench_budget [--seconds 240] [--cameras 8] [--tills 20]
        [--sale-every-s 30] [--lines 20] [--workers auto] [--processes per-camera|shared]
        [--out docs/bench-results/budget.json]

In one run, at the same time:
- the agent as a separate `coopagent run` process with its config: N cameras (720p main stream
  recorded, 640x360 sub stream judged at 2 fps: the camera defaults), a scanner and a CAS scale
  at the dock on pty pairs (socat) driven by the project's simulators, the local API with the
  default `[api] workers`, the uplink to a real Mosquitto and the reference receiver acking;
- 20 tills posting sales to the API: each till one sale every `--sale-every-s` (uniformly
  jittered 0.5x-1.5x, seeded) with `--lines` lines;
- the floor: N bare `ffmpeg -c copy` of the same N main streams into MPEG-TS files.

Measured over the window after every camera has written a segment: CPU seconds per wall second
of the agent's whole process tree (the agent, its API worker, its ffmpeg recorders, any
ffprobe) and of the floor's processes, from /proc (utime+stime+cutime+cstime); PSS of both
sampled every 5 s (mean and max). Not counted: the RTSP server, the broker, the receiver,
the tills and the simulators (this process and its other children).

The cameras cost nothing to serve: one 720p and one 360p H.264 clip are encoded once with
ffmpeg (no B-frames, 1 s GOP) and tests/peers/rtsp_file.py loops them over RTSP without
re-encoding. Every non-201 answer to a till fails the run.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
from biip.checksums import gs1_standard_check_digit

from bench import record
from bench.procs import Group
from drivers.serial.sim.devices import CasSim, ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.peers.agent import Branch
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[1]
FILE_SERVER = ROOT / "tests" / "peers" / "rtsp_file.py"
SYSTEM_PYTHON = os.environ.get("COOP_GST_PYTHON", "/usr/bin/python3")


def encode_clip(path: Path, width: int, height: int, fps: int, kbps: int, seconds: int = 20) -> Path:
    """A camera-like H.264 stream: moving test picture, constant bitrate, GOP = 1 s, no B-frames."""
    if not path.exists():
        subprocess.run(
            ["ffmpeg", "-hide_banner", "-loglevel", "error", "-y", "-f", "lavfi",
             "-i", f"testsrc2=size={width}x{height}:rate={fps}", "-t", str(seconds),
             "-c:v", "libx264", "-preset", "veryfast", "-profile:v", "main", "-bf", "0", "-pix_fmt", "yuv420p",
             "-b:v", f"{kbps}k", "-maxrate", f"{kbps}k", "-bufsize", f"{kbps}k",
             "-g", str(fps), "-keyint_min", str(fps), "-sc_threshold", "0", "-f", "h264", str(path)],
            check=True,
        )
    return path


class FileCameras:
    """tests/peers/rtsp_file.py serving /main and /sub from the two clips, one pipeline per client."""

    def __init__(self, main: Path, sub: Path, fps: int, log: Path) -> None:
        self.port = free_port()
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(
                [SYSTEM_PYTHON, str(FILE_SERVER), "--port", str(self.port), "--fps", str(fps),
                 "--path", f"main={main}", "--path", f"sub={sub}"],
                stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=err,
            )
        wait_for(lambda: port_open(self.port) or self.proc.poll() is not None, timeout=20, what="RTSP file server")
        if self.proc.poll() is not None:
            raise RuntimeError(f"RTSP file server exited: {log.read_text()[-2000:]}")

    def url(self, path: str) -> str:
        return f"rtsp://127.0.0.1:{self.port}/{path}"

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdin:
            self.proc.stdin.close()


def bare_copy(url: str, out: Path) -> subprocess.Popen[bytes]:
    """The floor: what recording a stream costs at the least (same options as bench_camera's)."""
    return subprocess.Popen(
        ["ffmpeg", "-hide_banner", "-loglevel", "error", "-nostdin", "-rtsp_transport", "tcp",
         "-i", url, "-map", "0:v:0", "-c", "copy", "-f", "mpegts", str(out)],
        stdin=subprocess.DEVNULL,
    )


def sale(till: int, n: int, lines: int, rng: random.Random) -> dict[str, Any]:
    items = []
    total = 0
    for _ in range(lines):
        qty = rng.choice((1, 1, 1, 2, 3))
        price = rng.randrange(150, 9000, 5)
        body = f"0950600{rng.randrange(10**6):06d}"
        items.append({"gtin": body + str(gs1_standard_check_digit(body)), "qty": qty, "unit_price": price,
                      "amount": qty * price})
        total += qty * price
    return {"kind": "sale", "data": {"receipt": f"T{till}-{n}", "till": str(till), "currency": "KWD",
                                     "total": total, "lines": items}}


class Tills:
    """Each till a thread: one sale every period (jittered 0.5x-1.5x, seeded), its own keep-alive client."""

    def __init__(self, base: str, token: str, tills: int, period_s: float, lines: int) -> None:
        self.base, self.token, self.period_s, self.lines = base, token, period_s, lines
        self.stop = threading.Event()
        self.ok = 0
        self.bad: list[str] = []
        self.latency_ms: list[float] = []
        self._lock = threading.Lock()
        self.threads = [threading.Thread(target=self._till, args=(i + 1,), daemon=True) for i in range(tills)]

    def start(self) -> Tills:
        for t in self.threads:
            t.start()
        return self

    def _till(self, till: int) -> None:
        rng = random.Random(till)
        n = 0
        with httpx.Client(base_url=self.base, headers={"Authorization": f"Bearer {self.token}"}, timeout=30) as c:
            wait = rng.uniform(0, 1) * self.period_s  # tills do not start in step
            while not self.stop.wait(wait):
                wait = rng.uniform(0.5, 1.5) * self.period_s
                n += 1
                t0 = time.perf_counter()
                try:
                    r = c.post("/v1/records", json={"records": [sale(till, n, self.lines, rng)]})
                    status = str(r.status_code) if r.status_code == 201 else f"{r.status_code} {r.text[:300]}"
                except httpx.HTTPError as exc:
                    status = f"{type(exc).__name__}: {exc}"
                dt = (time.perf_counter() - t0) * 1000
                with self._lock:
                    if status == "201":
                        self.ok += 1
                        self.latency_ms.append(dt)
                    else:
                        self.bad.append(f"till {till} sale {n}: {status}")

    def close(self) -> None:
        self.stop.set()
        for t in self.threads:
            t.join(35)


class Dock:
    """A receiving at the dock: a scan every `scan_every_s`, a carton on the streaming CAS scale every 20 s."""

    def __init__(self, root: Path, scan_every_s: float, scale_interval_s: float) -> None:
        self.scan_link = PtyLink(root / "tty-scan", root / "dev-scan").start()
        self.scale_link = PtyLink(root / "tty-scale", root / "dev-scale").start()
        self.scan_every_s = scan_every_s
        self.scale_interval_s = scale_interval_s
        self.scanner: ScannerSim | None = None
        self.scale: CasSim | None = None
        self.stop = threading.Event()
        self.scans = 0
        self.placements = 0
        self.thread = threading.Thread(target=self._run, daemon=True, name="dock")

    def config(self) -> dict[str, Any]:
        return {
            "scanners": [{"name": "dock", "port": str(self.scan_link.agent_side), "location": "DOCK-1"}],
            "scales": [{"name": "dock", "port": str(self.scale_link.agent_side), "protocol": "cas"}],
        }

    def start(self) -> Dock:
        self.scanner = ScannerSim(self.scan_link.device_side).start()
        self.scale = CasSim(self.scale_link.device_side, interval_s=self.scale_interval_s).start()
        self.thread.start()
        return self

    def _run(self) -> None:
        codes = ["]E05901234123457", "]E04006381333931", "]E09506000134352"]
        assert self.scanner is not None and self.scale is not None
        while not self.stop.wait(self.scan_every_s):
            self.scanner.scan(codes[self.scans % len(codes)])
            self.scans += 1
            if self.scans % max(1, round(20 / self.scan_every_s)) == 0:
                self.placements += 1
                self.scale.place(0 if self.placements % 2 else 4000 + self.placements)

    def close(self) -> None:
        self.stop.set()
        self.thread.join(10)
        for sim in (self.scanner, self.scale):
            if sim is not None:
                sim.stop()
        self.scan_link.stop()
        self.scale_link.stop()


def segments(rec_dir: Path, camera: str) -> int:
    d = rec_dir / camera
    return len(list(d.glob("*.ts"))) if d.exists() else 0


def run(a: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    clips = a.clips
    clips.mkdir(parents=True, exist_ok=True)
    main = encode_clip(clips / f"main-720p-{a.fps}fps-{a.kbps}k.h264", 1280, 720, a.fps, a.kbps)
    sub = encode_clip(clips / f"sub-360p-{a.fps}fps-400k.h264", 640, 360, a.fps, 400)
    cams = FileCameras(main, sub, a.fps, tmp / "rtsp.log")
    broker = Mosquitto(tmp / "mqtt").start()
    branch = Branch(tmp / "branch", broker)
    dock = Dock(tmp, a.scan_every_s, a.scale_interval_s)
    floor: list[subprocess.Popen[bytes]] = []
    tills: Tills | None = None
    result: dict[str, Any] = {}
    try:
        branch.start_receiver()
        cameras = [{"name": f"cam{i}", "url": cams.url("main"), "sub_url": cams.url("sub")} for i in range(a.cameras)]
        workers: Any = a.workers if a.workers == "auto" else int(a.workers)
        branch.start_agent_process(
            cameras=cameras,
            recording={"ring_minutes": 10, "processes": a.processes},
            api={"workers": workers},
            agent={"log_level": "warning"},
            **dock.config(),
        )
        dock.start()
        assert branch.proc is not None
        rec_dir = branch.data_dir / "recordings"
        wait_for(lambda: all(segments(rec_dir, f"cam{i}") >= 2 for i in range(a.cameras)), timeout=120,
                 what="every camera recording")
        agent = Group("agent", [branch.proc.pid])
        tick = threading.Event()
        for i in range(a.cameras):
            floor.append(bare_copy(cams.url("main"), tmp / f"floor{i}.ts"))
        tills = Tills(f"http://127.0.0.1:{branch.api_port}", branch.token, a.tills, a.sale_every_s, a.lines).start()
        bare = Group("floor", [p.pid for p in floor], follow=False)
        wait_for(lambda: all((tmp / f"floor{i}.ts").exists() and (tmp / f"floor{i}.ts").stat().st_size > 0
                             for i in range(a.cameras)), timeout=60, what="the floor's ffmpegs writing")
        tick.wait(a.warmup_s)  # past start-up (imports, first connections), not a sync point
        load0 = os.getloadavg()
        segs0 = sum(segments(rec_dir, f"cam{i}") for i in range(a.cameras))
        t0, c_agent0, c_floor0, by0 = time.monotonic(), agent.cpu_s(), bare.cpu_s(), agent.cpu_by_name()
        sold0, scans0 = tills.ok, dock.scans
        samples: list[dict[str, Any]] = []
        end = t0 + a.seconds
        while True:
            samples.append({"t": round(time.monotonic() - t0, 1), "agent": agent.pss(), "floor": bare.pss(),
                            "load_1m": os.getloadavg()[0]})
            if time.monotonic() >= end or tick.wait(min(5.0, max(0.0, end - time.monotonic()))):
                break
        t1, c_agent1, c_floor1, by1 = time.monotonic(), agent.cpu_s(), bare.cpu_s(), agent.cpu_by_name()
        load1 = os.getloadavg()
        wall = t1 - t0
        # The agent alone at the end, the tills still selling: while the floor's ffmpegs run they
        # share library pages with the agent's, and PSS splits those pages between the two groups.
        for p in floor:
            p.terminate()
            p.wait(10)
        floor.clear()
        alone = []
        for _ in range(5):
            tick.wait(2.0)  # a sampling period, not a sync point
            alone.append(agent.pss())
        if branch.proc.poll() is not None:
            raise RuntimeError(f"the agent exited during the run: {branch.agent_log()[-3000:]}")

        def pss_stats(who: str) -> dict[str, Any]:
            totals = [s[who]["total"] for s in samples]
            last = samples[-1][who]
            return {"mean_mb": round(sum(totals) / len(totals), 1), "max_mb": round(max(totals), 1),
                    "last_by_process_mb": {k: round(v, 1) for k, v in last.items()}}

        lat = sorted(tills.latency_ms) or [0.0]
        result = {
            "window_s": round(wall, 1),
            "load_avg_before": [round(x, 2) for x in load0],
            "load_avg_after": [round(x, 2) for x in load1],
            "agent": {"cpu_s_per_s": round((c_agent1 - c_agent0) / wall, 4),
                      "pss_alone_after_floor_mean_mb": round(sum(x["total"] for x in alone) / len(alone), 1),
                      "pss_alone_after_floor_by_process_mb": {k: round(v, 1) for k, v in alone[-1].items()},
                      "cpu_s_per_s_by_process": {k: round((v - by0.get(k, 0.0)) / wall, 4) for k, v in by1.items()},
                      "pss": pss_stats("agent")},
            "floor_bare_ffmpeg_copy": {"cpu_s_per_s": round((c_floor1 - c_floor0) / wall, 4),
                                       "pss": pss_stats("floor")},
            "load": {
                "cameras": a.cameras, "stream": f"1280x720 {a.fps} fps {a.kbps} kbit/s H.264, GOP {a.fps}; "
                f"sub 640x360 400 kbit/s", "tills": a.tills, "sale_every_s": a.sale_every_s,
                "lines_per_sale": a.lines, "api_workers": a.workers, "recording_processes": a.processes,
                "sales_201_in_window": tills.ok - sold0,
                "sales_per_s": round((tills.ok - sold0) / wall, 3),
                "sale_post_ms_p50": round(lat[len(lat) // 2], 1), "sale_post_ms_max": round(lat[-1], 1),
                "scans_in_window": dock.scans - scans0, "scale_frames_per_s": round(1 / a.scale_interval_s, 1),
                "segments_in_window": sum(segments(rec_dir, f"cam{i}") for i in range(a.cameras)) - segs0,
            },
            "samples": samples,
        }
        if tills.bad:
            result["failed_posts"] = tills.bad[:20]
        return result
    finally:
        if tills is not None:
            tills.close()
        for p in floor:
            p.terminate()
            p.wait(10)
        if branch.proc is not None and branch.proc.poll() is None:
            branch.proc.terminate()
            try:
                branch.proc.wait(30)
            except subprocess.TimeoutExpired:
                branch.proc.kill()
                branch.proc.wait()
        branch.proc = None
        dock.close()
        branch.close()
        broker.stop()
        cams.stop()


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--seconds", type=float, default=240.0, help="measured window")
    p.add_argument("--warmup-s", type=float, default=20.0, help="after every camera and the floor run")
    p.add_argument("--cameras", type=int, default=8)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--kbps", type=int, default=2000, help="main stream bitrate")
    p.add_argument("--tills", type=int, default=20)
    p.add_argument("--sale-every-s", type=float, default=30.0, help="mean seconds between one till's sales")
    p.add_argument("--lines", type=int, default=20, help="lines per sale")
    p.add_argument("--scan-every-s", type=float, default=4.0, help="dock scanner: seconds between reads")
    p.add_argument("--scale-interval-s", type=float, default=0.1, help="CAS scale: seconds between frames")
    p.add_argument("--workers", default="auto", help="[api] workers (auto = the agent's default)")
    p.add_argument("--processes", choices=["per-camera", "shared"], default="per-camera", help="[recording] processes")
    p.add_argument("--clips", type=Path, default=Path(tempfile.gettempdir()) / "coop-bench-clips")
    p.add_argument("--out", type=Path, default=ROOT / "docs" / "bench-results" / "budget.json")
    a = p.parse_args()
    rec = record.Run("budget", str(a.out))
    with tempfile.TemporaryDirectory(prefix="bench-budget-") as d:
        result = run(a, Path(d))
    result = {"command": " ".join(["python -m bench.bench_budget", *sys.argv[1:]]),
              "at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "cpus": os.cpu_count(), **result}
    rec.write(result)  # with the commit, the machine and the load before and after (bench/record.py)
    summary = {k: v for k, v in result.items() if k != "samples"}
    print(json.dumps(summary, indent=2))
    return 1 if result.get("failed_posts") else 0


if __name__ == "__main__":
    sys.exit(main())

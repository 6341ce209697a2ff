"""The unit's SystemCallFilter and MemoryDenyWriteExecute let the agent and ffmpeg work.

systemd cannot start the unit here (no PID 1), so tests.ops.sandbox loads the same seccomp
filters systemd 252 would, built from the unit file itself, and runs the real workload
under them: Python with SQLite, the device key, adjtimex, a serial line on a real pty,
TCP, and ffmpeg encoding, cutting with stream copy and taking a snapshot.

Two modes. "unit" is exactly what the service gets: a forbidden call fails with EPERM.
"strict" turns any forbidden call into SIGSYS, so a call that is refused but tolerated
still shows up. Strict mode allows three calls the unit refuses, each known and harmless:
mbind and set_mempolicy (NUMA placement hints from OpenBLAS and ffmpeg, which carry on
without them) and fchown, which SQLite calls on its WAL only when running as root, as
this test does and the service (User=coopagent) never does.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.ops.sandbox import MODES, UNIT
from tests.ops.sandbox import REPO as ROOT

pytestmark = [
    pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze"),
    pytest.mark.skipif(sys.platform != "linux", reason="seccomp is Linux only"),
]


def sandboxed(args: list[str], *cmd: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "tests.ops.sandbox", str(UNIT), *args, "--", *cmd],
                          cwd=ROOT, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_agent_workload_runs_under_the_unit_filter(tmp_path: Path, mode: str) -> None:
    r = sandboxed(MODES[mode], sys.executable, "tests/ops/sandbox_workload.py", str(tmp_path))
    assert r.returncode == 0, f"rc {r.returncode}\n{r.stdout}\n{r.stderr[-3000:]}"
    steps = [line.split()[1] for line in r.stdout.splitlines() if line.startswith("ok ")]
    assert steps == ["sqlite", "key", "clock", "serial", "tcp", "ffi", "vision", "imports"]


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_ffmpeg_encodes_cuts_and_snapshots_under_the_unit_filter(tmp_path: Path, mode: str) -> None:
    src, clip, jpg = tmp_path / "src.mp4", tmp_path / "clip.mp4", tmp_path / "snap.jpg"
    ff = ["ffmpeg", "-nostdin", "-loglevel", "error", "-y"]
    steps = [
        [*ff, "-f", "lavfi", "-i", "testsrc=size=320x240:rate=10", "-t", "3", "-c:v", "libx264",
         "-pix_fmt", "yuv420p", "-g", "10", str(src)],
        [*ff, "-ss", "1", "-i", str(src), "-t", "1", "-c", "copy", "-movflags", "+faststart", str(clip)],
        [*ff, "-i", str(src), "-frames:v", "1", str(jpg)],
    ]
    for cmd in steps:
        r = sandboxed(MODES[mode], *cmd)
        assert r.returncode == 0, f"{cmd}: rc {r.returncode}\n{r.stderr[-3000:]}"
    probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0",
                            str(clip)], capture_output=True, text=True, timeout=30, check=True)
    assert 0.5 < float(probe.stdout) < 2.5
    assert jpg.read_bytes()[:2] == b"\xff\xd8"


def test_filter_is_really_applied() -> None:
    """Guards against a sandbox that silently does nothing: a call outside the unit's list
    (sched_setaffinity, in @resources) and W+X memory are refused with EPERM."""
    code = (
        "import errno, mmap, os\n"
        "try:\n    os.sched_setaffinity(0, {0})\nexcept PermissionError:\n    print('affinity refused')\n"
        "try:\n    mmap.mmap(-1, 4096, prot=mmap.PROT_READ | mmap.PROT_WRITE | mmap.PROT_EXEC)\n"
        "except PermissionError:\n    print('wx refused')\n"
    )
    r = sandboxed([], sys.executable, "-c", code)
    assert r.stdout.split("\n")[:2] == ["affinity refused", "wx refused"], r.stderr


def test_clock_sync_needs_the_adjtimex_line() -> None:
    """Why the unit adds adjtimex and clock_adjtime back after removing @privileged: glibc's
    adjtimex() is the clock_adjtime syscall, and without it the sync state is unknown."""
    code = "from agent.clock import read_sync; s = read_sync(); print(s.synced, s.reason)"
    with_line = sandboxed([], sys.executable, "-c", code)
    assert with_line.stdout.split()[0] in ("True", "False"), with_line.stderr
    without = sandboxed(["--drop", "adjtimex", "--drop", "clock_adjtime"], sys.executable, "-c", code)
    assert without.stdout.startswith("None adjtimex failed: errno 1"), without.stderr


def test_protect_system_emulation_is_really_applied(tmp_path: Path) -> None:
    """--writable leaves only the named folders writable, as ProtectSystem=strict with
    StateDirectory= does; the service test relies on this to prove where the agent writes."""
    state, outside = tmp_path / "state", tmp_path / "outside"
    state.mkdir()
    code = ("import sys\nfor p in sys.argv[1:]:\n    try:\n        open(p, 'w').close(); print('wrote', p)\n"
            "    except OSError as e:\n        print('refused', p, e.strerror)\n")
    r = sandboxed(["--writable", str(state)], sys.executable, "-c", code, str(state / "ok"), str(outside))
    expected = [f"wrote {state / 'ok'}", f"refused {outside} Read-only file system"]
    assert r.stdout.splitlines() == expected, r.stderr
    assert (state / "ok").exists() and not outside.exists()


@pytest.mark.slow
@pytest.mark.parametrize("mode", MODES)
def test_ffmpeg_records_rtsp_under_the_unit_filter(tmp_path: Path, mode: str) -> None:
    """The camera recorder's own ffmpeg command (drivers.camera.recorder) pulling a real
    RTSP stream over TCP from the GStreamer test camera, as the service runs it."""
    from drivers.camera.recorder import ffmpeg_record_args
    from tests.peers.net import wait_for
    from tests.peers.rtsp_server import RtspCamera

    cam = RtspCamera(tmp_path / "cam", width=320, height=180, fps=10, gop=10, kbps=300).start()
    ring = tmp_path / "ring"
    ring.mkdir()
    args = ffmpeg_record_args("ffmpeg", cam.url("main"), ring / "part-%06d.ts", segment_s=1, io_timeout_s=5)
    proc = subprocess.Popen([sys.executable, "-m", "tests.ops.sandbox", str(UNIT), *MODES[mode], "--", *args],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    closed: list[str] = []  # the segment list on stdout names each part once ffmpeg closed it
    reader = threading.Thread(target=lambda: closed.extend(ln for ln in proc.stdout or [] if ln.strip()))
    reader.start()
    try:
        wait_for(lambda: len(closed) >= 2 or proc.poll() is not None, timeout=30, what="two closed segments")
        assert proc.poll() is None, f"ffmpeg ended early: rc {proc.returncode}"
        proc.terminate()  # as the recorder stops it
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        reader.join(10)
        cam.stop()
    assert proc.returncode != -31, f"SIGSYS: a forbidden system call\n{err}"
    parts = sorted(ring.glob("part-*.ts"))
    assert len(parts) >= 2
    probe = subprocess.run(["ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries",
                            "stream=codec_name", "-of", "csv=p=0", str(parts[0])],
                           capture_output=True, text=True, timeout=30, check=True)
    assert set(probe.stdout.split()) == {"h264"}  # MPEG-TS lists the stream under its program too

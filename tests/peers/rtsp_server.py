"""A real RTSP camera for the tests: GStreamer's RTSP server (tests/peers/rtsp_gst.py) as a child process.

It runs under Debian's /usr/bin/python3 because python3-gi is not in the venv. The test drives it:
pause() freezes the stream with the connection open (SIGSTOP), stop()/start() is an outage on the same port,
pattern("black") covers the lens, blur(8) puts it out of focus.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.net import free_port, port_open, wait_for

GST_SCRIPT = Path(__file__).with_name("rtsp_gst.py")
SYSTEM_PYTHON = os.environ.get("COOP_GST_PYTHON", "/usr/bin/python3")


@dataclass
class RtspCamera:
    workdir: Path
    port: int = field(default_factory=free_port)
    width: int = 640
    height: int = 360
    sub_width: int = 320
    sub_height: int = 180
    fps: int = 10
    gop: int = 10
    kbps: int = 800
    user: str = ""
    password: str = ""
    proc: subprocess.Popen[str] | None = None
    _answers: list[str] = field(default_factory=list)
    _cond: threading.Condition = field(default_factory=threading.Condition)

    def url(self, path: str = "main", with_auth: bool = False) -> str:
        auth = f"{self.user}:{self.password}@" if with_auth and self.user else ""
        return f"rtsp://{auth}127.0.0.1:{self.port}/{path}"

    def start(self) -> RtspCamera:
        self.workdir.mkdir(parents=True, exist_ok=True)
        args = [
            SYSTEM_PYTHON,
            str(GST_SCRIPT),
            "--port",
            str(self.port),
            "--width",
            str(self.width),
            "--height",
            str(self.height),
            "--sub-width",
            str(self.sub_width),
            "--sub-height",
            str(self.sub_height),
            "--fps",
            str(self.fps),
            "--gop",
            str(self.gop),
            "--kbps",
            str(self.kbps),
        ]
        if self.user:
            args += ["--user", self.user, "--password", self.password]
        log = open(self.workdir / "rtsp.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=log, text=True)
        log.close()
        self._answers.clear()
        threading.Thread(target=self._read, args=(self.proc,), daemon=True, name="rtsp-peer-out").start()
        proc = self.proc
        wait_for(lambda: port_open(self.port) or proc.poll() is not None, timeout=15, what="RTSP server to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"RTSP server exited: {(self.workdir / 'rtsp.log').read_text()[-2000:]}")
        return self

    def _read(self, proc: subprocess.Popen[str]) -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            with self._cond:
                self._answers.append(line.strip())
                self._cond.notify_all()

    def _command(self, line: str) -> None:
        """Send one command and wait for the server's "ok WORD" answer (an event, not a sleep)."""
        assert self.proc is not None and self.proc.stdin is not None
        word = line.split()[0]
        with self._cond:
            self.proc.stdin.write(line + "\n")
            self.proc.stdin.flush()
            if not self._cond.wait_for(lambda: f"ok {word}" in self._answers, timeout=10):
                raise AssertionError(f"RTSP server did not confirm {line!r}: {self._answers[-5:]}")
            self._answers.remove(f"ok {word}")

    def pause(self) -> None:
        """Freeze: the server process stops, its TCP sessions stay open and silent."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)

    def pattern(self, name: str) -> None:
        self._command(f"pattern {name}")

    def blur(self, sigma: float) -> None:
        self._command(f"blur {sigma}")

    def stop(self) -> None:
        if self.proc is None:
            return
        os.kill(self.proc.pid, signal.SIGCONT)  # a frozen server must run to die
        self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            if pipe is not None:
                pipe.close()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

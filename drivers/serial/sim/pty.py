"""A pseudo-terminal pair with stable path names that can vanish and come back (unplug/replug).

socat makes two linked PTYs and symlinks them at the given paths; killing it removes the
links, exactly like a USB serial adapter's /dev/serial/by-id link disappearing on unplug.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path


class PtyLink:
    def __init__(self, agent_side: Path, device_side: Path) -> None:
        self.agent_side = agent_side
        self.device_side = device_side
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 5.0) -> PtyLink:
        socat = shutil.which("socat")
        if socat is None:
            raise RuntimeError("socat is not installed (apt-get install socat)")
        self.proc = subprocess.Popen(
            [socat, f"PTY,link={self.agent_side},raw,echo=0", f"PTY,link={self.device_side},raw,echo=0"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        deadline = time.monotonic() + timeout
        while not (self.agent_side.exists() and self.device_side.exists()):
            if self.proc.poll() is not None:
                err = self.proc.stderr.read().decode(errors="replace") if self.proc.stderr else ""
                raise RuntimeError(f"socat exited: {err.strip()}")
            if time.monotonic() > deadline:
                self.stop()
                raise TimeoutError("socat did not create the pty links")
            time.sleep(0.01)  # waiting for a child process to create files; no event to wait on
        return self

    def stop(self) -> None:
        """Unplug: socat exits and removes both links."""
        if self.proc is None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.proc.stderr:
            self.proc.stderr.close()
        self.proc = None
        for p in (self.agent_side, self.device_side):
            if p.is_symlink():
                os.unlink(p)

    def __enter__(self) -> PtyLink:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

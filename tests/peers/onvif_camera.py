"""A real ONVIF device for the tests: PyPI ipycam's ONVIF service (tests/peers/onvif_ipycam.py).

ipycam lives in its own venv (.venv-ipycam at the repository root): it depends on the full
opencv-python, which must not meet opencv-python-headless in the project venv. The venv is
made on first use (`make ipycam-venv` does the same). Without --discovery the device binds
127.0.0.1 only; WS-Discovery (multicast on UDP 3702) runs only inside `unshare --net`, so
its probes and Hello messages never reach the real network (see netns_script()).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.net import free_port, port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]
IPYCAM_VENV = Path(os.environ.get("COOP_IPYCAM_VENV", ROOT / ".venv-ipycam"))
IPYCAM_VERSION = "1.3.0"
SCRIPT = Path(__file__).with_name("onvif_ipycam.py")
_VENV_LOCK = threading.Lock()


def ipycam_python() -> Path:
    """The ipycam venv's interpreter, creating the venv once if it is missing."""
    py = IPYCAM_VENV / "bin" / "python"
    with _VENV_LOCK:
        if not py.exists():
            subprocess.run(["/usr/bin/python3", "-m", "venv", str(IPYCAM_VENV)], check=True)
            subprocess.run([str(py), "-m", "pip", "install", "-q", f"ipycam=={IPYCAM_VERSION}"], check=True)
    return py


@dataclass
class OnvifCamera:
    workdir: Path
    rtsp_port: int
    port: int = field(default_factory=free_port)
    serial: str = "PY-000001"
    user: str = "admin"
    password: str = "s3cret-Pa55"
    clock_offset_s: float = 0.0
    host: str = "127.0.0.1"
    proc: subprocess.Popen[str] | None = None

    def args(self, discovery: bool = False) -> list[str]:
        a = [
            str(ipycam_python()),
            str(SCRIPT),
            "--host",
            self.host,
            "--port",
            str(self.port),
            "--rtsp-port",
            str(self.rtsp_port),
            "--serial",
            self.serial,
            "--clock-offset",
            str(self.clock_offset_s),
        ]
        if self.user:
            a += ["--user", self.user, "--password", self.password]
        return a + (["--discovery"] if discovery else [])

    def start(self) -> OnvifCamera:
        self.workdir.mkdir(parents=True, exist_ok=True)
        log = open(self.workdir / "onvif.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(self.args(), stdin=subprocess.PIPE, stdout=log, stderr=log, text=True)
        log.close()
        proc = self.proc
        wait_for(lambda: port_open(self.port) or proc.poll() is not None, timeout=30, what="ipycam ONVIF to listen")
        if proc.poll() is not None:
            raise RuntimeError(f"ipycam exited: {(self.workdir / 'onvif.log').read_text()[-2000:]}")
        return self

    def stop(self) -> None:
        if self.proc is None:
            return
        assert self.proc.stdin is not None
        self.proc.stdin.close()  # the script exits when its stdin closes
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None


NETNS_ADDR = "10.99.0.1"


def netns_script(camera: OnvifCamera, then: list[str]) -> list[str]:
    """A command running camera (with WS-Discovery) and then `then` inside a private network
    namespace whose loopback carries multicast: nothing leaves this machine's real interfaces.
    The camera gets NETNS_ADDR on that loopback, because WS-Discovery clients (PyPI wsdiscovery)
    skip loopback addresses when they choose where to send their probe."""
    camera.workdir.mkdir(parents=True, exist_ok=True)
    camera.host = NETNS_ADDR
    ready = camera.workdir / "ready"
    body = "\n".join(
        [
            "set -e",
            "ip link set lo up",
            f"ip addr add {NETNS_ADDR}/32 dev lo",
            "ip link set lo multicast on",
            "ip route add 224.0.0.0/4 dev lo",
            f"{shlex.join(camera.args(discovery=True))} --until-signal > {shlex.quote(str(ready))} 2>&1 &",
            "CAM=$!",
            "trap 'kill $CAM; wait $CAM' EXIT",
            f"for i in $(seq 1 300); do grep -q ready {shlex.quote(str(ready))} && break; sleep 0.1; done",
            shlex.join(then),
        ]
    )
    return ["unshare", "--net", "--kill-child", "sh", "-c", body]


def agent_cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "agent.cli.main", *args]

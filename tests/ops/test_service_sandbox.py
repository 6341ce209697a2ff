"""`coopagent run` as systemd would run it: under the unit's seccomp filter, MDWE and
UMask, with $NOTIFY_SOCKET, $WATCHDOG_USEC and $CREDENTIALS_DIRECTORY, against the real
Mosquitto and the reference receiver.

systemd itself cannot run here (no PID 1), so tests.ops.sandbox applies the unit's
system-call rules and the test plays the service manager's part of the notify protocol
on a real unix datagram socket: READY=1 after start, WATCHDOG=1 at half WatchdogSec,
STOPPING=1 and exit 0 on SIGTERM. ProtectSystem=strict is emulated in a private mount
namespace: everything is read-only except the data_dir (StateDirectory=) and a temp
folder (PrivateTmp=, here through $TMPDIR). Not covered: ProtectHome= (this test's
Python lives under /root), the device cgroup and the user switch.
"""

from __future__ import annotations

import os
import signal
import socket
import stat
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.sandbox import MODES, UNIT
from tests.peers.agent import Branch, sale
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import port_open, wait_for

ROOT = Path(__file__).resolve().parents[2]


class NotifyListener:
    """The service manager's end of sd_notify: collects every datagram's lines."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.setblocking(False)
        self.lines: list[str] = []

    def poll(self) -> list[str]:
        try:
            while True:
                self.lines.extend(self.sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        return self.lines

    def has(self, prefix: str) -> int:
        return sum(1 for line in self.poll() if line.startswith(prefix))

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def notify(tmp_path: Path) -> Iterator[NotifyListener]:
    n = NotifyListener(tmp_path / "notify.sock")
    try:
        yield n
    finally:
        n.close()


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "workers"), [(m, 0) for m in MODES] + [("strict", 2)])
def test_agent_runs_notifies_and_stops_under_the_unit_sandbox(
        tmp_path: Path, mosquitto: Mosquitto, notify: NotifyListener, mode: str, workers: int) -> None:
    """With workers = 2 the API worker processes (spawned python, prctl) run under the same rules."""
    branch = Branch(tmp_path / "branch", mosquitto)
    creds = tmp_path / "credentials"
    creds.mkdir(mode=0o700)
    (creds / "api.token").write_text(branch.token + "\n")  # as LoadCredential=api.token:... would
    config = branch.write_agent_config(api={"token_file": "api.token", "workers": workers})
    branch.start_receiver()
    private_tmp = tmp_path / "private-tmp"
    private_tmp.mkdir()
    env = dict(os.environ, NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="2000000",
               CREDENTIALS_DIRECTORY=str(creds), PYTHONUNBUFFERED="1", PYTHONDONTWRITEBYTECODE="1",
               TMPDIR=str(private_tmp))
    writable = ["--writable", str(branch.data_dir), "--writable", str(private_tmp)]
    log = tmp_path / "agent.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.ops.sandbox", str(UNIT), *MODES[mode], *writable, "--",
             sys.executable, "-m", "agent.cli.main", "run", "--config", str(config)],
            cwd=ROOT, env=env, stdout=out, stderr=out)
    try:
        wait_for(lambda: notify.has("READY=1") or proc.poll() is not None, timeout=30, what="READY=1")
        assert proc.poll() is None, f"agent exited {proc.returncode}: {log.read_text()[-3000:]}"
        assert port_open(branch.api_port), "READY=1 came before the API listened"
        assert any(line.startswith("STATUS=") for line in notify.poll())

        ids = branch.post([sale(i) for i in range(20)]).json()["ids"]
        wait_for(lambda: branch.rx_count() >= 20, timeout=30, what="records verified at the receiver")
        assert {r["id"] for r in branch.rx_records()} >= set(ids)

        wait_for(lambda: notify.has("WATCHDOG=1") >= 2, timeout=10, what="two watchdog pings")
        db = branch.data_dir / "buffer.sqlite3"
        assert stat.S_IMODE(db.stat().st_mode) == 0o600, "UMask=0077 must keep the buffer private"

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=45) == 0, log.read_text()[-3000:]  # TimeoutStopSec=45s
        assert notify.has("STOPPING=1") == 1
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        branch.close()
    text = log.read_text()
    assert "Bad system call" not in text and "Traceback" not in text, text[-3000:]
    if workers:
        assert f"({workers} worker processes)" in text

"""The centre installs on its own: `pip install ./centre` (coop-centre: core/, wire/, receiver/)
into a fresh venv that holds only coop-centre's declared requirements, then `coop-receiver
run` verifies and acks a batch through a real Mosquitto.

What is real: pip building and installing the distribution from a copy of just those three
packages and centre/ (nothing of agent/, buffer/ or drivers/ exists beside them), the console
script, the receiver, the broker. What is not: downloading the requirements; the new venv
sees them through a .pth file, as links to exactly the distributions that coop-centre's
requirements need (resolved from the test venv's metadata), so OpenCV, NumPy, pyserial,
biip, reportlab and the agent itself are absent, not merely unimported. pip fetches
setuptools for the isolated build, so this test needs the package index or a warm pip cache.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from receiver.config import load_receiver_config
from receiver.keys import load_central_key
from tests.core.test_layers import DEVICE_LIBS, centre_requirements, closure
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.receiver.helpers import AgentSide, DeviceSim, write_config

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def requirements_only_site(site: Path) -> None:
    """Links in `site` to the test venv's copies of coop-centre's requirements, and nothing else."""
    site.mkdir()
    for dist in closure(centre_requirements()).values():
        base = Path(str(dist.locate_file("")))
        for f in dist.files or []:
            top = f.parts[0]
            if top != ".." and not (site / top).exists():
                (site / top).symlink_to(base / top)


def test_centre_installs_alone_and_runs(tmp_path: Path, mosquitto: Mosquitto) -> None:
    src = tmp_path / "src"
    for part in ("core", "wire", "receiver", "centre"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    requirements_only_site(tmp_path / "deps")
    next(venv.glob("lib/python3*/site-packages")).joinpath("deps.pth").write_text(f"{tmp_path / 'deps'}\n")
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    pip = [sys.executable, "-m", "pip", "--python", py]
    out = run(*pip, "install", "--no-deps", "-q", str(src / "centre"))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(*pip, "check")  # coop-centre's declared requirements are all there
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(str(venv / "bin" / "coop-receiver"), "--help")
    assert out.returncode == 0 and "send-command" in out.stdout, out.stdout + out.stderr

    absent = sorted(DEVICE_LIBS | {"agent", "buffer", "drivers"})
    code = (
        "import importlib.util, sys\n"
        "import receiver.cli, receiver.server, receiver.mqtt, receiver.verifier, wire.records\n"
        f"print([m for m in {absent!r} if importlib.util.find_spec(m) is not None])\n"
    )
    out = run(py, "-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr

    dev = DeviceSim("soc-a/branch-1/agent-1")
    rx_config = write_config(tmp_path / "rx", mosquitto.url, [dev])
    proc = subprocess.Popen([str(venv / "bin" / "coop-receiver"), "run", "--config", str(rx_config)],
                            stderr=subprocess.PIPE, text=True, cwd=tmp_path, env=env)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)  # type: ignore[arg-type]
    reader.start()
    agent = AgentSide(mosquitto.port)
    try:
        wait_for(lambda: any("coop-receiver running" in ln for ln in lines), timeout=30,
                 what="the installed receiver to be subscribed")
        central = load_central_key(load_receiver_config(rx_config).receiver.key_file).public_key()
        agent.publish("batch", dev.dev, dev.next_batch(3))
        agent.wait_ack(central, dev.dev, 1, timeout=20)
    finally:
        agent.close()
        proc.send_signal(signal.SIGTERM)
        rc = proc.wait(timeout=30)
        reader.join(timeout=10)
        assert proc.stderr is not None
        proc.stderr.close()
        assert rc == 0, "".join(lines)

"""`coopagent support-bundle`: the archive's members, and no secret inside any of them.

Real secrets are seeded where a branch PC has them: the broker password file, the API token,
the device key, a camera password, and a log file holding an RTSP URL with credentials, a
bearer header and a pasted private key. Every member is read back and searched for each.
"""

from __future__ import annotations

import sqlite3
import tarfile
from pathlib import Path

from click.testing import CliRunner

from agent.cli.main import cli
from drivers.serial.sim.devices import ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.peers.agent import Branch
from tests.peers.net import free_port, wait_for

BROKER_PW = "Br0ker-pass-7731"
CAM_PW = "Cam-Secret-4402"


def _members(path: Path) -> dict[str, str]:
    with tarfile.open(path, "r:gz") as tar:
        out = {}
        for m in tar.getmembers():
            f = tar.extractfile(m)
            assert f is not None
            out[m.name.split("/", 1)[1]] = f.read().decode()
        return out


def test_bundle_holds_everything_and_no_secret(tmp_path: Path, branch: Branch) -> None:
    (branch.root / "broker.password").write_text(BROKER_PW + "\n")
    (branch.root / "cam.password").write_text(CAM_PW + "\n")
    link = PtyLink(tmp_path / "tty-scan", tmp_path / "dev-scan").start()
    try:
        _run(tmp_path, branch, link)
    finally:
        link.stop()


def _scans(branch: Branch) -> int:
    conn = sqlite3.connect(f"file:{branch.data_dir / 'buffer.sqlite3'}?mode=ro", uri=True)
    try:
        return int(conn.execute("SELECT count(*) FROM records WHERE kind = 'scan'").fetchone()[0])
    finally:
        conn.close()


def _run(tmp_path: Path, branch: Branch, link: PtyLink) -> None:
    branch.overrides = {
        "uplink": {"username": "agent-1", "password_file": str(branch.root / "broker.password")},
        "scanners": [{"name": "dock", "port": str(link.agent_side)}],
        "cameras": [{"name": "front", "url": f"rtsp://127.0.0.1:{free_port()}/main", "username": "admin",
                     "password_file": str(branch.root / "cam.password"), "record": False, "stale_after_s": 1}],
    }
    branch.start_agent()
    sim = ScannerSim(link.device_side).start()
    try:
        def scanned() -> bool:
            sim.scan("]E05901234123457")  # again each time: the agent may open its port after the first
            return _scans(branch) > 0

        wait_for(scanned, timeout=20, what="a scan in the buffer")
    finally:
        sim.stop()
    key_pem = (branch.data_dir / "device_key.pem").read_text()
    key_body = key_pem.splitlines()[1]
    log = tmp_path / "agent.log"
    log.write_text(
        f"ERROR camera front: ffmpeg: rtsp://admin:{CAM_PW}@10.0.0.5:554/main: 401 Unauthorized\n"
        f"DEBUG POST /v1/records Authorization: Bearer {branch.token}\n"
        f"ERROR broker said no to password {BROKER_PW}\n"
        f"someone pasted the key:\n{key_pem}\n")
    out = tmp_path / "bundle.tar.gz"
    r = CliRunner().invoke(cli, ["support-bundle", "--config", str(branch.write_agent_config()), "--out", str(out),
                                 "--log-file", str(log)], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    members = _members(out)
    assert set(members) >= {"doctor.json", "status.json", "config.json", "logs.txt", "versions.json",
                            "serial-devices.json", "serial-frames.txt", "camera-devices.json"}
    secrets = [BROKER_PW, CAM_PW, branch.token, key_body, f"admin:{CAM_PW}@"]
    for name, text in members.items():
        for s in secrets:
            assert s not in text, f"{s!r} is in {name}"
    assert "**REDACTED**" in members["logs.txt"] and "rtsp://**REDACTED**@10.0.0.5" in members["logs.txt"]
    assert '"running": true' in members["status.json"]
    # the scanned frame, in hex ("]E05901234123457" starts 5d 45 30 35)
    assert "scanner:dock 5d 45 30 35 39 30" in members["serial-frames.txt"]
    assert "broker.password" in members["config.json"]  # the file's name, not its content
    assert out.stat().st_mode & 0o077 == 0

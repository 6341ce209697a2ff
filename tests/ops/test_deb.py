"""The Debian package (`make deb`), installed offline into a Debian 12 booted by systemd-nspawn
with systemd as PID 1 (tests/peers/container.py), and the service run there for real.

What is real: the package as `make deb` builds it, dpkg/apt and the maintainer scripts,
systemd 252 as PID 1 with the unit's sandboxing, journald, the sd_notify READY and watchdog
protocol, SIGKILL through systemctl, the agent's API on loopback, Mosquitto and the reference
receiver on the host (the container shares the host's network namespace; the install itself
runs with no network at all). Nothing is mocked.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.ops.debpkg import ROOT_DIR, InstalledAgent, wait_until
from tests.peers.agent import Branch
from tests.peers.container import Container
from tests.peers.mosquitto import Mosquitto

pytestmark = [
    pytest.mark.slow,
    pytest.mark.timeout(900),  # the package is built once for the module, in the first test
    pytest.mark.skipif(os.geteuid() != 0, reason="booting a container and dpkg need root"),
    pytest.mark.skipif(not (shutil.which("systemd-nspawn") and shutil.which("debootstrap")),
                       reason="needs systemd-container and debootstrap (scripts/install-system-deps.sh)"),
]


@pytest.fixture
def deb(head_deb: Path) -> Path:
    return head_deb


@pytest.fixture
def container(tmp_path: Path, deb: Path) -> Iterator[Container]:
    with Container(tmp_path / "ct", {deb.parent: f"/debs/{deb.parent.name}"}) as ct:
        yield ct


def doctor(ct: Container) -> dict[str, dict[str, str]]:
    """`coopagent doctor --json` inside the container, by check id."""
    r = ct.run("coopagent", "doctor", "--json", "--config", "/etc/coopagent/agent.toml", check=False)
    assert r.returncode in (0, 1, 2), r.stderr[-2000:]
    return {c["id"]: c for c in json.loads(r.stdout)["checks"]}


def test_the_package_declares_what_it_needs_and_names_no_build_path(deb: Path, tmp_path: Path) -> None:
    fields = subprocess.run(["dpkg-deb", "-f", str(deb), "Package", "Version", "Depends"], capture_output=True,
                            text=True, check=True).stdout
    assert "Package: coopagent" in fields
    depends = re.search(r"^Depends: (.*)$", fields, re.M)
    assert depends is not None
    for need in ("python3.11", "ffmpeg", "libcairo2", "systemd"):
        assert need in depends.group(1)
    ctrl = tmp_path / "ctrl"
    subprocess.run(["dpkg-deb", "-e", str(deb), str(ctrl)], check=True)
    assert (ctrl / "conffiles").read_text().split() == ["/etc/coopagent/agent.toml"]
    root = tmp_path / "root"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True, timeout=300)
    assert (root / "opt/coopagent/venv/bin/coopagent").read_text().splitlines()[0] == "#!/opt/coopagent/venv/bin/python"
    assert (root / "lib/systemd/system/coopagent.service").read_bytes() == \
        (ROOT_DIR / "systemd/coopagent.service").read_bytes()
    leftovers = subprocess.run(["grep", "-rlI", "/tmp/coopdeb.", str(root)], capture_output=True, text=True).stdout
    assert leftovers == "", leftovers
    assert not list(root.glob("opt/coopagent/venv/lib/python3.11/site-packages/pip")), "no pip at the branch"
    assert list(root.glob("opt/coopagent/venv/lib/python3.11/site-packages/agent/__pycache__/*.pyc"))


def test_the_service_under_systemd_as_pid1(container: Container, deb: Path, tmp_path: Path,
                                           mosquitto: Mosquitto) -> None:
    ct = container
    centre = Branch(tmp_path / "centre", mosquitto)
    agent = InstalledAgent(ct, centre)

    # -- installed offline: user, modes, key --------------------------------------------
    first = agent.install(deb)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    assert "BEGIN PUBLIC KEY" in first.stdout and "PRIVATE" not in first.stdout + first.stderr
    assert ct.run("stat", "-c", "%a %U:%G", "/var/lib/coopagent/device_key.pem").stdout.split() == \
        ["600", "coopagent:coopagent"]
    assert ct.run("stat", "-c", "%a %U:%G", "/etc/coopagent/api.token").stdout.split() == ["600", "coopagent:coopagent"]
    assert ct.run("stat", "-c", "%a %U:%G", "/etc/coopagent").stdout.split() == ["750", "root:coopagent"]
    assert ct.run("systemctl", "is-enabled", "coopagent").stdout.strip() == "enabled"
    assert ct.unit()["ActiveState"] == "inactive", "a first install waits for the technician's config"
    agent.configure()
    centre.start_receiver()
    # A short watchdog, so that the test sees several pings and a missed one would kill it.
    ct.write("/etc/systemd/system/coopagent.service.d/test.conf", "[Service]\nWatchdogSec=4s\nRestartSec=1s\n")
    ct.run("systemctl", "daemon-reload")

    # -- READY: Type=notify, so start returns once the agent said READY=1 -----------------
    t0 = time.monotonic()
    ct.run("systemctl", "start", "coopagent", timeout=150)
    unit = ct.unit()
    assert (unit["ActiveState"], unit["SubState"]) == ("active", "running"), unit
    assert agent.api_up(), "READY=1 came before the API listened"
    assert unit["StatusText"], "the agent sends STATUS= with READY=1"
    started = time.monotonic() - t0

    # -- the watchdog: pings keep coming, and the service outlives WatchdogSec ------------
    first_ping = int(unit["WatchdogTimestampMonotonic"])
    wait_until(lambda: int(ct.unit()["WatchdogTimestampMonotonic"]) > first_ping, 10, "a second watchdog ping")
    time.sleep(5)  # longer than WatchdogSec=4s: without pings systemd would have killed it
    unit = ct.unit()
    assert unit["ActiveState"] == "active" and unit["NRestarts"] == "0", unit

    # -- coopagent doctor sees the service as systemd runs it ------------------------------
    doc = doctor(ct)
    assert doc["service.state"]["result"] == "ok", doc["service.state"]
    assert doc["service.watchdog"]["result"] == "ok" and "4s" in doc["service.watchdog"]["message"]
    assert doc["key.mode"]["result"] == "ok" and doc["broker.auth"]["result"] == "ok"

    # -- the journal ----------------------------------------------------------------------
    assert re.search(r"agent coop-a/branch-1/agent-1 started \(version [0-9.]+\)", ct.journal())

    # -- the sandbox, as systemd applied it -------------------------------------------------
    security = ct.run("systemd-analyze", "security", "coopagent.service", "--no-pager").stdout
    exposure = re.search(r"Overall exposure level for coopagent.service: ([0-9.]+)", security)
    assert exposure is not None and float(exposure.group(1)) <= 2.0, security[-600:]
    main_pid = unit["MainPID"]
    status = ct.run("cat", f"/proc/{main_pid}/status").stdout
    assert re.search(r"^NoNewPrivs:\s+1$", status, re.M) and re.search(r"^Seccomp:\s+2$", status, re.M)
    assert re.search(r"^CapEff:\s+0+$", status, re.M)
    uid = ct.run("id", "-u", "coopagent").stdout.strip()
    assert re.search(rf"^Uid:\s+{uid}\s+{uid}\s+{uid}\s+{uid}$", status, re.M), "runs as the service user"

    # -- records, then SIGKILL through systemd: restarted, nothing lost ---------------------
    ids = agent.post_sales(0, 20)
    ct.run("systemctl", "kill", "-s", "KILL", "coopagent")
    wait_until(lambda: ct.unit()["NRestarts"] == "1" and ct.unit()["ActiveState"] == "active", 30,
               "systemd to restart the killed agent")
    assert ct.unit()["MainPID"] != main_pid
    restarted = doctor(ct)["service.watchdog"]
    assert restarted["result"] == "warning" and "restarted the agent 1 times" in restarted["message"], restarted
    wait_until(agent.api_up, 30, "the restarted agent's API")
    ids += agent.post_sales(20, 20)
    wait_until(lambda: len(agent.sale_ids_at_centre()) >= 40, 60, "the 40 sales at the centre")
    at_centre = agent.sale_ids_at_centre()
    assert sorted(at_centre) == sorted(ids), "every sale answered 201 is at the centre exactly once"
    assert centre.rx_state()["chain_breaks"] == 0

    # -- a clean stop -------------------------------------------------------------------------
    ct.run("systemctl", "stop", "coopagent", timeout=60)
    unit = ct.unit()
    assert unit["ActiveState"] == "inactive" and unit["Result"] == "success", unit
    assert unit["ExecMainStatus"] == "0", unit
    assert "agent stopped" in ct.journal()
    stopped = doctor(ct)["service.state"]
    assert stopped["result"] == "warning" and "inactive" in stopped["message"] and stopped["fix"], stopped

    # -- removal keeps data and key; purge removes them after saying so -----------------------
    removed = ct.run("apt-get", "remove", "-y", "-q", "coopagent", offline=True)
    assert "kept /etc/coopagent" in removed.stdout
    assert not ct.path("/opt/coopagent/venv").exists()
    assert ct.path("/var/lib/coopagent/device_key.pem").exists() and ct.path("/etc/coopagent/agent.toml").exists()
    purged = ct.run("apt-get", "purge", "-y", "-q", "coopagent", offline=True)
    assert "purging: deleting /var/lib/coopagent" in purged.stdout, purged.stdout
    assert not ct.path("/var/lib/coopagent").exists() and not ct.path("/etc/coopagent").exists()
    print(f"started in {started:.1f} s")

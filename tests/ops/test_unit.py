"""systemd/coopagent.service: `systemd-analyze verify` passes and the security exposure
score does not get worse than the one documented in docs/operations.md.

There is no systemd PID 1 here; both commands work offline on a unit file. verify checks
that ExecStart's binary exists on this machine, so the test verifies a copy whose
ExecStart points at this venv's `coopagent` (everything else is byte for byte the same).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
UNIT = ROOT / "systemd" / "coopagent.service"
INSTALLED_EXEC = "/opt/coopagent/venv/bin/coopagent"
# The score reached (docs/operations.md); lower is better. Raise it only with a reason there.
EXPOSURE_LIMIT = 1.9

pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                reason="systemd-analyze not installed (scripts/install-system-deps.sh)")


def local_copy(tmp_path: Path, text: str | None = None) -> Path:
    """The unit with ExecStart on this machine's coopagent; the file keeps its unit name."""
    exe = Path(sys.executable).parent / "coopagent"
    assert exe.exists(), f"{exe} missing: install the project into the venv"
    body = (text if text is not None else UNIT.read_text()).replace(INSTALLED_EXEC, str(exe))
    out = tmp_path / "coopagent.service"
    out.write_text(body)
    return out


def verify(unit: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)],
                          capture_output=True, text=True, timeout=60)


def test_unit_execs_the_installed_venv() -> None:
    assert re.search(rf"^ExecStart={re.escape(INSTALLED_EXEC)} run --config /etc/coopagent/agent.toml$",
                     UNIT.read_text(), flags=re.MULTILINE)


def test_systemd_analyze_verify_passes(tmp_path: Path) -> None:
    r = verify(local_copy(tmp_path))
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr


@pytest.mark.parametrize(("good", "bad"), [
    ("Type=notify", "Type=notfy"), ("ProtectSystem=strict", "ProtectSystem=strcit"),
    ("User=coopagent", "Usr=coopagent"),
])
def test_verify_catches_a_broken_unit(tmp_path: Path, good: str, bad: str) -> None:
    """systemd-analyze verify exits 0 on a directive it cannot parse (it only warns that it
    ignores it), so the check above insists on empty stderr; this proves that catches typos."""
    r = verify(local_copy(tmp_path, UNIT.read_text().replace(good, bad)))
    assert bad.partition("=")[2] in r.stderr or bad.partition("=")[0] in r.stderr, r.stderr


def exposure(unit: Path) -> float:
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager", str(unit)],
                       capture_output=True, text=True, timeout=60)
    m = re.search(r"Overall exposure level for coopagent\.service: (\d+\.\d)", r.stdout)
    assert m, r.stdout[-2000:] + r.stderr
    return float(m.group(1))


def test_security_exposure_is_not_worse_than_documented(tmp_path: Path) -> None:
    unit = local_copy(tmp_path)
    score = exposure(unit)
    assert score <= EXPOSURE_LIMIT, f"exposure rose to {score} (limit {EXPOSURE_LIMIT})"
    # systemd's own gate agrees (its threshold is the score times ten).
    r = subprocess.run(["systemd-analyze", "security", "--offline=yes", "--no-pager",
                        f"--threshold={round(EXPOSURE_LIMIT * 10)}", str(unit)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    documented = (ROOT / "docs" / "operations.md").read_text()
    assert f"exposure level {EXPOSURE_LIMIT}" in documented, "update the score in docs/operations.md"


def test_dropping_a_hardening_line_raises_the_score(tmp_path: Path) -> None:
    weaker = UNIT.read_text().replace("ProtectSystem=strict\n", "")
    assert exposure(local_copy(tmp_path, weaker)) > EXPOSURE_LIMIT


@pytest.mark.parametrize("line", [
    "Type=notify", "NotifyAccess=main", "WatchdogSec=30s", "Restart=on-failure", "User=coopagent",
    "StateDirectory=coopagent", "ConfigurationDirectory=coopagent", "KillMode=mixed", "UMask=0077",
    "SupplementaryGroups=dialout video", "CapabilityBoundingSet=", "NoNewPrivileges=yes",
    "DevicePolicy=closed", "DeviceAllow=char-ttyUSB rw", "DeviceAllow=char-ttyACM rw",
    "SystemCallArchitectures=native", "RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6 AF_NETLINK",
    "LoadCredential=api.token:/etc/coopagent/api.token",
    "LimitNOFILE=8192",  # the API's connection cap is sized below it (issue 13)
])
def test_required_directive(line: str) -> None:
    """Directives the agent's code relies on (sd_notify, the key's owner, devices)."""
    assert re.search(rf"^{re.escape(line)}$", UNIT.read_text(), flags=re.MULTILINE)


def test_no_dynamic_user() -> None:
    """DynamicUser would hand the state directory to a different uid on each install,
    and the device key must keep one owner."""
    assert "DynamicUser" not in re.sub(r"#.*", "", UNIT.read_text())

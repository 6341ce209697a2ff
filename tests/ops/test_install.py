"""systemd/install.sh into a temporary root: user, venv, config, token, key, unit; twice.

What is real: the script itself, useradd/usermod --root on a seeded DIR/etc, a new venv
with pip building and installing this source tree (pip fetches setuptools and wheel for
the isolated build, so this test needs PyPI or a warm pip cache), `coopagent keys init`,
file modes and owners, `systemd-analyze verify` of the installed unit.
What is not: systemctl (no systemd PID 1 here; --root implies --no-systemctl), apt
(--no-deps), and the runtime dependencies: the new venv sees the test venv's
site-packages through a .pth file instead of downloading ~150 MB of wheels (OpenCV,
NumPy, ...) per test run. In a --root install the key is made by root and chowned,
because the service uid cannot enter pytest's private temp folders; a real install
runs `keys init` as the service user (setpriv).
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

ROOT_DIR = Path(__file__).resolve().parents[2]
SCRIPT = ROOT_DIR / "systemd" / "install.sh"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(os.geteuid() != 0, reason="install.sh runs as root"),
    pytest.mark.skipif(shutil.which("useradd") is None, reason="needs useradd (passwd package)"),
]


def seed_root(root: Path) -> None:
    """The user database a fresh Debian has, minimally: root plus the dialout and video groups."""
    etc = root / "etc"
    etc.mkdir(parents=True)
    (etc / "passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (etc / "group").write_text("root:x:0:\ndialout:x:20:\nvideo:x:44:\n")
    (etc / "shadow").write_text("root:*:19000:0:99999:7:::\n")
    (etc / "gshadow").write_text("root:*::\ndialout:*::\nvideo:*::\n")
    for f in ("shadow", "gshadow"):
        (etc / f).chmod(0o640)


def prepare_venv(root: Path) -> None:
    """Test double for PyPI's runtime dependencies (see the module docstring)."""
    venv = root / "opt" / "coopagent" / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = next(venv.glob("lib/python3*/site-packages"))
    (site / "test-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")


def run_install(root: Path, template: Path, src: Path = ROOT_DIR) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(SCRIPT), "--root", str(root), "--no-deps", "--config-template",
                           str(template), "--src", str(src)], capture_output=True, text=True, timeout=600)


def ids(root: Path) -> tuple[int, int]:
    for line in (root / "etc" / "passwd").read_text().splitlines():
        name, _, uid, gid, *_ = line.split(":")
        if name == "coopagent":
            return int(uid), int(gid)
    raise AssertionError("no coopagent user")


def test_install_into_a_root_then_again(tmp_path: Path) -> None:
    root = tmp_path / "root"
    seed_root(root)
    prepare_venv(root)
    template = tmp_path / "agent.example.toml"
    template.write_text(f'[agent]\ndevice = "test-society/branch-7/agent-1"\n'
                        f'data_dir = "{root}/var/lib/coopagent"\n')

    first = run_install(root, template)
    assert first.returncode == 0, first.stdout + first.stderr
    uid, gid = ids(root)

    # The user, with the device groups.
    groups = (root / "etc" / "group").read_text()
    assert re.search(r"^dialout:x:20:coopagent$", groups, re.M)
    assert re.search(r"^video:x:44:coopagent$", groups, re.M)

    # The venv runs the installed project (not the source tree).
    coopagent = root / "opt/coopagent/venv/bin/coopagent"
    python = str(root / "opt/coopagent/venv/bin/python")
    where = subprocess.run([python, "-c", "import agent; print(agent.__file__)"], capture_output=True,
                           text=True, check=True, timeout=60, cwd=tmp_path).stdout
    assert where.startswith(str(root / "opt/coopagent/venv/lib/"))

    # Config from the template, readable by the service group only.
    config = root / "etc/coopagent/agent.toml"
    assert config.read_text() == template.read_text()
    st = config.stat()
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_gid == gid

    # API token: random, 0600, the service user's.
    token = root / "etc/coopagent/api.token"
    st = token.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == uid
    assert re.fullmatch(r"[A-Za-z0-9_-]{43}\n", token.read_text())

    # Device key: 0600, the service user's, and the PEM printed is its public key.
    key = root / "var/lib/coopagent/device_key.pem"
    st = key.stat()
    assert stat.S_IMODE(st.st_mode) == 0o600 and st.st_uid == uid
    pem = subprocess.run([str(coopagent), "keys", "show", "--pem", "--config", str(config)],
                         capture_output=True, text=True, check=True, timeout=60).stdout
    assert pem.startswith("-----BEGIN PUBLIC KEY-----") and pem in first.stdout
    assert "PRIVATE" not in first.stdout + first.stderr

    # Directory modes the unit expects.
    assert stat.S_IMODE((root / "etc/coopagent").stat().st_mode) == 0o750
    assert stat.S_IMODE((root / "etc/coopagent/credentials").stat().st_mode) == 0o700
    assert stat.S_IMODE((root / "var/lib/coopagent").stat().st_mode) == 0o700

    # The unit is the repository's, and verifies where it was installed.
    unit = root / "etc/systemd/system/coopagent.service"
    assert unit.read_text() == (ROOT_DIR / "systemd/coopagent.service").read_text()
    assert "usbserial" in (root / "etc/modules-load.d/coopagent.conf").read_text()
    svc = root / "usr/local/sbin/coopagent-svc"
    assert svc.read_bytes() == (ROOT_DIR / "systemd/coopagent-svc").read_bytes()
    assert stat.S_IMODE(svc.stat().st_mode) == 0o755
    local = tmp_path / "verify" / "coopagent.service"
    local.parent.mkdir()
    local.write_text(unit.read_text().replace("/opt/coopagent/venv/bin/coopagent", str(coopagent)))
    v = subprocess.run(["systemd-analyze", "verify", "--man=no", str(local)], capture_output=True, text=True,
                       timeout=60)
    assert v.returncode == 0 and v.stderr.strip() == "", v.stderr

    # Second run: an upgrade. The technician's config edits, the token and the key survive.
    config.write_text(config.read_text() + '\n[api]\nlisten = "127.0.0.1:8471"\n')
    before = {p: p.read_bytes() for p in (config, token, key)}
    second = run_install(root, template)
    assert second.returncode == 0, second.stdout + second.stderr
    assert {p: p.read_bytes() for p in before} == before
    assert "keeping the existing device key" in second.stdout and "keeping existing" in second.stdout
    assert len(re.findall(r"^coopagent:", (root / "etc/passwd").read_text(), re.M)) == 1
    assert ids(root) == (uid, gid)


def test_refuses_without_a_config_template(tmp_path: Path) -> None:
    r = run_install(tmp_path / "root", tmp_path / "missing.toml")
    assert r.returncode != 0 and "config template" in r.stderr and "not found" in r.stderr
    assert not (tmp_path / "root").exists()


def test_unknown_option_is_an_error(tmp_path: Path) -> None:
    r = subprocess.run(["bash", str(SCRIPT), "--rot", str(tmp_path)], capture_output=True, text=True,
                       timeout=30)
    assert r.returncode != 0 and "unknown option --rot" in r.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    scripts = [*sorted((ROOT_DIR / "systemd").glob("*.sh")), ROOT_DIR / "systemd" / "coopagent-svc"]
    r = subprocess.run(["shellcheck", *map(str, scripts)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stdout


def seed_backlog(root: Path, tmp_path: Path) -> None:
    """Run the agent once, in-process and without a broker: its started/stopped events stay
    in the buffer, unacknowledged, as on a PC that lost its uplink."""
    from agent.config.loader import parse_config
    from agent.daemon import Agent
    from tests.peers.net import free_port
    from wire.keys import generate_key_file, public_pem

    central = generate_key_file(tmp_path / "central.key")
    (tmp_path / "central.pub.pem").write_text(public_pem(central.public_key()))
    cfg = parse_config({"agent": {"device": "test-society/branch-7/agent-1",
                                  "data_dir": str(root / "var/lib/coopagent")},
                        "uplink": {"broker": f"mqtt://127.0.0.1:{free_port()}",
                                   "central_key": str(tmp_path / "central.pub.pem")}})
    Agent(cfg, with_api=False).start().stop()


def uninstall(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(ROOT_DIR / "systemd" / "uninstall.sh"), "--root", str(root), *args],
                          capture_output=True, text=True, timeout=120)


def test_uninstall_keeps_data_and_purge_guards_the_backlog(tmp_path: Path) -> None:
    """Installed from a plain copy of the source (no .git, as from a USB stick), which also
    covers install.sh's copy path for trees that are not git checkouts."""
    root = tmp_path / "root"
    seed_root(root)
    prepare_venv(root)
    src = tmp_path / "src"
    src.mkdir()
    archive = subprocess.run(["git", "-C", str(ROOT_DIR), "archive", "HEAD"], capture_output=True, check=True,
                             timeout=60).stdout
    subprocess.run(["tar", "-C", str(src), "-xf", "-"], input=archive, check=True, timeout=60)
    template = tmp_path / "agent.example.toml"
    template.write_text(f'[agent]\ndevice = "test-society/branch-7/agent-1"\n'
                        f'data_dir = "{root}/var/lib/coopagent"\n')
    installed = run_install(root, template, src)
    assert installed.returncode == 0, installed.stdout + installed.stderr
    seed_backlog(root, tmp_path)
    key = root / "var/lib/coopagent/device_key.pem"

    refused = uninstall(root, "--purge")
    assert refused.returncode != 0 and "not acknowledged" in refused.stderr, refused.stdout + refused.stderr
    assert key.exists() and (root / "opt/coopagent/venv/bin/coopagent").exists(), "a refusal removes nothing"

    plain = uninstall(root)
    assert plain.returncode == 0, plain.stderr
    assert not (root / "opt/coopagent").exists()
    assert not (root / "etc/systemd/system/coopagent.service").exists()
    assert not (root / "etc/modules-load.d/coopagent.conf").exists()
    assert not (root / "usr/local/sbin/coopagent-svc").exists()
    assert key.exists() and (root / "etc/coopagent/agent.toml").exists()

    blind = uninstall(root, "--purge")  # the program is gone: the backlog cannot be checked
    assert blind.returncode != 0 and "cannot check the buffer" in blind.stderr
    assert key.exists()

    purged = uninstall(root, "--purge", "--force")
    assert purged.returncode == 0, purged.stderr
    assert not (root / "var/lib/coopagent").exists() and not (root / "etc/coopagent").exists()
    assert not re.search(r"^coopagent:", (root / "etc/passwd").read_text(), re.M)

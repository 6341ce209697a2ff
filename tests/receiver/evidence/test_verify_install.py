"""coop-verify installs on its own: `pip install ./verify` into a fresh venv that holds only its
declared requirements (wire's), then its console script checks a real bundle and refuses a
tampered one, with nothing of the centre or the agent present.

As in tests/receiver/test_centre_install.py: pip really builds and installs the distribution
from a copy of just core/, wire/, coopverify/ and verify/; the requirements are not downloaded
but linked from the test venv (exactly the distributions they need, through a .pth file); pip
fetches setuptools for the isolated build, so this needs the package index or a warm cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.core.test_layers import DEVICE_LIBS, closure, verify_requirements
from tests.receiver.evidence.conftest import Env
from wire.keys import public_pem

ROOT = Path(__file__).resolve().parents[3]
pytestmark = pytest.mark.slow


def test_verify_installs_alone_and_checks_a_bundle(sqlite_env: Env, tmp_path: Path) -> None:
    src = tmp_path / "src"
    for part in ("core", "wire", "coopverify", "verify"):
        shutil.copytree(ROOT / part, src / part, ignore=shutil.ignore_patterns("__pycache__", "build", "*.egg-info"))
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=60)
    site = tmp_path / "deps"
    site.mkdir()
    for dist in closure(verify_requirements()).values():
        base = Path(str(dist.locate_file("")))
        for f in dist.files or []:
            top = f.parts[0]
            if top != ".." and not (site / top).exists():
                (site / top).symlink_to(base / top)
    next(venv.glob("lib/python3*/site-packages")).joinpath("deps.pth").write_text(f"{site}\n")
    py = str(venv / "bin" / "python")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME")}

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)

    pip = [sys.executable, "-m", "pip", "--python", py]
    out = run(*pip, "install", "--no-deps", "-q", str(src / "verify"))
    assert out.returncode == 0, out.stdout + out.stderr
    out = run(*pip, "check")
    assert out.returncode == 0, out.stdout + out.stderr

    absent = sorted(DEVICE_LIBS | {"agent", "buffer", "drivers", "receiver", "click", "paho", "psycopg", "core.cli",
                                   "core.config"})
    code = (
        "import importlib.util\n"
        "import coopverify.cli, coopverify.verify, wire.bundle, wire.records, wire.messages\n"
        f"print([m for m in {absent!r} if importlib.util.find_spec(m) is not None])\n"
    )
    out = run(py, "-c", code)
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr

    bundle = tmp_path / "evidence.zip"
    sqlite_env.export(bundle)
    pem = tmp_path / "centre.pem"
    pem.write_text(public_pem(sqlite_env.signer.key.public_key()))
    script = str(venv / "bin" / "coop-verify")
    out = run(script, str(bundle), "--centre-key", str(pem))
    assert out.returncode == 0, out.stdout + out.stderr
    assert "sale VOID receipt R-4711" in out.stdout and out.stdout.rstrip().splitlines()[-1].startswith("VERIFIED")

    cut = tmp_path / "cut.zip"
    cut.write_bytes(bundle.read_bytes()[:-10])
    out = run(script, str(cut), "--centre-key", str(pem))
    assert out.returncode == 1 and "NOT VERIFIED" in out.stdout and "cut short" in out.stdout

"""A bundle checks with code that is not ours (the format must be implementable with off-the-shelf
COSE/CBOR libraries): pycose verifies the manifest and every batch, cbor2 5 and zipfile do the rest,
in .venv-interop (tests/receiver/evidence/interop_bundle.py)."""

from __future__ import annotations

import json
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import pytest

from tests.receiver.evidence.conftest import Env
from tests.receiver.test_interop import INTEROP_PY

SCRIPT = Path(__file__).with_name("interop_bundle.py")


def pycose_check(path: Path) -> dict[str, Any]:
    if not INTEROP_PY.exists():
        pytest.skip(f"{INTEROP_PY} missing: run `make interop-venv` (pycose needs cbor2<6, so it has its own venv)")
    out = subprocess.run([str(INTEROP_PY), str(SCRIPT), str(path)], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    return dict(json.loads(out.stdout))


def test_pycose_verifies_the_manifest_the_batches_and_the_links(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "full.zip"
    env.export(out, [(env.dev, env.site.void_id), (env.dev, env.site.media["cmd-1"])], full_chain=True)
    r = pycose_check(out)
    assert r["manifest"] is True and r["exporter_kid"] == env.signer.kid.hex()
    assert r["parts_ok"] is True and r["errors"] == []
    assert r["batches"] == {f"devices/{env.dev}/batches/{s}.cose": True for s in range(2, 7)}
    assert r["links"] == [[env.dev, s, True] for s in range(3, 7)]
    assert r["clips"] == {f"devices/{env.dev}/media/void-clip.mp4": True, f"devices/{env.dev}/media/cmd-1.jpg": True}


def test_pycose_sees_a_changed_batch(sqlite_env: Env, tmp_path: Path) -> None:
    """The independent check is not a rubber stamp: one byte in a batch's payload and pycose refuses it."""
    good = tmp_path / "good.zip"
    sqlite_env.export(good)
    name = f"devices/{sqlite_env.dev}/batches/2.cose"
    with zipfile.ZipFile(good) as z:
        members = {n: z.read(n) for n in z.namelist()}
    b = bytearray(members[name])
    b[len(b) // 2] ^= 1
    bad = tmp_path / "bad.zip"
    with zipfile.ZipFile(bad, "w") as z:
        for n, data in (members | {name: bytes(b)}).items():
            z.writestr(n, data)
    r = pycose_check(bad)
    assert r["manifest"] is True and r["parts_ok"] is False and r["batches"][name] is False

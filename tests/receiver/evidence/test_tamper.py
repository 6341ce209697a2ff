"""coop-verify refuses a bundle changed in any way that matters, and says what failed.

Two kinds of tampering: someone who changes the file after export (a byte of a part, a part
removed, a clip swapped, the file cut short), and an exporter who lies and re-signs the
manifest to match (a batch dropped from the chain, a clip swapped, a device key that is not the
device's): the second is caught by the devices' own signatures, which no exporter can forge.
"""

from __future__ import annotations

import hashlib
import zipfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cbor2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from coopverify.cli import main as verify_main
from tests.receiver.evidence.conftest import Env
from wire.bundle import MANIFEST
from wire.cose import Signer, kid_for
from wire.keys import public_pem

Members = dict[str, bytes]


@pytest.fixture(scope="module")
def bundle(sqlite_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The void with its clip, plus the snapshot asked for by a command: 3 batches whole (2, 6 and ...)."""
    out = tmp_path_factory.mktemp("bundle") / "evidence.zip"
    site = sqlite_env.site
    sqlite_env.export(out, [(sqlite_env.dev, site.void_id), (sqlite_env.dev, site.media["cmd-1"])])
    return out


@pytest.fixture(scope="module")
def centre_pem(sqlite_env: Env, tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("pem") / "centre.pem"
    p.write_text(public_pem(sqlite_env.signer.key.public_key()))
    return p


def read(path: Path) -> Members:
    with zipfile.ZipFile(path) as z:
        return {n: z.read(n) for n in z.namelist()}


def write(members: Members, path: Path) -> Path:
    with zipfile.ZipFile(path, "w") as z:
        for name, data in members.items():
            z.writestr(name, data, zipfile.ZIP_STORED)
    return path


def resign(members: Members, signer: Signer, edit: Callable[[dict[str, Any]], None] = lambda m: None) -> Members:
    """What a lying exporter does: edit the manifest, list the parts as they now are, sign again."""
    m = dict(cbor2.loads(cbor2.loads(members[MANIFEST]).value[2]))
    edit(m)
    m["parts"] = [{"path": n, "size": len(d), "sha256": hashlib.sha256(d).digest()}
                  for n, d in sorted(members.items()) if n != MANIFEST]
    return members | {MANIFEST: signer.sign_map(m)}


def verdict(path: Path, pem: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    rc = verify_main([str(path), "--centre-key", str(pem)])
    return rc, capsys.readouterr().out


def test_the_untouched_bundle_verifies(bundle: Path, centre_pem: Path, capsys: pytest.CaptureFixture[str]) -> None:
    rc, out = verdict(bundle, centre_pem, capsys)
    assert rc == 0, out
    print(out)  # the verdict as a person reads it (pytest -s shows it)


def test_a_byte_flipped_in_a_batch_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    name = f"devices/{sqlite_env.dev}/batches/2.cose"
    b = bytearray(m[name])
    b[len(b) // 2] ^= 0x01
    rc, out = verdict(write(m | {name: bytes(b)}, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: {name} was changed" in out
    assert f"FAILED: batch seq 2 of {sqlite_env.dev}: the device's signature does not verify (the batch was changed)" \
        in out
    assert "VERIFIED" not in out.replace("NOT VERIFIED", "")


def test_every_byte_of_every_part_is_covered(
    bundle: Path, centre_pem: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A byte flipped in the raw file inside each member's data (first, middle, last): refused every time."""
    raw = bundle.read_bytes()
    with zipfile.ZipFile(bundle) as z:
        infos = z.infolist()
    for info in infos:
        # the member's data starts after its local header (30 bytes + name + extra)
        n, e = int.from_bytes(raw[info.header_offset + 26:info.header_offset + 28], "little"), \
            int.from_bytes(raw[info.header_offset + 28:info.header_offset + 30], "little")
        start = info.header_offset + 30 + n + e
        for at in (start, start + info.compress_size // 2, start + info.compress_size - 1):
            t = bytearray(raw)
            t[at] ^= 0x20
            path = tmp_path / "flip.zip"
            path.write_bytes(bytes(t))
            rc, out = verdict(path, centre_pem, capsys)
            assert rc == 1, f"{info.filename} byte {at - start}: {out}"
            assert "FAILED:" in out


def test_a_batch_removed_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    name = f"devices/{sqlite_env.dev}/batches/6.cose"
    del m[name]
    rc, out = verdict(write(m, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: {name} is listed in the signed manifest but is not in the bundle (a part was removed)" in out


def test_a_batch_replaced_in_the_chain_by_the_exporter_is_refused(
    sqlite_env: Env, centre_pem: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An exporter copies the whole chain, then leaves seq 4 out and lists a made-up hash in its place:
    the device's signed prev of seq 5 still names the real seq 4."""
    full = tmp_path / "full.zip"
    sqlite_env.export(full, full_chain=True)
    m = read(full)
    del m[f"devices/{sqlite_env.dev}/batches/4.cose"]

    def replace(man: dict[str, Any]) -> None:
        d = man["devices"][0]
        d["chain"]["hashes"][2] = hashlib.sha256(b"another batch").digest()
        d["batches"] = [2, 3, 5, 6]

    rc, out = verdict(write(resign(m, sqlite_env.signer, replace), tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: chain of {sqlite_env.dev} is broken at seq 5: its signed prev is not the SHA-256 of seq 4" in out
    assert "chain from seq 2 to 6: NOT continuous" in out


def test_a_batch_dropped_from_the_chain_by_the_exporter_is_refused(
    sqlite_env: Env, centre_pem: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """... or leaves seq 4 out with its hash: the segment is one hash short of the signed seqs it spans."""
    full = tmp_path / "full.zip"
    sqlite_env.export(full, full_chain=True)
    m = read(full)
    del m[f"devices/{sqlite_env.dev}/batches/4.cose"]

    def drop(man: dict[str, Any]) -> None:
        d = man["devices"][0]
        del d["chain"]["hashes"][2]
        d["batches"] = [2, 3, 5, 6]

    rc, out = verdict(write(resign(m, sqlite_env.signer, drop), tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert "batches must be seqs within the chain segment, which lists 4 hashes from seq 2: 2..5" in out


@pytest.mark.parametrize("lying_exporter", [False, True])
def test_a_swapped_clip_is_refused(
    lying_exporter: bool, bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path,
    capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    name = f"devices/{sqlite_env.dev}/media/void-clip.mp4"
    m[name] = sqlite_env.site.files["cmd-0"].read_bytes()  # another real clip of the same camera
    if lying_exporter:
        m = resign(m, sqlite_env.signer)
    rc, out = verdict(write(m, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert (f"FAILED: {name} was changed" in out) is not lying_exporter
    assert f"FAILED: clip {name} was swapped or changed" in out
    assert f"signed media record {sqlite_env.site.clip_for_void} says" in out


@pytest.mark.parametrize("keep", [0, 100, 4096, -1])
def test_a_bundle_cut_short_is_refused(
    keep: int, bundle: Path, centre_pem: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = bundle.read_bytes()
    cut = tmp_path / "cut.zip"
    cut.write_bytes(raw[:keep] if keep >= 0 else raw[:-1])
    rc, out = verdict(cut, centre_pem, capsys)
    assert rc == 1
    assert "is not a complete evidence bundle" in out and "was it cut short" in out


def test_a_device_key_that_is_not_the_devices_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The bundle names another key for the device (a lying exporter, or the wrong device's key): every
    batch of the device is then signed by a key the bundle does not give it, and the device is unknown."""
    m = read(bundle)
    dev = sqlite_env.dev
    old = next(n for n in m if "/keys/" in n)
    other = Ed25519PrivateKey.generate().public_key()
    new = f"devices/{dev}/keys/{kid_for(other).hex()}.pem"
    del m[old]
    m[new] = public_pem(other).encode()

    def swap(man: dict[str, Any]) -> None:
        man["devices"][0]["keys"] = [{"kid": kid_for(other), "path": new, "source": "made up"}]

    rc, out = verdict(write(resign(m, sqlite_env.signer, swap), tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: device {dev} is unknown: batch seq 2 is signed by a key that is not among the device's keys" in out


def test_a_key_part_replaced_after_export_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    name = next(n for n in m if "/keys/" in n)
    m[name] = public_pem(Ed25519PrivateKey.generate().public_key()).encode()
    rc, out = verdict(write(m, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: {name} was changed" in out and f"FAILED: {name}: the key's kid is" in out
    assert f"FAILED: device {sqlite_env.dev} is unknown" in out


def test_another_exporter_or_a_changed_manifest_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    forger = Signer(Ed25519PrivateKey.generate())
    forged = resign(m | {"exporter.pem": public_pem(forger.key.public_key()).encode()}, forger)
    rc, out = verdict(write(forged, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"is not the pinned centre key (kid {sqlite_env.signer.kid.hex()})" in out
    assert "manifest.cose is not signed by the exporter key: unknown kid" in out
    assert verify_main([str(tmp_path / "t.zip")]) == 0  # unpinned, a forger's bundle is self-consistent ...
    assert f"Check that kid {forger.kid.hex()} is the centre's published key" in capsys.readouterr().out  # ... and said

    cose = bytearray(m[MANIFEST])
    cose[-70] ^= 1  # inside the payload, before the 64-byte signature
    rc, out = verdict(write(m | {MANIFEST: bytes(cose)}, tmp_path / "m.zip"), centre_pem, capsys)
    assert rc == 1 and "manifest.cose does not verify: bad signature (the manifest was changed)" in out


def test_a_part_added_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    m = read(bundle)
    name = f"devices/{sqlite_env.dev}/batches/3.cose"
    m[name] = m[f"devices/{sqlite_env.dev}/batches/2.cose"]
    rc, out = verdict(write(m, tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1 and f"FAILED: {name} is in the bundle but not in the signed manifest (a part was added)" in out
    m["../evil.txt"] = b"x"
    rc, out = verdict(write(m, tmp_path / "e.zip"), centre_pem, capsys)
    assert rc == 1 and "which evidence-bundle-v1 does not name" in out


def test_usage_errors_exit_2(tmp_path: Path, bundle: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert verify_main([str(tmp_path / "none.zip")]) == 2
    bad = tmp_path / "bad.pem"
    bad.write_text("not a key")
    assert verify_main([str(bundle), "--centre-key", str(bad)]) == 2
    assert "--centre-key" in capsys.readouterr().err


def test_a_compressed_member_is_refused(bundle: Path, centre_pem: Path, tmp_path: Path,
                                        capsys: pytest.CaptureFixture[str]) -> None:
    """Same bytes, deflated: refused, since a deflate stream's padding bits would be bytes no hash covers."""
    m = read(bundle)
    path = tmp_path / "z.zip"
    with zipfile.ZipFile(path, "w") as z:
        for name, data in m.items():
            z.writestr(name, data, zipfile.ZIP_DEFLATED if name == "exporter.pem" else zipfile.ZIP_STORED)
    rc, out = verdict(path, centre_pem, capsys)
    assert rc == 1 and "exporter.pem: compressed or encrypted; evidence-bundle-v1 stores every member as it is" in out


def test_a_part_the_manifest_names_but_does_not_list_is_refused(
    bundle: Path, centre_pem: Path, sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A lying exporter drops a batch and its clip from the bundle and from `parts`, yet still names them in the
    device entry: the claim that they are there is refused, not skipped."""
    m = read(bundle)
    dev = sqlite_env.dev
    del m[f"devices/{dev}/batches/6.cose"], m[f"devices/{dev}/media/void-clip.mp4"]
    rc, out = verdict(write(resign(m, sqlite_env.signer), tmp_path / "t.zip"), centre_pem, capsys)
    assert rc == 1
    assert f"FAILED: the manifest names devices/{dev}/batches/6.cose, but neither lists it" in out
    assert f"chain of {dev}: seq 6 ends the segment 2..6 but is not in the bundle whole" in out

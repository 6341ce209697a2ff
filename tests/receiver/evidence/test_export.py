"""export_bundle over a real store (SQLite and PostgreSQL) filled through the real ingest path,
checked by coop-verify's code: what goes in, what the verdict says, and what the export refuses."""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path
from typing import Any

import cbor2
import pytest
from click.testing import CliRunner

from coopverify.cli import main as verify_main
from coopverify.verify import verify_bundle
from receiver.cli import cli
from receiver.evidence.export import ExportError, export_bundle
from receiver.evidence.keys import lookup_for
from receiver.store import ReceiverStore
from tests.receiver.evidence.conftest import Env
from wire.bundle import MANIFEST
from wire.cose import kid_for
from wire.keys import public_pem


def manifest(path: Path) -> dict[str, Any]:
    with zipfile.ZipFile(path) as z:
        return dict(cbor2.loads(cbor2.loads(z.read(MANIFEST)).value[2]))


def test_a_void_exports_with_its_clip_and_verifies(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "void.zip"
    s = env.export(out)
    assert (s.records, s.linked, s.batches, s.chain, s.clips, s.missing_clips) == (2, 1, 2, 5, 1, [])
    dev = env.dev
    with zipfile.ZipFile(out) as z:
        names = set(z.namelist())
        assert z.read(f"devices/{dev}/media/void-clip.mp4") == env.site.files["void-clip"].read_bytes()
        with ReceiverStore(env.cfg.receiver) as store:
            stored = dict(store.batch_bytes(dev))
        assert z.read(f"devices/{dev}/batches/2.cose") == stored[2]  # byte for byte: the device's signature holds
        assert z.read(f"devices/{dev}/batches/6.cose") == stored[6]
    kid = env.site.dev.key.public_key()
    assert names == {
        "manifest.cose", "exporter.pem", f"devices/{dev}/batches/2.cose", f"devices/{dev}/batches/6.cose",
        f"devices/{dev}/keys/{kid_for(kid).hex()}.pem", f"devices/{dev}/media/void-clip.mp4",
    }
    m = manifest(out)
    (d,) = m["devices"]
    assert d["chain"]["first"] == 2 and len(d["chain"]["hashes"]) == 5 and d["batches"] == [2, 6]
    assert [r["id"] for r in d["records"]] == [env.site.void_id, env.site.clip_for_void]
    assert d["records"][1]["linked"] == env.site.void_id

    report = verify_bundle(out, env.signer.key.public_key())
    assert report.ok, report.failures
    text = "\n".join(report.lines)
    assert "sale VOID receipt R-4711 (till 3, total 1250 KWD, 1 lines)" in text
    assert f"made for record {env.site.void_id} (sale VOID receipt R-4711" in text
    assert "chain from seq 2 to 6: continuous, 5 batches, 2 whole, 3 only by their SHA-256" in text
    assert f"sealed by {dev} on 2025-11-24 16:00:00.002 UTC" in text  # DeviceSim seals seq N at 1_764_000_000_000+N
    assert report.warnings == []


def test_full_chain_copies_every_batch_between(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "full.zip"
    s = env.export(out, full_chain=True)
    assert (s.batches, s.chain) == (5, 5)
    assert manifest(out)["devices"][0]["batches"] == [2, 3, 4, 5, 6]
    report = verify_bundle(out, env.signer.key.public_key())
    assert report.ok, report.failures
    assert any("5 batches, 5 whole, every link proven by the device's own signatures" in ln for ln in report.lines)


def test_several_media_records_bring_their_clips(env: Env, tmp_path: Path) -> None:
    """A snapshot (JPEG) and a clip asked for by commands, selected by their media records: both files come,
    and the sale selected with them is named as covered by neither (its time is outside their spans)."""
    site, out = env.site, tmp_path / "media.zip"
    sel = [(env.dev, site.sales[0]), (env.dev, site.media["cmd-0"]), (env.dev, site.media["cmd-1"])]
    s = env.export(out, sel)
    assert (s.records, s.linked, s.clips) == (3, 0, 2)
    report = verify_bundle(out, env.signer.key.public_key())
    assert report.ok, report.failures
    text = "\n".join(report.lines)
    assert f"devices/{env.dev}/media/cmd-1.jpg: image/jpeg" in text and "asked for by the centre's command c-1" in text
    assert "chain from seq 1 to 6" in text


def test_records_of_two_devices_make_two_device_entries(env: Env, tmp_path: Path) -> None:
    """Two tills of a branch: each device's batches, chain and key, checked apart; one record of till-4's seq 1
    and one of its seq 2 make a segment of two batches, both whole, linked by till-4's own signature."""
    out = tmp_path / "two.zip"
    sel = [(env.dev, env.site.void_id), (env.second.dev, env.second_ids[0]), (env.second.dev, env.second_ids[3])]
    s = env.export(out, sel)
    assert s.devices == [env.dev, env.second.dev] and s.records == 4 and s.batches == 4
    d2 = manifest(out)["devices"][1]
    assert d2["dev"] == env.second.dev and d2["chain"]["first"] == 1 and d2["batches"] == [1, 2]
    assert [k["kid"] for k in d2["keys"]] == [kid_for(env.second.key.public_key())]
    report = verify_bundle(out, env.signer.key.public_key())
    assert report.ok, report.failures
    assert f"Device {env.second.dev}" in report.lines
    assert "  chain from seq 1 to 2: continuous, 2 batches, 2 whole, every link proven by the device's own " \
        "signatures" in report.lines


def test_export_refuses_what_it_cannot_prove(env: Env, tmp_path: Path) -> None:
    out = tmp_path / "x.zip"
    with pytest.raises(ExportError, match="record nope of soc-a/branch-1/till-3 is not stored at this centre"):
        env.export(out, [(env.dev, "nope")])
    with pytest.raises(ExportError, match="device soc-a/branch-2/till-1 has nothing stored at this centre"):
        env.export(out, [(env.other.dev, "x")])
    with pytest.raises(ExportError, match="must be SOCIETY/BRANCH/DEVICE"):
        env.export(out, [("Not/A/Device!", "x")])
    with pytest.raises(ExportError, match="nothing to export"):
        env.export(out, [])
    with ReceiverStore(env.cfg.receiver) as store, out.open("wb") as f, pytest.raises(
        ExportError, match="device soc-a/branch-1/till-3 has no registered public key at this centre"
    ):
        export_bundle(store.conn, env.cfg.receiver.media_dir, [(env.dev, env.site.void_id)], env.signer, f,
                      exporter_name="x", keys=lambda dev: [])


def test_a_clip_changed_on_the_centres_disk_is_not_exported(env: Env, tmp_path: Path) -> None:
    media = tmp_path / "media"
    shutil.copytree(env.cfg.receiver.media_dir, media)
    clip = media / env.dev / "void-clip.mp4"
    data = bytearray(clip.read_bytes())
    data[len(data) // 2] ^= 1
    clip.write_bytes(bytes(data))
    with ReceiverStore(env.cfg.receiver) as store, (tmp_path / "x.zip").open("wb") as f, pytest.raises(
        ExportError, match="media void-clip of soc-a/branch-1/till-3: .* is not the .* of its signed media record"
    ):
        export_bundle(store.conn, media, [(env.dev, env.site.void_id)], env.signer, f, exporter_name="x",
                      keys=lookup_for(env.cfg))


def test_cli_exports_and_coop_verify_passes(
    sqlite_env: Env, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    env, out = sqlite_env, tmp_path / "cli.zip"
    config = env.cfg.receiver.key_file.parent / "receiver.toml"
    res = CliRunner().invoke(cli, ["export", "--config", str(config), "--record", f"{env.dev}:{env.site.void_id}",
                                   "--out", str(out), "--exporter-name", "Control centre"])
    assert res.exit_code == 0, res.output
    assert f"wrote {out}: 2 records (1 linked clips' records) of {env.dev}; 2 batches whole, chain of 5; 1 clips" \
        in res.output
    assert not list(tmp_path.glob(".*.tmp"))
    pem = tmp_path / "centre.pem"
    pem.write_text(public_pem(env.signer.key.public_key()))
    assert verify_main([str(out), "--centre-key", str(pem)]) == 0
    shown = capsys.readouterr().out
    assert "Exported by 'Control centre'" in shown and "(the pinned centre key)" in shown
    assert shown.rstrip().splitlines()[-1].startswith("VERIFIED:")
    assert verify_main([str(out)]) == 0  # unpinned: verified, with a warning that says so
    assert "WARNING: the exporter's key is not pinned" in capsys.readouterr().out

    res = CliRunner().invoke(cli, ["export", "--config", str(config), "--record", f"{env.dev}:nope", "--out",
                                   str(tmp_path / "no.zip")])
    assert res.exit_code == 2 and "record nope of soc-a/branch-1/till-3 is not stored" in res.output
    assert not (tmp_path / "no.zip").exists() and not list(tmp_path.glob(".*.tmp"))
    res = CliRunner().invoke(cli, ["export", "--config", str(config), "--record", "nocolon", "--out", str(out)])
    assert res.exit_code == 2 and "give DEVICE:RECORD_ID" in res.output

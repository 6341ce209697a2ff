"""The evidence bundle, version 1 (docs/evidence-bundle-v1.md) in code: its layout, its signed
manifest, a writer (the centre's export, receiver/evidence) and a strict reader (coop-verify).

A bundle is a ZIP file: every member but `manifest.cose` is a *part* listed in the manifest with
its size and SHA-256, and the manifest is a COSE_Sign1 by the exporting centre, built with the
same code as the uplink's signed messages (wire.cose). The reader checks the container and the
manifest's shape here; what the parts mean (device signatures, the chain, the clips) is judged
by coopverify, which only needs this module, wire.batches and wire.cose.
"""

from __future__ import annotations

import hashlib
import re
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, Any, BinaryIO

from wire.cose import CoseError, Signer, loads_exact, verify1
from wire.deterministic import is_deterministic
from wire.kinds import MEDIA_ID_PATTERN

FORMAT = "coop-evidence-bundle"
VERSION = 1
MANIFEST = "manifest.cose"
EXPORTER_KEY = "exporter.pem"
COPY_CHUNK = 1 << 20  # clips are copied and hashed a MiB at a time, never held whole
_DEV = r"[a-z0-9][a-z0-9-]{0,31}/[a-z0-9][a-z0-9-]{0,31}/[a-z0-9][a-z0-9-]{0,31}"
# Every name a part may have (the spec's layout); anything else in the ZIP is refused.
PART_RE = re.compile(
    rf"^(?:{EXPORTER_KEY}|devices/{_DEV}/(?:batches/[1-9][0-9]{{0,18}}\.cose|keys/[0-9a-f]{{32}}\.pem"
    rf"|media/{MEDIA_ID_PATTERN[1:-1]}\.(?:mp4|jpg)))$"
)
_EOCD = b"PK\x05\x06"
_LOCAL = b"PK\x03\x04"


def batch_path(dev: str, seq: int) -> str:
    return f"devices/{dev}/batches/{seq}.cose"


def key_path(dev: str, kid: bytes) -> str:
    return f"devices/{dev}/keys/{kid.hex()}.pem"


def media_path(dev: str, media_id: str, suffix: str) -> str:
    return f"devices/{dev}/media/{media_id}{suffix}"


class BundleError(Exception):
    """The file is not a well-formed bundle: cut short, not a ZIP, a part missing or unlisted,
    a manifest that does not verify or does not follow the format. The message names the part."""


@dataclass(frozen=True)
class Part:
    path: str
    size: int
    sha256: bytes

    def entry(self) -> dict[str, Any]:
        return {"path": self.path, "size": self.size, "sha256": self.sha256}


# ------------------------------------------------------------------------------- writing


class BundleWriter:
    """Writes parts into the ZIP as they come (hashing each), then the signed manifest last.

    Every member is stored, not deflated: then every byte of a member's data in the file is a
    byte of the part, covered by its SHA-256 (a deflate stream has padding bits that change
    nothing), a reader needs no inflater, and clips (MP4, JPEG: compressed already) stay
    playable straight from the archive. Batches would shrink 2-4x deflated; they are a small
    share of a bundle next to its clips.
    """

    def __init__(self, out: BinaryIO | IO[bytes], created_ms: int):
        self.zip = zipfile.ZipFile(out, "w", allowZip64=True)
        self.parts: dict[str, Part] = {}
        d = datetime.fromtimestamp(created_ms / 1000, tz=UTC)
        self._date_time = (max(d.year, 1980), d.month, d.day, d.hour, d.minute, d.second)

    def _info(self, path: str) -> zipfile.ZipInfo:
        if not PART_RE.match(path):
            raise ValueError(f"{path!r} is not a part name of evidence-bundle-v1")
        if path in self.parts:
            raise ValueError(f"part {path} is written twice")
        info = zipfile.ZipInfo(path, self._date_time)
        info.compress_type = zipfile.ZIP_STORED
        info.external_attr = 0o644 << 16
        return info

    def add_bytes(self, path: str, data: bytes) -> Part:
        self.zip.writestr(self._info(path), data)
        part = self.parts[path] = Part(path, len(data), hashlib.sha256(data).digest())
        return part

    def add_file(self, path: str, src: Path, *, expect_sha256: bytes | None = None) -> Part:
        """Copy a file in (stored), hashing as it goes; a file whose SHA-256 is not `expect_sha256`
        raises ValueError (the bundle being written is then unusable: the caller discards it)."""
        info = self._info(path)
        h, size = hashlib.sha256(), 0
        with src.open("rb") as f, self.zip.open(info, "w", force_zip64=src.stat().st_size >= 2**31) as w:
            while chunk := f.read(COPY_CHUNK):
                h.update(chunk)
                w.write(chunk)
                size += len(chunk)
        digest = h.digest()
        if expect_sha256 is not None and digest != expect_sha256:
            raise ValueError(
                f"{src}: SHA-256 {digest.hex()} is not the {expect_sha256.hex()} of its signed media record "
                "(the centre's copy changed on disk)"
            )
        part = self.parts[path] = Part(path, size, digest)
        return part

    def finish(self, manifest: Mapping[str, Any], signer: Signer) -> bytes:
        """Sign the manifest (with every part written so far), write it, close the ZIP; returns its bytes."""
        payload = dict(manifest)
        payload["parts"] = [self.parts[p].entry() for p in sorted(self.parts)]
        cose = signer.sign_map(payload)
        info = zipfile.ZipInfo(MANIFEST, self._date_time)
        info.external_attr = 0o644 << 16
        self.zip.writestr(info, cose)
        self.zip.close()
        return cose


# ------------------------------------------------------------------------------- reading


@dataclass
class Manifest:
    """The manifest's payload, its shape checked (types, required keys), its meaning not yet."""

    exporter: str
    created: int
    parts: dict[str, Part]
    devices: list[dict[str, Any]]
    kid: bytes
    raw: dict[str, Any] = field(repr=False)


class Bundle:
    """An opened bundle: the container is well-formed and the member names are the spec's."""

    def __init__(self, path: Path):
        self.path = path
        self.size = path.stat().st_size
        with path.open("rb") as f:
            head = f.read(4)
            f.seek(max(0, self.size - 22))
            tail = f.read(22)
        # The spec forbids an archive comment and bytes around the ZIP: then the end-of-central-
        # directory record is the last 22 bytes, and a file cut short has lost it.
        if head != _LOCAL or len(tail) != 22 or tail[:4] != _EOCD or tail[20:22] != b"\x00\x00":
            raise BundleError(
                f"{path.name} is not a complete evidence bundle: it does not end with a ZIP end-of-central-"
                f"directory record ({self.size} bytes; was it cut short, or were bytes added?)"
            )
        try:
            self.zip = zipfile.ZipFile(path)
        except (zipfile.BadZipFile, OSError) as exc:
            raise BundleError(f"{path.name} is not a readable ZIP file: {exc} (was it cut short?)") from None
        names = [i.filename for i in self.zip.infolist()]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise BundleError(f"the bundle holds {', '.join(dup)} more than once")
        if MANIFEST not in names:
            raise BundleError(f"the bundle has no {MANIFEST}")
        bad = [n for n in names if n != MANIFEST and not PART_RE.match(n)]
        if bad:
            raise BundleError(f"the bundle holds {', '.join(sorted(bad)[:5])}, which evidence-bundle-v1 does not name")
        infos = self.zip.infolist()
        packed = sorted(i.filename for i in infos if i.compress_type != zipfile.ZIP_STORED or i.flag_bits & 1)
        if packed:
            raise BundleError(f"{', '.join(packed[:5])}: compressed or encrypted; evidence-bundle-v1 stores "
                              "every member as it is")
        self.names = set(names) - {MANIFEST}

    def close(self) -> None:
        self.zip.close()

    def __enter__(self) -> Bundle:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def read(self, name: str) -> bytes:
        try:
            return self.zip.read(name)
        except (zipfile.BadZipFile, OSError, EOFError, KeyError) as exc:
            raise BundleError(f"{name} cannot be read: {exc} (the bundle is damaged)") from None

    def digest(self, name: str) -> tuple[int, bytes]:
        """(size, SHA-256) of a member, streamed (a clip is never held whole)."""
        h, size = hashlib.sha256(), 0
        try:
            with self.zip.open(name) as f:
                while chunk := f.read(COPY_CHUNK):
                    h.update(chunk)
                    size += len(chunk)
        except (zipfile.BadZipFile, OSError, EOFError) as exc:
            raise BundleError(f"{name} cannot be read: {exc} (the bundle is damaged)") from None
        return size, h.digest()

    def manifest(self, exporter_keys: Mapping[bytes, Any]) -> Manifest:
        """Verify manifest.cose with one of `exporter_keys` (kid -> Ed25519 public key) and check its shape."""
        cose = self.read(MANIFEST)
        try:
            v = verify1(cose, dict(exporter_keys))
        except CoseError as exc:
            if exc.code == "kid":
                raise BundleError(f"{MANIFEST} is not signed by the exporter key: {exc}") from None
            raise BundleError(f"{MANIFEST} does not verify: {exc} (the manifest was changed)") from None
        if dict(loads_exact(cose).value[1]):
            raise BundleError(f"{MANIFEST}: the unprotected header must be empty")
        if not is_deterministic(v.payload, v.payload_bytes):
            raise BundleError(f"{MANIFEST}: the payload is not deterministic CBOR (RFC 8949 4.2.1)")
        return parse_manifest(v.payload, v.kid)


def _need(ok: bool, what: str) -> None:
    if not ok:
        raise BundleError(f"{MANIFEST}: {what}")


def _is_int(v: Any) -> bool:
    return type(v) is int


def parse_manifest(p: Any, kid: bytes) -> Manifest:
    """The manifest's shape (docs/evidence-bundle-v1.md, "Manifest"); raises BundleError naming the key."""
    _need(isinstance(p, Mapping), "payload is not a map")
    _need(p.get("format") == FORMAT, f"format = {p.get('format')!r}; expected {FORMAT!r}")
    _need(p.get("v") == VERSION and _is_int(p.get("v")), f"v = {p.get('v')!r}; this verifier reads version 1")
    _need(isinstance(p.get("exporter"), str), "exporter must be a text")
    _need(_is_int(p.get("created")), "created must be epoch milliseconds")
    parts: dict[str, Part] = {}
    _need(isinstance(p.get("parts"), list), "parts must be an array")
    for i, e in enumerate(p["parts"]):
        _need(isinstance(e, Mapping) and isinstance(e.get("path"), str), f"parts[{i}].path must be a text")
        _need(PART_RE.match(e["path"]) is not None, f"parts[{i}].path = {e['path']!r} is not a part name")
        _need(_is_int(e.get("size")) and e["size"] >= 0, f"parts[{i}].size must be an unsigned integer")
        _need(isinstance(e.get("sha256"), bytes) and len(e["sha256"]) == 32, f"parts[{i}].sha256 must be 32 bytes")
        _need(e["path"] not in parts, f"parts lists {e['path']} twice")
        parts[e["path"]] = Part(e["path"], e["size"], e["sha256"])
    _need(EXPORTER_KEY in parts, f"parts must list {EXPORTER_KEY}")
    _need(isinstance(p.get("devices"), list) and bool(p["devices"]), "devices must be a non-empty array")
    for i, d in enumerate(p["devices"]):
        _check_device(d, f"devices[{i}]")
    return Manifest(p["exporter"], p["created"], parts, list(p["devices"]), kid, dict(p))


def _check_device(d: Any, at: str) -> None:
    _need(isinstance(d, Mapping), f"{at} must be a map")
    _need(isinstance(d.get("dev"), str) and re.fullmatch(_DEV, d["dev"]) is not None, f"{at}.dev must be S/B/D")
    for key in ("keys", "batches", "records", "media"):
        _need(isinstance(d.get(key), list), f"{at}.{key} must be an array")
    _need(bool(d["keys"]), f"{at}.keys must name at least one key")
    for j, k in enumerate(d["keys"]):
        w = f"{at}.keys[{j}]"
        _need(isinstance(k, Mapping), f"{w} must be a map")
        _need(isinstance(k.get("kid"), bytes) and len(k["kid"]) == 16, f"{w}.kid must be 16 bytes")
        _need(k.get("path") == key_path(d["dev"], k["kid"]), f"{w}.path must be {key_path(d['dev'], k['kid'])}")
        _need(isinstance(k.get("source"), str), f"{w}.source must be a text")
        for t in ("registered", "revoked"):
            _need(t not in k or _is_int(k[t]), f"{w}.{t} must be epoch milliseconds")
    chain = d.get("chain")
    _need(isinstance(chain, Mapping) and _is_int(chain.get("first")) and chain["first"] >= 1,
          f"{at}.chain.first must be a seq >= 1")
    assert isinstance(chain, Mapping)
    hashes = chain.get("hashes")
    _need(isinstance(hashes, list) and bool(hashes), f"{at}.chain.hashes must be a non-empty array")
    assert isinstance(hashes, list)
    _need(all(isinstance(h, bytes) and len(h) == 32 for h in hashes), f"{at}.chain.hashes must be 32-byte values")
    last = chain["first"] + len(hashes) - 1
    _need(all(_is_int(s) and chain["first"] <= s <= last for s in d["batches"]),
          f"{at}.batches must be seqs within the chain segment, which lists {len(hashes)} hashes from seq "
          f"{chain['first']}: {chain['first']}..{last}")
    for j, r in enumerate(d["records"]):
        w = f"{at}.records[{j}]"
        _need(isinstance(r, Mapping) and isinstance(r.get("id"), str), f"{w}.id must be a text")
        _need(_is_int(r.get("seq")) and r["seq"] in d["batches"], f"{w}.seq must be one of {at}.batches")
        _need(_is_int(r.get("pos")) and r["pos"] >= 0, f"{w}.pos must be an unsigned integer")
        _need("linked" not in r or isinstance(r["linked"], str), f"{w}.linked must be a record id")
    for j, m in enumerate(d["media"]):
        w = f"{at}.media[{j}]"
        _need(isinstance(m, Mapping) and isinstance(m.get("media"), str), f"{w}.media must be a text")
        _need(isinstance(m.get("record"), str), f"{w}.record must be a record id")
        _need("path" not in m or isinstance(m["path"], str), f"{w}.path must be a text")

"""The checks of an evidence bundle, in the order of docs/evidence-bundle-v1.md "Verifying".

Every check that fails adds one failure naming the part and what is wrong with it; checks go
on after a failure where they still can, so a person sees everything that is wrong at once.
Trust, from the outside in: the manifest is the exporter's (pin its key with --centre-key, or
compare the kid printed); the device keys are the ones the exporter says it registered; the
batches are the devices' own signed bytes; the clips are bound by the SHA-256 in a signed
media record, so no exporter can swap one without breaking a device's signature.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import cbor2
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from coopverify.text import describe, ts
from wire.batches import Batch, Rejected, check_batch
from wire.bundle import EXPORTER_KEY, Bundle, BundleError, Manifest, batch_path, media_path
from wire.cose import kid_for
from wire.kinds import MEDIA_TYPES


@dataclass
class Report:
    """The verdict: lines to read (what was proven), warnings, and failures (each one sentence)."""

    lines: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def fail(self, what: str) -> None:
        self.failures.append(what)


def public_key(pem: bytes, name: str) -> Ed25519PublicKey:
    try:
        key = serialization.load_pem_public_key(pem)
    except ValueError:
        raise BundleError(f"{name} is not a PEM public key") from None
    if not isinstance(key, Ed25519PublicKey):
        raise BundleError(f"{name} is not an Ed25519 public key")
    return key


def verify_bundle(path: Path, centre_key: Ed25519PublicKey | None = None) -> Report:
    """Check the bundle at `path`; `centre_key` pins the exporter (else the bundle's own key is used, and said so)."""
    report = Report()
    try:
        with Bundle(path) as b:
            _Check(b, report).run(centre_key)
    except BundleError as exc:
        report.fail(str(exc))
    return report


class _Check:
    def __init__(self, bundle: Bundle, report: Report):
        self.b, self.r = bundle, report
        self.digests: dict[str, tuple[int, bytes]] = {}
        self.referenced = {EXPORTER_KEY}
        self.listed: set[str] = set()

    def run(self, pinned: Ed25519PublicKey | None) -> None:
        b, r = self.b, self.r
        if EXPORTER_KEY not in b.names:
            raise BundleError(f"the bundle has no {EXPORTER_KEY} (the exporter's public key)")
        exporter = public_key(b.read(EXPORTER_KEY), EXPORTER_KEY)
        ekid = kid_for(exporter)
        if pinned is not None:
            pkid = kid_for(pinned)
            if pkid != ekid:
                r.fail(f"the bundle's exporter key (kid {ekid.hex()}) is not the pinned centre key (kid {pkid.hex()})")
            m = b.manifest({pkid: pinned})
            who = "the pinned centre key"
        else:
            m = b.manifest({ekid: exporter})
            who = "its own exporter.pem, NOT pinned"
            r.warnings.append(
                f"the exporter's key is not pinned: anyone can sign a bundle with a key of their own. Check that "
                f"kid {ekid.hex()} is the centre's published key, or run again with --centre-key CENTRE.pem"
            )
        r.lines.append(f"Exported by {m.exporter!r} on {ts(m.created)}; manifest signed by kid {m.kid.hex()} ({who})")
        self.parts(m)
        for d in m.devices:
            self.device(d)
        for p in sorted(set(m.parts) - self.referenced):
            r.fail(f"{p} is listed in the manifest but no device entry names it")

    def parts(self, m: Manifest) -> None:
        """Every member is listed, every listed part is there, and each has the size and SHA-256 listed."""
        listed, present = set(m.parts), self.b.names
        self.listed = listed
        for p in sorted(listed - present):
            self.r.fail(f"{p} is listed in the signed manifest but is not in the bundle (a part was removed)")
        for p in sorted(present - listed):
            self.r.fail(f"{p} is in the bundle but not in the signed manifest (a part was added)")
        for p in sorted(listed & present):
            try:
                size, digest = self.digests[p] = self.b.digest(p)
            except BundleError as exc:
                self.r.fail(str(exc))
                continue
            want = m.parts[p]
            if (size, digest) != (want.size, want.sha256):
                self.r.fail(f"{p} was changed: {size} bytes with SHA-256 {digest.hex()[:16]}..., the signed manifest "
                            f"lists {want.size} bytes with SHA-256 {want.sha256.hex()[:16]}...")
        n = len(listed & present)
        if not self.r.failures:
            self.r.lines.append(f"All {n} parts are present and match the SHA-256 the manifest lists")

    def _read(self, path: str) -> bytes | None:
        self.referenced.add(path)
        if path not in self.b.names:
            if path not in self.listed:  # listed but missing is a failure already
                self.r.fail(f"the manifest names {path}, but neither lists it among its parts nor is it in the bundle")
            return None
        try:
            return self.b.read(path)
        except BundleError as exc:
            self.r.fail(str(exc))
            return None

    def device(self, d: Mapping[str, Any]) -> None:
        dev, r = d["dev"], self.r
        r.lines.append(f"Device {dev}")
        keys: dict[bytes, Ed25519PublicKey] = {}
        for k in d["keys"]:
            pem = self._read(k["path"])
            if pem is None:
                continue
            try:
                pub = public_key(pem, k["path"])
            except BundleError as exc:
                r.fail(str(exc))
                continue
            if kid_for(pub) != k["kid"]:
                r.fail(f"{k['path']}: the key's kid is {kid_for(pub).hex()}, not the {k['kid'].hex()} the manifest "
                       "gives")
                continue
            keys[k["kid"]] = pub
            when = f", registered {ts(k['registered'])}" if "registered" in k else ""
            gone = f", revoked {ts(k['revoked'])}" if "revoked" in k else ""
            r.lines.append(f"  key kid {k['kid'].hex()} ({k['source']}{when}{gone}), as registered by the exporter")
        first, hashes = d["chain"]["first"], d["chain"]["hashes"]
        batches, payloads = self.batches(dev, d["batches"], keys, first, hashes)
        self.chain(dev, first, hashes, batches)
        records = self.records(dev, d["records"], batches, payloads)
        self.media(dev, d["media"], records, batches)

    def batches(
        self, dev: str, seqs: list[int], keys: dict[bytes, Ed25519PublicKey], first: int, hashes: list[bytes]
    ) -> tuple[dict[int, Batch], dict[int, list[Any]]]:
        r = self.r
        out: dict[int, Batch] = {}
        payloads: dict[int, list[Any]] = {}
        for seq in seqs:
            path = batch_path(dev, seq)
            cose = self._read(path)
            if cose is None:
                continue
            try:
                batch = check_batch(cose, dev, keys)
            except Rejected as exc:
                if exc.code == "unknown_kid":
                    r.fail(f"device {dev} is unknown: batch seq {seq} is signed by a key that is not among the "
                           f"device's keys in this bundle ({exc.reason})")
                elif exc.code == "bad_signature":
                    r.fail(f"batch seq {seq} of {dev}: the device's signature does not verify (the batch was changed)")
                else:
                    r.fail(f"batch seq {seq} of {dev} is not a valid uplink-v1 batch: {exc.code}: {exc.reason}")
                continue
            if batch.seq != seq:
                r.fail(f"{path} holds the device's seq {batch.seq}, not {seq}")
                continue
            if batch.hash != hashes[seq - first]:
                r.fail(f"batch seq {seq} of {dev}: its SHA-256 is not the chain segment's hash for seq {seq}")
            out[seq] = batch
            payloads[seq] = list(cbor2.loads(cbor2.loads(cose).value[2])["records"])
            r.lines.append(f"  batch seq {seq}: sealed by {dev} on {ts(batch.sealed)}, signed with kid "
                           f"{batch.kid.hex()}, {len(batch.rows)} records; the signature verifies")
        return out, payloads

    def chain(self, dev: str, first: int, hashes: list[bytes], batches: dict[int, Batch]) -> None:
        r, last = self.r, first + len(hashes) - 1
        before = len(r.failures)
        for end in (first, last):
            if end not in batches:
                r.fail(f"chain of {dev}: seq {end} ends the segment {first}..{last} but is not in the bundle whole")
        for seq, batch in sorted(batches.items()):
            if seq > first and batch.prev != hashes[seq - first - 1]:
                r.fail(f"chain of {dev} is broken at seq {seq}: its signed prev is not the SHA-256 of seq {seq - 1} "
                       "(a batch was removed, added or replaced)")
        if len(r.failures) > before:
            r.lines.append(f"  chain from seq {first} to {last}: NOT continuous")
            return
        whole, hashed = len(batches), len(hashes) - len(batches)
        how = (
            f"{hashed} only by their SHA-256 (their records are not exported; the exporter attests those links)"
            if hashed
            else "every link proven by the device's own signatures"
        )
        r.lines.append(f"  chain from seq {first} to {last}: continuous, {len(hashes)} batches, {whole} whole, {how}")

    def records(
        self, dev: str, entries: list[Mapping[str, Any]], batches: dict[int, Batch], payloads: dict[int, list[Any]]
    ) -> dict[str, Mapping[str, Any]]:
        r = self.r
        out: dict[str, Mapping[str, Any]] = {}
        for e in entries:
            recs = payloads.get(e["seq"])
            if recs is None:
                continue  # its batch failed, and said why
            if e["pos"] >= len(recs) or recs[e["pos"]].get("id") != e["id"]:
                r.fail(f"record {e['id']} of {dev} is not at position {e['pos']} of batch seq {e['seq']}")
                continue
            rec = out[e["id"]] = recs[e["pos"]]
            linked = f" (the clip made for record {e['linked']})" if "linked" in e else ""
            r.lines.append(f"  record {e['id']}: {describe(rec)}{linked}; happened {ts(rec['at'])} at {rec['src']}, "
                           f"sealed in batch seq {e['seq']} on {ts(batches[e['seq']].sealed)}")
        return out

    def media(
        self, dev: str, entries: list[Mapping[str, Any]], records: dict[str, Mapping[str, Any]],
        batches: dict[int, Batch],
    ) -> None:
        r = self.r
        for e in entries:
            rec = records.get(e["record"])
            if rec is None or rec.get("kind") != "media" or rec["data"].get("media") != e["media"]:
                r.fail(f"media {e['media']} of {dev}: record {e['record']} in the bundle is not its media record")
                continue
            data = rec["data"]
            if "path" not in e:
                r.warnings.append(f"clip {e['media']} of {dev} (media record {e['record']}) is not in the bundle: "
                                  "the centre did not hold it complete when it exported")
                continue
            path = e["path"]
            self.referenced.add(path)
            if path not in self.listed:
                r.fail(f"media {e['media']} of {dev}: the manifest names {path} but does not list it among its parts")
                continue
            if path != media_path(dev, e["media"], MEDIA_TYPES[data["type"]]):
                r.fail(f"media {e['media']} of {dev}: its part is {path}, not the spec's "
                       f"{media_path(dev, e['media'], MEDIA_TYPES[data['type']])}")
                continue
            got = self.digests.get(path)
            if got is None:
                continue  # missing or unreadable: already a failure
            if got != (data["size"], data["sha256"]):
                r.fail(f"clip {path} was swapped or changed: {got[0]} bytes with SHA-256 {got[1].hex()[:16]}..., but "
                       f"the device's signed media record {e['record']} says {data['size']} bytes with SHA-256 "
                       f"{data['sha256'].hex()[:16]}...")
                continue
            r.lines.append(f"  clip {path}: {data['type']} of camera {data['camera']}, {ts(data['start'])} to "
                           f"{ts(data['end'])}; its SHA-256 is the one signed in media record {e['record']}; "
                           f"{shows(data, rec['id'], records)}")


def shows(data: Mapping[str, Any], own: str, records: dict[str, Mapping[str, Any]]) -> str:
    """Which record the clip shows: the one its signed reason names, and those whose time it spans."""
    out = []
    reason = data.get("reason")
    if isinstance(reason, Mapping):
        target = reason.get("record")
        if isinstance(target, str):
            rec = records.get(target)
            out.append(f"made for record {target}" + (f" ({describe(rec)})" if rec else " (not in this bundle)"))
        elif isinstance(reason.get("command"), str):
            out.append(f"asked for by the centre's command {reason['command']}")
        elif "rule" in reason:
            out.append(f"made by rule {reason['rule']}")
    spans = [
        f"{describe(rec)} at {ts(rec['at'])}"
        for rid, rec in records.items()
        if rid != own and rec.get("kind") != "media" and data["start"] <= rec["at"] <= data["end"]
    ]
    if spans:
        out.append("its time span covers " + "; ".join(spans))
    return "; ".join(out) or "no record in this bundle falls in its time span"

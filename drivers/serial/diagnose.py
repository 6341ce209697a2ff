"""Why a serial device says nothing useful: counters of what arrived, and the likely fix.

A reader keeps a `Capture` (bytes seen, frames parsed, frames refused by reason, and the
first few KiB as they arrived). `diagnose_scale` and `diagnose_scanner` turn it into a
`Diagnosis`: what happened in one line, and findings that each name a cause and the setting
that fixes it. The captured bytes are replayed offline through the other settings of the
same protocol (`Protocol.variants`), through the other protocols, and with bit 7 taken as a
parity bit, so "set checksum = false" or "set protocol = \"cas\"" is only said when that
setting does parse what arrived. A wrong baud rate cannot be replayed (the bytes are already
garbled); it is named when the bytes are neither text nor frames, and `scale detect` tries
the rates on the line.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import TypeAdapter, ValidationError

from drivers.serial.config import ScannerConfig
from drivers.serial.portcfg import PortSettings
from drivers.serial.scales import PROTOCOLS, ScaleConfig, ScaleConfigBase, make_protocol

SAMPLE_BYTES = 4096
# bytes a frame of any of our devices is made of: printable ASCII, CR, LF, TAB, STX, ETX, GS
_TEXT = frozenset(range(0x20, 0x7F)) | {0x09, 0x0A, 0x0D, 0x02, 0x03, 0x1D}
_SUFFIXES = {b"\r\n": "\\r\\n", b"\r": "\\r", b"\n": "\\n", b"\x03": "<ETX>", b"\t": "\\t"}
SILENCE_HELP = (
    "check the cable, the port (`coopagent serial list`), and use the /dev/serial/by-id name"
)

State = Literal["ok", "silent", "unparsed", "suspect"]


@dataclass
class Capture:
    """What a reader saw, for a diagnosis; feed it every chunk read and every refusal."""

    started: float = field(default_factory=time.monotonic)
    bytes_seen: int = 0
    frames: int = 0
    refused: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)
    sample: bytearray = field(default_factory=bytearray)
    polls: int = 0

    def add_bytes(self, data: bytes) -> None:
        self.bytes_seen += len(data)
        room = SAMPLE_BYTES - len(self.sample)
        if room > 0:
            self.sample += data[:room]

    def refuse(self, reason: str, example: str = "", n: int = 1) -> None:
        self.refused[reason] += n
        if example:
            self.examples[reason] = example

    @property
    def refused_total(self) -> int:
        return sum(self.refused.values())

    def elapsed(self) -> float:
        return time.monotonic() - self.started


@dataclass(frozen=True)
class Finding:
    cause: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        return {"cause": self.cause, "fix": self.fix}


@dataclass
class Diagnosis:
    state: State
    summary: str
    findings: list[Finding]
    bytes_seen: int
    frames: int
    refused: dict[str, int]
    seconds: float

    def text(self) -> str:
        lines = [self.summary]
        for f in self.findings:
            lines.append(f"  likely cause: {f.cause}")
            lines.append(f"  fix: {f.fix}")
        return "\n".join(lines)

    def as_dict(self) -> dict[str, Any]:
        return {
            "state": self.state,
            "summary": self.summary,
            "bytes": self.bytes_seen,
            "frames": self.frames,
            "refused": self.refused,
            "seconds": round(self.seconds, 2),
            "findings": [f.as_dict() for f in self.findings],
        }


# -- byte statistics --------------------------------------------------------------------------
def text_ratio(data: bytes) -> float:
    return sum(b in _TEXT for b in data) / len(data) if data else 1.0


def parity_in_bit7(data: bytes) -> Literal["E", "O"] | None:
    """'E' or 'O' when bit 7 of (nearly) every byte is the even/odd parity of the other seven
    and is often set: a 7-bit device with parity read as 8 data bits."""
    if len(data) < 8 or sum(b >> 7 for b in data) < len(data) // 5:
        return None
    # 90 %, not all: the first bytes after opening may be the tail of a garbled frame
    even = sum((b >> 7) == (bin(b & 0x7F).count("1") & 1) for b in data)
    if even >= 0.9 * len(data):
        return "E"
    if len(data) - even >= 0.9 * len(data):
        return "O"
    return None


def _parity_finding(p: str) -> Finding:
    name = "even" if p == "E" else "odd"
    return Finding(
        f"bit 7 of the bytes is a parity bit: the device sends 7 data bits with {name} parity "
        f"(7{p}1) and the port is read as 8 data bits without parity (8N1)",
        f'set bytesize = 7, parity = "{p}"',
    )


def _baud_finding(what: str) -> Finding:
    return Finding(
        "the bytes are neither text nor frames: the baud rate (or the parity) differs from the device's",
        f"set the device's baudrate (9600, 4800, 2400 and 19200 are usual); {what}",
    )


def _silence(cfg: PortSettings, cap: Capture, polled: bytes | None) -> Diagnosis:
    findings = [Finding("nothing arrives on the port", SILENCE_HELP)]
    if "/dev/serial/by-id/" not in cfg.port:
        findings.append(
            Finding(
                f"{cfg.port} is not a /dev/serial/by-id name: after a replug or reboot it may be another device",
                "use the by-id name `coopagent serial list` shows",
            )
        )
    if polled is not None:
        findings.append(
            Finding(
                f"this protocol answers only when asked: {polled!r} was sent {cap.polls} times and "
                "not understood or not heard (wrong baud rate, parity or protocol leave it silent too)",
                "run `coopagent scale detect PORT`",
            )
        )
    return Diagnosis(
        "silent",
        f"no byte arrived in {cap.elapsed():.0f} s",
        findings,
        0,
        0,
        {},
        cap.elapsed(),
    )


def _counts(cap: Capture) -> str:
    s = f"{cap.bytes_seen} bytes, {cap.frames} frames, {cap.refused_total} refused"
    if cap.refused:
        reason, _ = cap.refused.most_common(1)[0]
        example = cap.examples.get(reason)
        s += f": {reason}" + (f" ({example})" if example else "")
    return s


# -- scales -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Score:
    good: int
    refused: int
    garbage: int

    @property
    def value(self) -> int:
        return self.good - self.refused


def replay(cfg: ScaleConfigBase, data: bytes) -> Score:
    """Feed captured bytes to a fresh parser of cfg: how many readings it understands."""
    proto = make_protocol(cfg)
    readings = proto.feed(data)
    refused = sum(r.refused is not None for r in readings) + sum(proto.dropped.values())
    return Score(len(readings) - sum(r.refused is not None for r in readings), refused, proto.stats.garbage_bytes)


def scale_config(base: dict[str, Any]) -> ScaleConfigBase | None:
    try:
        cfg: ScaleConfigBase = TypeAdapter(ScaleConfig).validate_python(base)
    except ValidationError:
        return None
    return cfg


def alternatives(cfg: ScaleConfigBase) -> list[tuple[dict[str, Any], ScaleConfigBase]]:
    """Other settings to replay, fewest changes first: this protocol's variants, then the others."""
    keep = {"name": cfg.name, "port": cfg.port}
    out: list[tuple[dict[str, Any], ScaleConfigBase]] = []
    own = cfg.model_dump()
    fields = type(cfg).model_fields
    tried: list[dict[str, Any]] = []
    for variant in PROTOCOLS[cfg.protocol].variants:
        # each variant, and the protocol's defaults for the same keys (a config may differ from them)
        for changes in (variant, {k: fields[k].default for k in variant}):
            changes = {k: v for k, v in changes.items() if own.get(k) != v}
            if not changes or changes in tried:
                continue
            tried.append(changes)
            alt = scale_config(own | changes)
            if alt is not None:
                out.append((changes, alt))
    for name, proto in PROTOCOLS.items():
        if name == cfg.protocol:
            continue
        for variant in ({}, *proto.variants):
            alt = scale_config(keep | {"protocol": name} | variant)
            if alt is not None:
                out.append(({"protocol": name} | variant, alt))
    return out


def describe(changes: dict[str, Any]) -> str:
    return "set " + ", ".join(f"{k} = {toml_value(v)}" for k, v in changes.items())


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return '"' + v.encode("unicode_escape").decode("ascii").replace('"', '\\"') + '"'
    return str(v)


def best_alternative(cfg: ScaleConfigBase, data: bytes) -> tuple[dict[str, Any], Score] | None:
    best: tuple[dict[str, Any], Score] | None = None
    for changes, alt in alternatives(cfg):
        score = replay(alt, data)
        if score.good >= 2 and score.value > 0 and (best is None or score.value > best[1].value):
            best = (changes, score)
    return best


def _why(changes: dict[str, Any], cfg: ScaleConfigBase) -> str:
    if "protocol" in changes:
        return f"the frames are {changes['protocol']} frames, not {cfg.protocol}"
    if changes.get("checksum") is False:
        return "the indicator does not send a checksum byte after CR (the next frame's STX was taken for it)"
    if "tare_field" in changes:
        return "the frames " + ("carry no" if changes["tare_field"] is False else "carry a") + " tare field"
    if "terminator" in changes:
        return f"lines end with {toml_value(changes['terminator'])}"
    return "the frames parse with other settings"


def diagnose_scale(cfg: ScaleConfigBase, cap: Capture) -> Diagnosis:
    """What the capture says about cfg; fixes are checked by replaying the captured bytes."""
    if cap.bytes_seen == 0:
        return _silence(cfg, cap, make_protocol(cfg).poll_command())
    sample = bytes(cap.sample)
    refused = dict(cap.refused)
    if cap.frames > 0:
        findings: list[Finding] = []
        own = replay(cfg, sample)
        if own.garbage >= max(4, own.good // 2):
            for changes, alt in alternatives(cfg):
                if "protocol" in changes:
                    continue
                s = replay(alt, sample)
                if s.good >= own.good and s.refused == 0 and s.garbage * 4 <= own.garbage:
                    cause = f"{own.garbage} bytes between frames were not part of any frame"
                    if changes.get("checksum") is True:
                        cause += ": the indicator sends a checksum byte after CR"
                    findings.append(Finding(cause, describe(changes) + " (frames are then checked)"))
                    break
        state: State = "suspect" if findings or cap.refused_total > cap.frames else "ok"
        return Diagnosis(
            state, ("frames parse: " if state == "ok" else "frames parse, but: ") + _counts(cap),
            findings, cap.bytes_seen, cap.frames, refused, cap.elapsed(),
        )
    findings = []
    parity = parity_in_bit7(sample)
    candidates: list[tuple[bytes, dict[str, Any]]] = [(sample, {})]
    if parity is not None and cfg.bytesize == 8:
        candidates.append((bytes(b & 0x7F for b in sample), {"bytesize": 7, "parity": parity}))
    own_masked = parity is not None and cfg.bytesize == 8 and replay(cfg, candidates[1][0]).value > 0
    if own_masked:
        findings.append(_parity_finding(parity or "E"))
    else:
        for data, line in candidates:
            best = best_alternative(cfg, data)
            if best is not None:
                changes = best[0] | line
                cause = _why(best[0], cfg) + (" read with the wrong parity" if line else "")
                findings.append(Finding(cause, describe(changes)))
                break
    if not findings and parity is not None and cfg.bytesize == 8:
        findings.append(_parity_finding(parity))
    if not findings and text_ratio(sample) < 0.8:
        findings.append(_baud_finding("or run `coopagent scale detect PORT` to try them"))
    if not findings:
        findings.append(
            Finding(
                f"the bytes are not {cfg.protocol} frames nor any other known protocol's",
                "run `coopagent scale detect PORT`; for a scale printing its own format use "
                'protocol = "line-regex" with a pattern',
            )
        )
    return Diagnosis(
        "unparsed", "bytes arrive but no frame parses: " + _counts(cap),
        findings, cap.bytes_seen, 0, refused, cap.elapsed(),
    )


# -- scanners ---------------------------------------------------------------------------------
def diagnose_scanner(cfg: ScannerConfig, cap: Capture) -> Diagnosis:
    """A scanner's read is any framed text, so the questions are the frame end and the line."""
    if cap.bytes_seen == 0:
        d = _silence(cfg, cap, None)
        d.findings.insert(
            0, Finding("no barcode was scanned, or the reads went elsewhere", "scan a barcode now")
        )
        return d
    sample = bytes(cap.sample)
    findings: list[Finding] = []
    parity = parity_in_bit7(sample)
    if parity is not None and cfg.bytesize == 8:
        findings.append(_parity_finding(parity))
    elif cap.frames == 0:
        seen = [s for s in _SUFFIXES if s in sample and s != cfg.suffix_bytes]
        if cfg.suffix_bytes not in sample and seen:
            found = max(seen, key=len)
            findings.append(
                Finding(
                    f"reads end with {_SUFFIXES[found]}, not with the configured suffix "
                    f"{cfg.suffix_bytes!r}",
                    f'set suffix = "{_SUFFIXES[found]}" (or --suffix \'{_SUFFIXES[found]}\')',
                )
            )
        elif cfg.prefix_bytes and cfg.prefix_bytes not in sample:
            findings.append(
                Finding(
                    f"reads do not start with the configured prefix {cfg.prefix_bytes!r}",
                    'set prefix = "" or program the prefix into the scanner',
                )
            )
        elif text_ratio(sample) < 0.8:
            findings.append(_baud_finding("or try --baudrate"))
        else:
            findings.append(
                Finding(
                    "no frame end arrived (reads longer than max_frame_bytes are dropped)",
                    "check the scanner's suffix setting and max_frame_bytes",
                )
            )
    if cap.frames == 0:
        return Diagnosis(
            "unparsed", "bytes arrive but no read is framed: " + _counts(cap),
            findings, cap.bytes_seen, 0, dict(cap.refused), cap.elapsed(),
        )
    state: State = "suspect" if findings else "ok"
    return Diagnosis(
        state, ("reads arrive: " if state == "ok" else "reads arrive, but: ") + _counts(cap),
        findings, cap.bytes_seen, cap.frames, dict(cap.refused), cap.elapsed(),
    )

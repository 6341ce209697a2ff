"""Reading a WS-Discovery ProbeMatches answer, tolerant where that is safe, explicit where not.

Tolerated (each seen from real cameras or their firmware families):
- a bare <ProbeMatch> without the <ProbeMatches> wrapper (ipycam 1.3.0, docs/cameras.md);
- the WS-Discovery 1.1 namespace (2009/01) beside the 2005/04 one ONVIF uses, and SOAP 1.1;
- XAddrs separated by newlines or tabs, not single spaces; `HTTP://` in upper case;
- missing Scopes or Types (optional for us: the ONVIF query says who the device is).
Refused with the reason (the caller lists the sender with it): XML that is not well formed,
not a SOAP envelope, a SOAP fault, no ProbeMatch, a ProbeMatch in another namespace, no
usable http(s) XAddr, Types that do not include an ONVIF device.

Parsing: xml.etree on Python 3.11's expat, which refuses entity expansion attacks (expat >=
2.4) and never fetches external entities; datagrams are at most 64 KiB.
"""

from __future__ import annotations

import xml.etree.ElementTree as ET  # noqa: S405 - see the module docstring
from dataclasses import dataclass, field

DISCOVERY_NS = (
    "http://schemas.xmlsoap.org/ws/2005/04/discovery",
    "http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01",
)
SOAP_NS = ("http://www.w3.org/2003/05/soap-envelope", "http://schemas.xmlsoap.org/soap/envelope/")
ONVIF_TYPES = ("NetworkVideoTransmitter", "Device")


class NotUnderstood(ValueError):
    """An answer that came but cannot be used; the message says what was wrong."""


@dataclass
class ProbeMatch:
    xaddrs: list[str]
    scopes: list[str] = field(default_factory=list)
    types: list[str] = field(default_factory=list)


def _split(tag: str) -> tuple[str, str]:
    if tag.startswith("{"):
        ns, _, local = tag[1:].partition("}")
        return ns, local
    return "", tag


def _child(el: ET.Element, local: str) -> ET.Element | None:
    for c in el:
        ns, name = _split(c.tag)
        if name == local and ns in DISCOVERY_NS:
            return c
    return None


def _words(el: ET.Element | None) -> list[str]:
    return (el.text or "").split() if el is not None else []  # any whitespace: newlines too


def _xaddr(raw: str) -> str | None:
    scheme, sep, rest = raw.partition("://")
    if not sep or scheme.lower() not in ("http", "https"):
        return None
    return scheme.lower() + "://" + rest


def parse_probe_matches(data: bytes) -> list[ProbeMatch]:
    try:
        root = ET.fromstring(data)  # noqa: S314 - see the module docstring
    except ET.ParseError as exc:
        raise NotUnderstood(f"not well-formed XML ({exc})") from None
    ns, local = _split(root.tag)
    if local != "Envelope" or ns not in SOAP_NS:
        raise NotUnderstood(f"not a SOAP envelope (root element {local!r} in namespace {ns!r})")
    for el in root.iter():
        if _split(el.tag)[1] == "Fault":
            reason = " ".join(t.strip() for t in el.itertext() if t.strip())
            raise NotUnderstood(f"a SOAP fault: {reason[:120]}")
    elements = [el for el in root.iter() if _split(el.tag)[1] == "ProbeMatch"]
    if not elements:
        raise NotUnderstood("no ProbeMatch in the answer")
    ours = [el for el in elements if _split(el.tag)[0] in DISCOVERY_NS]
    if not ours:
        other = _split(elements[0].tag)[0]
        raise NotUnderstood(
            f"ProbeMatch in namespace {other!r}, not WS-Discovery's ({' or '.join(DISCOVERY_NS)})"
        )
    matches: list[ProbeMatch] = []
    problems: list[str] = []
    for el in ours:
        types = _words(_child(el, "Types"))
        if types and not any(t.rpartition(":")[2] in ONVIF_TYPES for t in types):
            problems.append(f"Types {' '.join(types)!r} name no ONVIF device")
            continue
        raw = _words(_child(el, "XAddrs"))
        xaddrs = [x for x in (_xaddr(r) for r in raw) if x is not None]
        if not xaddrs:
            problems.append(
                f"XAddrs {' '.join(raw)!r} hold no http(s) address" if raw else "the ProbeMatch has no XAddrs"
            )
            continue
        matches.append(ProbeMatch(xaddrs, _words(_child(el, "Scopes")), types))
    if not matches:
        raise NotUnderstood("; ".join(problems))
    return matches

"""WS-Discovery of ONVIF cameras on the branch LAN.

Our own Probe and our own reading of the answers (drivers/camera/wsd_parse.py), not PyPI
wsdiscovery's: it drops any answer it cannot parse without a word, and a technician then
sees "no ONVIF camera answered" for a camera that did answer. Here an answer that cannot be
understood is listed with its sender and what was wrong, and the small mistakes real
cameras make are tolerated where that is safe.

A probe for NetworkVideoTransmitter answers with each camera's service addresses (XAddrs);
an ONVIF query of each then gives maker, model and serial. A camera is known by its serial,
so a camera whose DHCP address changed is found again here (find_by_serial).
"""

from __future__ import annotations

import logging
import select
import socket
import time
import uuid
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from drivers.camera.onvif_client import CameraError, OnvifInfo, query
from drivers.camera.wsd_parse import NotUnderstood, parse_probe_matches

log = logging.getLogger(__name__)

ONVIF_NS = "http://www.onvif.org/ver10/network/wsdl"
MULTICAST = "239.255.255.250"
WSD_PORT = 3702
PROBE = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
    ' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
    ' xmlns:d="http://schemas.xmlsoap.org/ws/2005/04/discovery"'
    f' xmlns:dn="{ONVIF_NS}">'
    "<s:Header><a:Action>http://schemas.xmlsoap.org/ws/2005/04/discovery/Probe</a:Action>"
    "<a:MessageID>{message_id}</a:MessageID>"
    "<a:To>urn:schemas-xmlsoap-org:ws:2005:04:discovery</a:To></s:Header>"
    "<s:Body><d:Probe><d:Types>dn:NetworkVideoTransmitter</d:Types></d:Probe></s:Body></s:Envelope>"
)


@dataclass
class Found:
    xaddr: str
    host: str
    port: int
    scopes: list[str]
    info: OnvifInfo | None = None
    error: str | None = None
    sender: str = ""

    @property
    def name(self) -> str:
        for s in self.scopes:
            if "/name/" in s:
                return s.rsplit("/name/", 1)[1]
        return ""


@dataclass
class Unreadable:
    """A device answered the probe, but its answer could not be used."""

    sender: str
    problem: str
    excerpt: str


@dataclass
class Probed:
    found: list[Found] = field(default_factory=list)
    unreadable: list[Unreadable] = field(default_factory=list)


def _excerpt(data: bytes) -> str:
    return data[:160].decode("utf-8", "replace").replace("\n", " ")


def probe(timeout_s: float = 3.0, host: str | None = None, port: int = WSD_PORT) -> Probed:
    """Send a WS-Discovery Probe for NetworkVideoTransmitter and read every answer for timeout_s.

    Multicast from each IPv4 address of this PC (not loopback addresses, as PyPI wsdiscovery
    does), or to `host` directly (a directed probe: cameras on another subnet answer it too).
    Answers that cannot be understood are kept, with the sender and what was wrong.
    """
    probe_id = f"urn:uuid:{uuid.uuid4()}"
    message = PROBE.format(message_id=probe_id).encode()
    socks: list[socket.socket] = []
    try:
        if host is not None:
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            socks.append(s)
            s.sendto(message, (host, port))
        else:
            for addr in _local_addresses():
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                try:
                    s.bind((addr, 0))
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(addr))
                    s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
                    s.sendto(message, (MULTICAST, port))
                except OSError as exc:  # an interface without multicast: the others may have cameras
                    log.info("WS-Discovery probe from %s failed: %s", addr, exc)
        return _collect(socks, timeout_s)
    finally:
        for s in socks:
            s.close()


def _local_addresses() -> list[str]:
    import ifaddr

    out = []
    for adapter in ifaddr.get_adapters():
        for ip in adapter.ips:
            if isinstance(ip.ip, str) and not ip.ip.startswith("127."):
                out.append(ip.ip)
    return out


def _collect(socks: list[socket.socket], timeout_s: float) -> Probed:
    found: dict[str, Found] = {}
    unreadable: list[Unreadable] = []
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0 and socks:
        ready, _, _ = select.select(socks, [], [], left)
        for s in ready:
            try:
                data, (sender, _port) = s.recvfrom(65536)
            except OSError:
                continue
            try:
                matches = parse_probe_matches(data)
            except NotUnderstood as exc:
                unreadable.append(Unreadable(sender, str(exc), _excerpt(data)))
                continue
            for m in matches:
                for xaddr in m.xaddrs:
                    u = urlsplit(xaddr)
                    if u.hostname and xaddr not in found:
                        found[xaddr] = Found(xaddr, u.hostname, u.port or 80, m.scopes, sender=sender)
    return Probed(sorted(found.values(), key=lambda f: (f.host, f.port)), unreadable)


def discover(
    user: str | None = None,
    password: str | None = None,
    timeout_s: float = 3.0,
    host: str | None = None,
    port: int = WSD_PORT,
) -> Probed:
    """Probe, then ask each device who it is (maker, model, serial)."""
    result = probe(timeout_s, host, port)
    for f in result.found:
        try:
            f.info = query(f.host, f.port, user, password, timeout_s=timeout_s)
        except CameraError as exc:
            f.error = str(exc)
    return result


def find_by_serial(serial: str, user: str | None, password: str | None, timeout_s: float = 3.0) -> Found | None:
    for f in discover(user, password, timeout_s).found:
        if f.info is not None and f.info.serial == serial:
            return f
    return None

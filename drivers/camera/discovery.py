"""WS-Discovery of ONVIF cameras on the branch LAN (PyPI wsdiscovery, as Home Assistant uses).

A probe for NetworkVideoTransmitter answers with each camera's service addresses (XAddrs);
an ONVIF query of each then gives maker, model and serial. A camera is known by its serial,
so a camera whose DHCP address changed is found again here (find_by_serial).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from urllib.parse import urlsplit

from drivers.camera.onvif_client import CameraError, OnvifInfo, query

log = logging.getLogger(__name__)

ONVIF_NS = "http://www.onvif.org/ver10/network/wsdl"


@dataclass
class Found:
    xaddr: str
    host: str
    port: int
    scopes: list[str]
    info: OnvifInfo | None = None
    error: str | None = None

    @property
    def name(self) -> str:
        for s in self.scopes:
            if "/name/" in s:
                return s.rsplit("/name/", 1)[1]
        return ""


def probe(timeout_s: float = 3.0) -> list[Found]:
    """Multicast a WS-Discovery Probe and collect the ONVIF devices that answer within timeout_s."""
    from wsdiscovery import QName
    from wsdiscovery.discovery import ThreadedWSDiscovery

    wsd = ThreadedWSDiscovery()
    wsd.start()
    try:
        services = wsd.searchServices(types=[QName(ONVIF_NS, "NetworkVideoTransmitter")], timeout=timeout_s)
    finally:
        wsd.stop()
    found: dict[str, Found] = {}
    for svc in services:
        for xaddr in svc.getXAddrs():
            u = urlsplit(xaddr)
            if u.hostname and xaddr not in found:
                found[xaddr] = Found(xaddr, u.hostname, u.port or 80, [str(s) for s in svc.getScopes()])
    return sorted(found.values(), key=lambda f: (f.host, f.port))


def discover(user: str | None = None, password: str | None = None, timeout_s: float = 3.0) -> list[Found]:
    """Probe, then ask each device who it is (maker, model, serial)."""
    result = probe(timeout_s)
    for f in result:
        try:
            f.info = query(f.host, f.port, user, password, timeout_s=timeout_s)
        except CameraError as exc:
            f.error = str(exc)
    return result


def find_by_serial(serial: str, user: str | None, password: str | None, timeout_s: float = 3.0) -> Found | None:
    for f in discover(user, password, timeout_s):
        if f.info is not None and f.info.serial == serial:
            return f
    return None

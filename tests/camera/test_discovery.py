"""`camera discover` lists devices whose answer could not be understood (issue 12).

A responder on real UDP sockets on the loopback answers our Probe with one datagram per case,
each from its own 127.0.0.N address so the listing's sender can be checked: a conforming
ProbeMatches, one with the mistakes we tolerate, and three we cannot use.
"""

from __future__ import annotations

import json
import re
import socket
import threading
from collections.abc import Iterator

import pytest
from click.testing import CliRunner

from agent.cli.main import cli
from drivers.camera.discovery import probe
from drivers.camera.wsd_parse import NotUnderstood, parse_probe_matches

D05 = "http://schemas.xmlsoap.org/ws/2005/04/discovery"


def envelope(body: str, relates: str = "urn:uuid:x", d: str = D05) -> bytes:
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        '<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"'
        ' xmlns:a="http://schemas.xmlsoap.org/ws/2004/08/addressing"'
        f' xmlns:d="{d}" xmlns:dn="http://www.onvif.org/ver10/network/wsdl">'
        f"<s:Header><a:Action>{D05}/ProbeMatches</a:Action><a:RelatesTo>{relates}</a:RelatesTo></s:Header>"
        f"<s:Body>{body}</s:Body></s:Envelope>"
    ).encode()


GOOD = (
    "<d:ProbeMatches><d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types>"
    "<d:Scopes>onvif://www.onvif.org/name/Dock onvif://www.onvif.org/type/video_encoder</d:Scopes>"
    "<d:XAddrs>http://127.0.0.7:1/onvif/device_service</d:XAddrs></d:ProbeMatch></d:ProbeMatches>"
)
# no ProbeMatches wrapper, no Scopes, XAddrs on two lines, scheme in upper case
SLOPPY = (
    "<d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types>"
    "<d:XAddrs>\n  HTTP://127.0.0.8:1/onvif/device_service\n\tftp://127.0.0.8/x\n</d:XAddrs></d:ProbeMatch>"
)
NO_XADDRS = (
    "<d:ProbeMatches><d:ProbeMatch><d:Types>dn:NetworkVideoTransmitter</d:Types></d:ProbeMatch></d:ProbeMatches>"
)
WRONG_NS = GOOD


def answers() -> list[tuple[str, bytes]]:
    return [
        ("127.0.0.2", envelope(GOOD)),
        ("127.0.0.3", envelope(SLOPPY)),
        ("127.0.0.4", envelope(GOOD)[:-40]),  # cut off: a datagram truncated by a buggy stack
        ("127.0.0.5", envelope(NO_XADDRS)),
        ("127.0.0.6", envelope(WRONG_NS, d="http://example.com/discovery")),
    ]


@pytest.fixture
def responder() -> Iterator[tuple[int, list[bytes]]]:
    """Answers each Probe it receives with every case, each sent from its own loopback address."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", 0))
    sock.settimeout(0.1)
    probes: list[bytes] = []
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                data, peer = sock.recvfrom(65536)
            except TimeoutError:
                continue
            probes.append(data)
            for addr, payload in answers():
                with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as out:
                    out.bind((addr, 0))
                    out.sendto(payload, peer)

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    yield sock.getsockname()[1], probes
    stop.set()
    t.join(timeout=5)
    sock.close()


def test_probe_lists_good_tolerated_and_unreadable_answers(responder: tuple[int, list[bytes]]) -> None:
    port, probes = responder
    result = probe(timeout_s=1.0, host="127.0.0.1", port=port)
    assert len(probes) == 1 and b"NetworkVideoTransmitter" in probes[0] and b"<d:Probe>" in probes[0]
    assert [(f.xaddr, f.host, f.port, f.sender) for f in result.found] == [
        ("http://127.0.0.7:1/onvif/device_service", "127.0.0.7", 1, "127.0.0.2"),
        ("http://127.0.0.8:1/onvif/device_service", "127.0.0.8", 1, "127.0.0.3"),
    ]
    assert result.found[0].name == "Dock" and result.found[1].scopes == []
    bad = {u.sender: u.problem for u in result.unreadable}
    assert bad.keys() == {"127.0.0.4", "127.0.0.5", "127.0.0.6"}
    assert bad["127.0.0.4"].startswith("not well-formed XML")
    assert bad["127.0.0.5"] == "the ProbeMatch has no XAddrs"
    assert "namespace 'http://example.com/discovery'" in bad["127.0.0.6"]


@pytest.mark.slow
def test_discover_cli_lists_what_was_wrong(responder: tuple[int, list[bytes]]) -> None:
    """The human listing names each unreadable sender with its problem, not 'no camera answered';
    the cameras found are queried (nothing listens on 127.0.0.7:1 and .8:1: each shows its ONVIF error)."""
    port, _ = responder
    args = ["camera", "discover", "--host", "127.0.0.1", "--port", str(port), "--timeout", "1"]
    r = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert "no ONVIF camera answered" not in r.output
    assert re.search(r"^127\.0\.0\.5 +answered, but not understood: the ProbeMatch has no XAddrs$", r.output, re.M)
    assert re.search(r"^127\.0\.0\.4 +answered, but not understood: not well-formed XML", r.output, re.M)
    assert re.search(r"^127\.0\.0\.8:1 +\? \(", r.output, re.M)  # found, ONVIF query refused
    r = CliRunner().invoke(cli, [*args, "--json"], catch_exceptions=False)
    doc = json.loads(r.output)
    assert len(doc["cameras"]) == 2 and len(doc["not_understood"]) == 3


@pytest.mark.parametrize(
    ("data", "problem"),
    [
        (b"<not xml", "not well-formed XML"),
        (b"<html><body>hello</body></html>", "not a SOAP envelope"),
        (
            b'<s:Envelope xmlns:s="http://www.w3.org/2003/05/soap-envelope"><s:Body><s:Fault>'
            b"<s:Reason><s:Text>busy</s:Text></s:Reason></s:Fault></s:Body></s:Envelope>",
            "a SOAP fault: busy",
        ),
        (envelope(""), "no ProbeMatch in the answer"),
        (envelope(GOOD.replace("dn:NetworkVideoTransmitter", "p:Printer")), "Types 'p:Printer' name no ONVIF device"),
        (envelope(GOOD.replace("http://127.0.0.7:1", "rtsp://127.0.0.7")), "hold no http(s) address"),
    ],
)
def test_parser_refusals_say_what_was_wrong(data: bytes, problem: str) -> None:
    with pytest.raises(NotUnderstood, match=re.escape(problem)):
        parse_probe_matches(data)


def test_parser_accepts_ws_discovery_1_1_and_soap_1_1() -> None:
    data = envelope(GOOD, d="http://docs.oasis-open.org/ws-dd/ns/discovery/2009/01").replace(
        b"http://www.w3.org/2003/05/soap-envelope", b"http://schemas.xmlsoap.org/soap/envelope/"
    )
    assert parse_probe_matches(data)[0].xaddrs == ["http://127.0.0.7:1/onvif/device_service"]

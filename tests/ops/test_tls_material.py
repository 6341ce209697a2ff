"""tests.peers.tls against a real Mosquitto with require_certificate: the good client cert
is accepted, one from another CA is refused, and the broker presents a cert for 127.0.0.1."""

from __future__ import annotations

import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.reasoncodes import ReasonCode

from tests.peers.mosquitto import Mosquitto, TlsFiles
from tests.peers.net import wait_for
from tests.peers.tls import TlsMaterial, make_tls_material


@pytest.fixture
def material(tmp_path: Path) -> TlsMaterial:
    return make_tls_material(tmp_path / "tls")


@pytest.fixture
def tls_broker(tmp_path: Path, material: TlsMaterial) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosquitto",
                       tls=TlsFiles(material.ca_cert, material.server_cert, material.server_key)).start()
    try:
        yield broker
    finally:
        broker.stop()


def _connect(broker: Mosquitto, ca: Path, cert: Path | None, key: Path | None) -> tuple[bool, str]:
    """Connect with MQTT 5 over TLS; (connected, what happened) once CONNACK or an error came."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="tls-test", protocol=mqtt.MQTTv5)
    c.tls_set(ca_certs=str(ca), certfile=str(cert) if cert else None, keyfile=str(key) if key else None)
    done = threading.Event()
    outcome: list[tuple[bool, str]] = []

    def on_connect(client: mqtt.Client, userdata: object, flags: object, rc: ReasonCode,
                   props: object = None) -> None:
        outcome.append((not rc.is_failure, str(rc)))
        done.set()

    c.on_connect = on_connect
    try:
        c.connect("127.0.0.1", broker.port, keepalive=10)
        for _ in range(100):  # bounded: each loop() waits at most 0.1 s for the socket
            rc = c.loop(timeout=0.1)
            if done.is_set():
                break
            if rc != mqtt.MQTT_ERR_SUCCESS:
                return False, f"connection lost: {mqtt.error_string(rc)}"
    except (ssl.SSLError, OSError) as exc:
        return False, f"{type(exc).__name__}: {exc}"
    finally:
        sock = c.socket()
        c.disconnect()
        if sock is not None:
            sock.close()
    return outcome[0] if outcome else (False, "no CONNACK")


def test_files_exist_and_keys_are_private(material: TlsMaterial) -> None:
    for f in (material.ca_key, material.server_key, material.client_key, material.rogue_client_key):
        assert stat.S_IMODE(f.stat().st_mode) == 0o600, f
    for f in (material.ca_cert, material.server_cert, material.client_cert, material.rogue_client_cert):
        assert f.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")


def test_good_client_certificate_is_accepted(tls_broker: Mosquitto, material: TlsMaterial) -> None:
    ok, what = _connect(tls_broker, material.ca_cert, material.client_cert, material.client_key)
    assert ok, what


def test_client_certificate_from_another_ca_is_refused(tls_broker: Mosquitto, material: TlsMaterial) -> None:
    ok, what = _connect(tls_broker, material.ca_cert, material.rogue_client_cert, material.rogue_client_key)
    assert not ok, what
    # Mosquitto logs after it sent the alert, so the client can be first: wait for the line.
    wait_for(lambda: "certificate verify failed" in tls_broker.log_text(), timeout=10,
             what="mosquitto to log the failed verification")


def test_no_client_certificate_is_refused(tls_broker: Mosquitto, material: TlsMaterial) -> None:
    ok, what = _connect(tls_broker, material.ca_cert, None, None)
    assert not ok, what
    wait_for(lambda: "peer did not return a certificate" in tls_broker.log_text(), timeout=10,
             what="mosquitto to log the missing certificate")


def _handshake(port: int, ca: Path, server_hostname: str) -> str:
    """A bare TLS handshake with Python's ssl (paho leaks its socket when the handshake fails)."""
    ctx = ssl.create_default_context(cafile=str(ca))
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=5) as raw, \
                ctx.wrap_socket(raw, server_hostname=server_hostname) as tls:
            return f"ok {tls.version()}"
    except ssl.SSLCertVerificationError as exc:
        return f"refused: {exc.verify_message}"


def test_broker_certificate_names_loopback_and_chains_only_to_the_test_ca(
        tls_broker: Mosquitto, material: TlsMaterial) -> None:
    assert _handshake(tls_broker.port, material.ca_cert, "127.0.0.1").startswith("ok")
    assert _handshake(tls_broker.port, material.ca_cert, "localhost").startswith("ok")
    assert "Hostname mismatch" in _handshake(tls_broker.port, material.ca_cert, "broker.example")
    assert _handshake(tls_broker.port, material.rogue_ca_cert, "127.0.0.1").startswith("refused")

"""mqtts with a client certificate: the receiver connects and subscribes; a certificate from another CA
is refused with a message that says so, before start() returns."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.config import ReceiverConfig
from receiver.mqtt import MqttError, publish_once
from receiver.server import Receiver
from tests.peers.mosquitto import Mosquitto, TlsFiles
from tests.peers.tls import TlsMaterial, make_tls_material
from tests.receiver.helpers import DeviceSim, make_central


@pytest.fixture
def tls(tmp_path: Path) -> TlsMaterial:
    return make_tls_material(tmp_path / "tls", client_cn="coop-receiver")


@pytest.fixture
def tls_broker(tmp_path: Path, tls: TlsMaterial) -> Iterator[Mosquitto]:
    broker = Mosquitto(tmp_path / "mosq", tls=TlsFiles(tls.ca_cert, tls.server_cert, tls.server_key)).start()
    try:
        yield broker
    finally:
        broker.stop()


def config(tmp_path: Path, url: str, ca: Path, cert: Path, key: Path) -> ReceiverConfig:
    make_central(tmp_path)
    dev = DeviceSim("soc-a/branch-1/agent-1")
    return ReceiverConfig.model_validate(
        {
            "receiver": {
                "db": str(tmp_path / "rx.sqlite3"),
                "broker": url,
                "key_file": str(tmp_path / "central_key.pem"),
                "media_dir": str(tmp_path / "media"),
                "ca_file": str(ca),
                "cert_file": str(cert),
                "client_key_file": str(key),
            },
            "devices": [{"id": dev.dev, "public_key": str(dev.write_public(tmp_path / "dev.pem"))}],
        }
    )


def test_client_certificate_connects(tmp_path: Path, tls: TlsMaterial, tls_broker: Mosquitto) -> None:
    cfg = config(tmp_path, tls_broker.url, tls.ca_cert, tls.client_cert, tls.client_key)
    assert cfg.receiver.tls and cfg.receiver.port == tls_broker.port
    rx = Receiver(cfg).start()  # returns only once the broker granted the subscriptions
    try:
        rx.send_command("soc-a/branch-1/agent-1", "ping", {})
        publish_once(cfg.receiver, "coop/v1/soc-a/branch-1/agent-1/cmd", b"x", "rx-cli-test", 10)
    finally:
        rx.stop()


@pytest.mark.slow
def test_certificate_of_another_ca_is_refused_clearly(tmp_path: Path, tls: TlsMaterial, tls_broker: Mosquitto) -> None:
    cfg = config(tmp_path, tls_broker.url, tls.ca_cert, tls.rogue_client_cert, tls.rogue_client_key)
    with pytest.raises(MqttError, match="refused cert_file"):
        publish_once(cfg.receiver, "coop/v1/soc-a/branch-1/agent-1/cmd", b"x", "rx-cli-rogue", 5)
    with pytest.raises(MqttError, match=f"127.0.0.1:{tls_broker.port}: .*refused cert_file"):
        Receiver(cfg).start()

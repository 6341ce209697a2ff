"""The broker fixture itself: a real Mosquitto that accepts a connection and restarts."""

from __future__ import annotations

from tests.peers.mosquitto import Mosquitto
from tests.peers.net import port_open


def test_broker_listens_and_restarts(mosquitto: Mosquitto) -> None:
    assert port_open(mosquitto.port)
    mosquitto.restart()
    assert port_open(mosquitto.port)

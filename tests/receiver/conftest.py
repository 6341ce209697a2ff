"""Fixtures for the receiver's tests: a central key, registered devices and a running Receiver."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.config import load_receiver_config
from receiver.server import Receiver
from tests.peers.mosquitto import Mosquitto
from tests.receiver.helpers import AgentSide, DeviceSim, write_config


@pytest.fixture
def devices() -> list[DeviceSim]:
    return [DeviceSim("soc-a/branch-1/agent-1"), DeviceSim("soc-a/branch-2/agent-1")]


@pytest.fixture
def rx_config(tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim]) -> Path:
    return write_config(tmp_path, mosquitto.url, devices, extra="media_idle_s = 0.5\nresend_interval_s = 0.5")


@pytest.fixture
def receiver(rx_config: Path) -> Iterator[Receiver]:
    rx = Receiver(load_receiver_config(rx_config)).start()
    try:
        yield rx
    finally:
        rx.stop()


@pytest.fixture
def agent(mosquitto: Mosquitto) -> Iterator[AgentSide]:
    a = AgentSide(mosquitto.port)
    try:
        yield a
    finally:
        a.close()

"""Fixtures for the receiver's tests: a central key, registered devices and a running Receiver.

The store: SQLite by default. A module that sets `STORES = ("sqlite", "postgresql")` runs each of
its tests that use the receiver (or `store_toml`) against both, so PostgreSQL passes the same
behaviour tests. PostgreSQL is a real server (tests/peers/postgres.py), one per module, with a
fresh database per test.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from receiver.config import load_receiver_config
from receiver.server import Receiver
from tests.peers.mosquitto import Mosquitto
from tests.peers.postgres import Postgres
from tests.peers.postgres import available as postgres_available
from tests.receiver.helpers import AgentSide, DeviceSim, write_config


@pytest.fixture
def devices() -> list[DeviceSim]:
    return [DeviceSim("soc-a/branch-1/agent-1"), DeviceSim("soc-a/branch-2/agent-1")]


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    marked = any("store_kind" in str(m.args[0]) for m in metafunc.definition.iter_markers("parametrize"))
    if "store_kind" in metafunc.fixturenames and not marked:  # a test may choose its stores itself
        metafunc.parametrize("store_kind", getattr(metafunc.module, "STORES", ("sqlite",)), indirect=True)


@pytest.fixture(scope="module")
def pg_server() -> Iterator[Postgres]:
    if not postgres_available():
        pytest.fail("PostgreSQL 15 is missing: /usr/lib/postgresql/15/bin (Debian package postgresql-15)")
    pg = Postgres().start()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture
def store_kind(request: pytest.FixtureRequest) -> str:
    return str(getattr(request, "param", "sqlite"))


@pytest.fixture
def store_toml(store_kind: str, tmp_path: Path, request: pytest.FixtureRequest) -> str:
    """The [receiver] lines that choose the store: nothing for SQLite, a fresh database for PostgreSQL."""
    if store_kind == "sqlite":
        return ""
    pg: Postgres = request.getfixturevalue("pg_server")
    (tmp_path / "pg.password").write_text(pg.password + "\n")
    return f'database_url = "{pg.url(pg.new_database(), with_password=False)}"\ndatabase_password_file = "pg.password"'


@pytest.fixture
def rx_config(tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str) -> Path:
    return write_config(
        tmp_path, mosquitto.url, devices, extra=f"media_idle_s = 0.5\nresend_interval_s = 0.5\n{store_toml}"
    )


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

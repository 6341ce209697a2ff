"""What only the PostgreSQL store has: acks held while the server is down, migrations, monthly partitions.

Everything runs against a real PostgreSQL 15 (tests/peers/postgres.py, one server for this
module, a fresh database per test); the behaviour both stores share is tested by the
modules that set STORES (test_chain, test_rejections, test_media, test_restart, test_writer).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import tomllib
from pathlib import Path

import psycopg
import pytest

from receiver import pg as pgstore
from receiver.config import ConfigError, ReceiverConfig, load_receiver_config, parse_receiver_config
from receiver.database import open_database
from receiver.keys import DeviceRegistry, load_central_key
from receiver.pg import PgDatabase, migrate, month_start, partition_name
from receiver.server import Receiver
from receiver.store import ReceiverStore
from receiver.writer import Writer
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.peers.postgres import Postgres
from tests.receiver.helpers import AgentSide, DeviceSim

STORES = ("postgresql",)


def connect(pg: Postgres, cfg: ReceiverConfig) -> psycopg.Connection[tuple[object, ...]]:
    url = cfg.receiver.database_url
    assert url is not None
    return psycopg.connect(url, password=pg.password, autocommit=True)


def test_no_ack_while_postgres_is_down_and_one_after_it_returns(
    rx_config: Path, pg_server: Postgres, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """A batch that cannot be committed is never acked (the ack promises the agent it may forget the
    batch). The worker keeps the group and retries; once PostgreSQL is back it reconnects, commits and
    acks, and the agent's resend of the same bytes is acked again without being stored twice."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    with Receiver(cfg) as rx:
        agent.publish("batch", dev.dev, dev.next_batch(2))
        agent.wait_ack(central, dev.dev, 1)
        pg_server.stop()
        try:
            b2 = dev.next_batch(3)
            agent.publish("batch", dev.dev, b2)
            commits = rx.commits
            wait_for(lambda: rx.last_error is not None, timeout=20, what="the commit to fail")
            assert rx.commits == commits
            assert not any(a.get("seq", 0) >= 2 for a in agent.decoded(central, "ack")), "acked without a commit"
        finally:
            pg_server.start()
        agent.wait_ack(central, dev.dev, 2, timeout=60)  # the retry reconnects (backoff 0.5 .. 30 s)
        acks_before = len(agent.decoded(central, "ack"))
        agent.publish("batch", dev.dev, b2)  # the agent sends it again (it missed nothing, but may)
        wait_for(lambda: len(agent.decoded(central, "ack")) > acks_before, what="the re-ack")
        assert agent.decoded(central, "ack")[-1]["seq"] == 2
        wait_for(lambda: rx.last_error is None, what="the error cleared")
    with ReceiverStore(cfg.receiver) as s:
        st = s.device_state(dev.dev)
        assert s.record_count(dev.dev) == 5 and len(s.records(dev.dev)) == 5
        assert st["acked_seq"] == 2 and st["chain_breaks"] == 0 and st["duplicate_record_ids"] == 0


def test_unique_keys_hold_in_the_database_itself(
    rx_config: Path, pg_server: Postgres, agent: AgentSide, devices: list[DeviceSim]
) -> None:
    """Idempotency does not rest on the writer's checks alone: (did, seq) and (did, id) are unique keys,
    so a second writer (a later receiver process) cannot store a batch or a record id twice."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    central = load_central_key(cfg.receiver.key_file).public_key()
    with Receiver(cfg):
        agent.publish("batch", dev.dev, dev.next_batch(2))
        agent.wait_ack(central, dev.dev, 1)
    with connect(pg_server, cfg) as conn:
        did, seq, rid = conn.execute("SELECT r.did, r.seq, r.id FROM records r LIMIT 1").fetchone() or (0, 0, "")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute(
                "INSERT INTO batches (did, seq, hash, sealed, n_records, received_at, cose) "
                "SELECT did, seq, hash, sealed, n_records, received_at, cose FROM batches WHERE did = %s",
                (did,),
            )
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("INSERT INTO record_keys (did, id) VALUES (%s, %s)", (did, rid))
        assert seq == 1


def test_migrations_are_recorded_once_and_a_newer_schema_is_refused(rx_config: Path, pg_server: Postgres) -> None:
    cfg = load_receiver_config(rx_config)
    errors: list[BaseException] = []

    def open_writer() -> None:
        try:
            open_database(cfg.receiver, writer=True).close()
        except BaseException as exc:  # collected: a thread's exception would be lost
            errors.append(exc)

    threads = [threading.Thread(target=open_writer) for _ in range(3)]  # several receivers starting at once
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert errors == []
    with connect(pg_server, cfg) as conn:
        rows = conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall()
        assert [r[0] for r in rows] == [v for v, _, _ in pgstore.MIGRATIONS]
        conn.execute("INSERT INTO schema_version (version, description) VALUES (%s, 'from the future')", (99,))
    with pytest.raises(RuntimeError, match="newer than this receiver"):
        open_database(cfg.receiver, writer=True)


def test_a_failing_migration_leaves_nothing_behind(
    rx_config: Path, pg_server: Postgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each migration is one transaction: a statement that fails half-way undoes the ones before it."""
    cfg = load_receiver_config(rx_config)
    open_database(cfg.receiver, writer=True).close()
    last = pgstore.SCHEMA_VERSION
    broken = (last + 1, "a table, then an error", "CREATE TABLE half_done (a INTEGER); SELECT 1 / 0")
    monkeypatch.setattr(pgstore, "MIGRATIONS", [*pgstore.MIGRATIONS, broken])
    monkeypatch.setattr(pgstore, "SCHEMA_VERSION", last + 1)
    with connect(pg_server, cfg) as conn:
        with pytest.raises(psycopg.errors.DivisionByZero):
            migrate(conn)
        assert conn.execute("SELECT to_regclass('half_done')").fetchone() == (None,)
        assert conn.execute("SELECT max(version) FROM schema_version").fetchone() == (last,)


def month_after(ms: int, months: int) -> int:
    y, m = pgstore.month_of(ms, months)
    return month_start(y, m)


def test_records_land_in_their_months_partition_made_ahead(
    rx_config: Path, pg_server: Postgres, devices: list[DeviceSim], caplog: pytest.LogCaptureFixture
) -> None:
    """The writer makes last month's, this month's and the next two months' partitions; a record goes to the month of
    its `at`, and one whose clock was far off goes to the DEFAULT partition instead of failing."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    now = int(dt.datetime.now(tz=dt.UTC).timestamp() * 1000)
    db = open_database(cfg.receiver, writer=True)
    assert isinstance(db, PgDatabase)
    w = Writer(db, DeviceRegistry(cfg), 10)
    far = month_after(now, 5) + 1000  # five months ahead: no partition yet
    recs = [dev.record() for _ in range(3)]
    recs[0]["at"], recs[1]["at"], recs[2]["at"] = now, month_after(now, 1), far
    w.begin()
    w.on_batch(dev.dev, "t", dev.next_batch(records=recs))
    w.commit()
    with connect(pg_server, cfg) as conn:
        made = {r[0] for r in conn.execute("SELECT tablename FROM pg_tables WHERE tablename LIKE 'records_p%'")}
        expect = {partition_name(*pgstore.month_of(now, k)) for k in range(-1, pgstore.MONTHS_AHEAD + 1)}
        assert made == expect
        where = dict(conn.execute("SELECT id, tableoid::regclass::text FROM records").fetchall())
    assert where == {
        recs[0]["id"]: partition_name(*pgstore.month_of(now)),
        recs[1]["id"]: partition_name(*pgstore.month_of(now, 1)),
        recs[2]["id"]: "records_default",
    }
    # Five months on, the writer makes that month's partition; the month whose row already sits in
    # DEFAULT is refused by PostgreSQL, logged once, and the store goes on working.
    with caplog.at_level(logging.WARNING, logger="receiver.pg"):
        db.maintain(month_after(now, 3))
    assert any("not made" in r.getMessage() for r in caplog.records)
    w.begin()
    w.on_batch(dev.dev, "t", dev.next_batch(1))
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        assert s.record_count(dev.dev) == 4
    db.close()


def test_database_url_is_checked_and_names_the_key(tmp_path: Path) -> None:
    def load(text: str) -> ReceiverConfig:
        return parse_receiver_config(tomllib.loads("[receiver]\n" + text), tmp_path / "rx.toml")

    for bad, key, says in [
        ('database_url = "postgresql://u:secret@h/db"', "database_url", "use database_password_file"),
        ('database_url = "mysql://u@h/db"', "database_url", "postgresql://USER@HOST"),
        ('database_url = "postgresql://u@h"', "database_url", "name the database"),
        ('database_password_file = "pw"', "receiver", "needs database_url"),
    ]:
        with pytest.raises(ConfigError) as err:
            load(bad)
        msg = str(err.value)
        assert key in msg and says in msg and "secret" not in msg, msg
    cfg = load('database_url = "postgresql://u@h:5433/db"\ndatabase_password_file = "pw"')
    assert cfg.receiver.database_password_file == tmp_path / "pw"
    (tmp_path / "pw").write_text("s3cret\n")
    assert cfg.receiver.database_password() == "s3cret"


def test_an_unreachable_postgres_is_one_line_and_exit_2(tmp_path: Path, mosquitto: Mosquitto) -> None:
    """`status` (and `run`) against a PostgreSQL that is not there: the operator reads where it was
    looked for, with no traceback and no password."""
    from click.testing import CliRunner

    from receiver.cli import cli
    from tests.peers.net import free_port
    from tests.receiver.helpers import write_config

    (tmp_path / "pw").write_text("not-shown-anywhere\n")
    port = free_port()  # nothing listens there
    cfg = write_config(
        tmp_path,
        mosquitto.url,
        [DeviceSim("soc-a/branch-1/agent-1")],
        extra=f'database_url = "postgresql://coop@127.0.0.1:{port}/coop"\ndatabase_password_file = "pw"',
    )
    for cmd in ("status", "run"):
        r = CliRunner().invoke(cli, [cmd, "--config", str(cfg)])
        assert r.exit_code == 2, (cmd, r.output)
        assert f"error: cannot connect to PostgreSQL at 127.0.0.1:{port}/coop" in r.stderr
        assert "not-shown-anywhere" not in r.stderr and "Traceback" not in r.stderr


def test_the_signed_bytes_are_compressed_with_lz4(
    rx_config: Path, pg_server: Postgres, devices: list[DeviceSim]
) -> None:
    """Migration 5: a stored batch's bytes (TOASTed above ~2 KB) use lz4, which costs a quarter of pglz's CPU."""
    cfg = load_receiver_config(rx_config)
    dev = devices[0]
    w = Writer(open_database(cfg.receiver, writer=True), DeviceRegistry(cfg), 10)
    w.begin()
    w.on_batch(dev.dev, "t", dev.next_batch(200))
    w.commit()
    w.db.close()
    with connect(pg_server, cfg) as conn:
        row = conn.execute("SELECT pg_column_compression(cose), length(cose) FROM batches").fetchone()
        assert row is not None and row[1] > 20_000
        assert row[0] == "lz4"

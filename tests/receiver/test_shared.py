"""Several receivers sharing one subscription ($share/GROUP/...), one PostgreSQL: the database is the point of order.

Real Mosquitto 2.0 (it deals a shared subscription's messages to its members in turn, so one
device's batches reach different receivers out of order) and a real PostgreSQL 15.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest

from receiver.config import ConfigError, load_receiver_config, parse_receiver_config
from receiver.keys import load_central_key
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.peers.postgres import Postgres
from tests.receiver.fleet import ReceiverProcess, ResendingAgents, check_chain, make_batches, receiver_configs
from tests.receiver.helpers import AgentSide, DeviceSim, write_config

STORES = ("postgresql",)


def shared_config(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, **extra: object
) -> Path:
    """A receiver config in the shared group "centre" (its session short, as the config demands)."""
    lines = {"shared_group": '"centre"', "session_expiry_s": "60", "resend_interval_s": "30", "media_idle_s": "0.5"}
    lines.update({k: str(v) for k, v in extra.items()})
    body = "\n".join(f"{k} = {v}" for k, v in lines.items())
    return write_config(tmp_path, mosquitto.url, devices, extra=f"{body}\n{store_toml}")


def test_shared_group_is_validated() -> None:
    with pytest.raises(ConfigError, match="shared_group"):
        parse_receiver_config({"receiver": {"shared_group": "a/b", "session_expiry_s": 60}})
    with pytest.raises(ConfigError, match="session_expiry_s must be at most 600"):
        parse_receiver_config({"receiver": {"shared_group": "centre"}})  # the default keeps a session 7 days
    cfg = parse_receiver_config({"receiver": {"shared_group": "centre", "session_expiry_s": 120}})
    assert cfg.receiver.shared_group == "centre"


def test_two_receivers_take_turns_and_a_batch_before_its_predecessor_waits_for_it(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """Seq 2 and 3 are published before seq 1, by hand, to two receivers sharing the subscription.

    Whichever receiver gets them holds them (in the database: the other receiver must see them);
    when seq 1 lands, on either receiver, it stores 1 and then the held 2 and 3, checking their
    chain links then, and acks 3. Both receivers took messages (Mosquitto deals in turn), no
    resend was asked for (the gap was short), and the stored chain is the one sent.
    """
    a, b = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml), 2)
    dev = devices[0]
    sent = [dev.next_batch(3) for _ in range(3)]
    cfg = load_receiver_config(a)
    central = load_central_key(cfg.receiver.key_file).public_key()
    with Receiver(cfg) as rx_a, Receiver(load_receiver_config(b)) as rx_b:
        assert rx_a.subscriptions()[0] == "$share/centre/coop/v1/+/+/+/batch"
        agent.publish("batch", dev.dev, sent[1])
        agent.publish("batch", dev.dev, sent[2])
        with ReceiverStore(cfg.receiver) as s:
            wait_for(lambda: s.device_state(dev.dev).get("held_batches") == 2, what="seq 2 and 3 held")
            assert s.device_state(dev.dev)["acked_seq"] == 0
        assert rx_a.commits >= 1 and rx_b.commits >= 1, "the shared subscription did not deal to both"
        agent.publish("batch", dev.dev, sent[0])
        agent.wait_ack(central, dev.dev, 3)
        assert not agent.decoded(central, "cmd"), "a resend was asked for a gap that was only reordering"
    with ReceiverStore(cfg.receiver) as s:
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 3 and st["held_batches"] == 0 and st["chain_breaks"] == 0 and not st["gaps"]
        check_chain(s.batch_bytes(dev.dev), sent)
        assert s.record_count(dev.dev) == 9


def test_concurrent_writers_neither_both_extend_nor_both_break_a_chain(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, pg_server: Postgres
) -> None:
    """Two receivers in one process (two writers, two connections) drain the same devices' batches,
    published all at once and dealt in turn: every batch is stored once, in chain order, whatever
    order the two transactions take the devices' row locks in."""
    a, b = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml), 2)
    cfg = load_receiver_config(a)
    central = load_central_key(cfg.receiver.key_file).public_key()
    sent = make_batches(devices, 40, 5)
    with Receiver(cfg) as rx_a, Receiver(load_receiver_config(b)) as rx_b:
        agents = ResendingAgents(mosquitto.port, central, sent, window=40, resend_after=5.0)
        try:
            agents.run_until_done(timeout=90)
        finally:
            agents.close()
        assert rx_a.commits and rx_b.commits
    with ReceiverStore(cfg.receiver) as s:
        for d in devices:
            st = s.device_state(d.dev)
            assert st["chain_breaks"] == 0 and st["duplicate_record_ids"] == 0 and st["held_batches"] == 0
            check_chain(s.batch_bytes(d.dev), sent[d.dev])
            assert s.record_count(d.dev) == 200 and len(s.records(d.dev)) == 200


def test_a_batch_resent_with_the_same_bytes_is_acked_again_without_a_second_check(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """The screener finds the bytes' hash stored and the worker re-acks it: the verifier never sees it."""
    cfg = load_receiver_config(shared_config(tmp_path, mosquitto, devices, store_toml))
    central = load_central_key(cfg.receiver.key_file).public_key()
    dev = devices[0]
    b1 = dev.next_batch(3)
    with Receiver(cfg) as rx:
        agent.publish("batch", dev.dev, b1)
        agent.wait_ack(central, dev.dev, 1)
        submitted = []
        real_submit = rx.verifier.submit
        rx.verifier.submit = lambda job: submitted.append(job) or real_submit(job)  # type: ignore[method-assign]
        n = len(agent.decoded(central, "ack"))
        agent.publish("batch", dev.dev, b1)
        wait_for(lambda: len(agent.decoded(central, "ack")) > n, what="the ack again")
        assert agent.decoded(central, "ack")[-1]["seq"] == 1
        assert rx.screener.skipped == 1 and rx.writer.known == 1 and not submitted
        b2 = dev.next_batch(3)  # new bytes are verified as ever
        agent.publish("batch", dev.dev, b2)
        agent.wait_ack(central, dev.dev, 2)
        assert len(submitted) == 1


@pytest.mark.slow
def test_a_receiver_killed_mid_load_loses_nothing_and_stores_nothing_twice(
    tmp_path: Path, mosquitto: Mosquitto, store_toml: str
) -> None:
    """Three `coop-receiver run` processes share the subscription; one is SIGKILLed mid-load and never
    comes back. What it had taken but not committed is not PUBACKed; what Mosquitto keeps dealing to
    its session until it expires is held hostage there. The agents' resends (no ack progress, and the
    centre's resend command for the gap the missing batch opens) reach the two live receivers, so
    every batch of every device is stored exactly once and every chain verifies."""
    devices = [DeviceSim(f"soc-a/branch-{i}/agent-1") for i in range(4)]
    cfgs = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml, resend_interval_s=1.0), 3)
    cfg = load_receiver_config(cfgs[0])
    central = load_central_key(cfg.receiver.key_file).public_key()
    sent = make_batches(devices, 30, 100)
    rxs = [ReceiverProcess(c, tmp_path / f"rx-{i}.log") for i, c in enumerate(cfgs)]
    agents = ResendingAgents(mosquitto.port, central, sent, window=4, resend_after=2.0)
    try:
        wait_for(lambda: agents.pump() or sum(agents.acked.values()) >= 30, timeout=60, what="a quarter acked")
        rxs[1].kill()
        agents.run_until_done(timeout=150)
    finally:
        agents.close()
        for r in rxs:
            r.stop()
    with ReceiverStore(cfg.receiver) as s:
        for d in devices:
            st = s.device_state(d.dev)
            assert st["chain_breaks"] == 0 and st["duplicate_record_ids"] == 0, st
            check_chain(s.batch_bytes(d.dev), sent[d.dev])
            assert s.record_count(d.dev) == 3000 and len(s.records(d.dev)) == 3000


@pytest.mark.slow
def test_sigterm_under_a_flood_exits_within_10_s_and_loses_nothing_acked(
    tmp_path: Path, mosquitto: Mosquitto, store_toml: str, pg_server: Postgres
) -> None:
    """Issue 10's storm: `coop-receiver` ignored SIGTERM, its MQTT thread blocked putting into the full
    inbox while stop() waited for it. Flooded (hundreds of batches queued at the broker for it, its
    queues full), it must exit within 10 s; every seq it acked is in the database; and a receiver
    started again with the same session drains the rest, each batch stored once."""
    devices = [DeviceSim(f"soc-a/branch-{i}/agent-1") for i in range(3)]
    base = shared_config(tmp_path, mosquitto, devices, store_toml, receive_maximum=1000)
    cfg = load_receiver_config(base)
    central = load_central_key(cfg.receiver.key_file).public_key()
    sent = make_batches(devices, 120, 200)
    rx = ReceiverProcess(base, tmp_path / "rx-0.log")
    agents = ResendingAgents(mosquitto.port, central, sent, window=120, resend_after=600)
    try:
        agents.pump()  # 360 batches, 72,000 records at once
        wait_for(lambda: sum(agents.acked.values()) >= 10, timeout=60, what="the first acks")
        elapsed = rx.terminate(timeout=10)
        assert rx.proc.returncode == 0, rx.log()[-3000:]
        print(f"SIGTERM under a flood: exited in {elapsed:.2f} s")
        acked = dict(agents.acked)
        assert sum(acked.values()) < 360, "the flood was drained before SIGTERM: nothing was tested"
        url = cfg.receiver.database_url
        assert url is not None
        with psycopg.connect(url, password=pg_server.password) as conn:
            for dev, seq in acked.items():
                if seq == 0:
                    continue
                row = conn.execute("SELECT contiguous FROM devices WHERE dev = %s", (dev,)).fetchone()
                assert row is not None and row[0] >= seq, f"{dev}: acked {seq}, stored {row}"
        rx = ReceiverProcess(base, tmp_path / "rx-1.log")  # same client id: the session's messages come back
        agents.resend_after = 5.0
        agents.run_until_done(timeout=180)
    finally:
        agents.close()
        rx.stop()
    with ReceiverStore(cfg.receiver) as s:
        for d in devices:
            st = s.device_state(d.dev)
            assert st["chain_breaks"] == 0 and st["duplicate_record_ids"] == 0
            check_chain(s.batch_bytes(d.dev), sent[d.dev])
            assert s.record_count(d.dev) == 24_000
    assert elapsed < 10


def test_a_stopping_receiver_sends_the_ack_owed_behind_an_unconfirmed_one(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """Acks are coalesced: a device's newer head waits for the PUBACK of the ack in flight. Flooded,
    paho's thread waits on the full inbox and reads that PUBACK late; if the receiver stopped then,
    the head it had committed was never acked, and the next receiver never saw the device's batches
    again (they were PUBACKed). The slow flood test below met this in CI. Here paho's late reading
    is stood in for by withholding the broker's verdicts from the worker (take_done returns
    nothing): the broker, the agent and the database are real. On stop the owed ack must go out."""
    cfg = load_receiver_config(shared_config(tmp_path, mosquitto, devices, store_toml))
    central = load_central_key(cfg.receiver.key_file).public_key()
    dev = devices[0]
    rx = Receiver(cfg).start()
    try:
        rx.link.take_done = lambda: []  # type: ignore[method-assign]
        agent.publish("batch", dev.dev, dev.next_batch(1))
        agent.wait_ack(central, dev.dev, 1)
        agent.publish("batch", dev.dev, dev.next_batch(1))
        with ReceiverStore(cfg.receiver) as s:
            wait_for(lambda: s.device_state(dev.dev).get("acked_seq") == 2, what="seq 2 stored")
        time.sleep(0.5)
        assert max(a.get("seq", 0) for a in agent.decoded(central, "ack")) == 1  # held behind ack 1
    finally:
        rx.stop()
    agent.wait_ack(central, dev.dev, 2, timeout=5)


def test_stop_returns_while_paho_is_blocked_on_a_full_inbox(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """In process: the worker is held (a device row locked by another connection), the queues fill,
    paho's thread waits for room; stop() must still return promptly, acking nothing it did not commit."""
    cfg = load_receiver_config(shared_config(tmp_path, mosquitto, devices, store_toml, receive_maximum=1000))
    central = load_central_key(cfg.receiver.key_file).public_key()
    dev = devices[0]
    first = dev.next_batch(1)
    rx = Receiver(cfg).start()
    stopped = False
    try:
        agent.publish("batch", dev.dev, first)
        agent.wait_ack(central, dev.dev, 1)
        url = cfg.receiver.database_url
        assert url is not None
        lock = psycopg.connect(url, password=tmp_path.joinpath("pg.password").read_text().strip())
        lock.execute("SELECT * FROM devices WHERE dev = %s FOR UPDATE", (dev.dev,))  # the worker waits on it
        for _ in range(400):
            agent.client.publish(f"coop/v1/{dev.dev}/batch", dev.next_batch(1), qos=1)
        wait_for(lambda: rx.inbox.full() and rx.ready.full(), timeout=30, what="both queues full")
        t = time.monotonic()
        stopper = threading.Thread(target=rx.stop)
        stopper.start()
        stopper.join(timeout=12)
        stopped = not stopper.is_alive()
        lock.rollback()
        lock.close()
        stopper.join(timeout=30)
        assert stopped, "stop() did not return within 12 s"
        assert time.monotonic() - t < 40
    finally:
        if not stopped:
            rx.stop()
    assert max(a.get("seq", 0) for a in agent.decoded(central, "ack")) == 1  # nothing uncommitted acked


def test_chunks_of_one_file_on_different_receivers_make_one_file(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """The manifest lands on one receiver and the chunks are dealt in turn to both: neither holds the
    whole file in its memory, yet the one that writes the last chunk finds the rest in the shared
    spool and the manifest in the database, assembles the file, and the agent is told it is complete."""
    from tests.receiver.test_media import chunks_of, clip, manifest_record

    # media_idle_s long: an ask for holes here could only be a false one (chunks still being written elsewhere)
    a, b = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml, media_idle_s=60), 2)
    cfg = load_receiver_config(a)
    central = load_central_key(cfg.receiver.key_file).public_key()
    dev = devices[0]
    content = clip(7, 6 * 1000 + 17)
    with Receiver(cfg) as rx_a, Receiver(load_receiver_config(b)) as rx_b:
        agent.publish("batch", dev.dev, dev.next_batch(records=[manifest_record(dev, "clip-9", content)]))
        agent.wait_ack(central, dev.dev, 1)
        commits = (rx_a.commits, rx_b.commits)
        for i, part in enumerate(chunks_of(content)):
            agent.publish(f"media/clip-9/{i}", dev.dev, part)
        wait_for(
            lambda: any(x.get("media") == "clip-9" and x["missing"] == [] for x in agent.decoded(central, "ack")),
            what="the file acked complete",
        )
        assert rx_a.commits > commits[0] and rx_b.commits > commits[1], "the chunks were not shared"
    with ReceiverStore(cfg.receiver) as s:
        path = s.media_path(dev.dev, "clip-9")
        assert path is not None and path.read_bytes() == content
        assert s.rejections(dev.dev) == []
    assert not any(x.get("media") == "clip-9" and x["missing"] for x in agent.decoded(central, "ack"))


def test_a_burst_of_full_size_batches_does_not_deadlock_the_screener_and_the_verifier(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str
) -> None:
    """Regression: the screener first submitted a whole group (50 batches of 500 records) to the verifier
    and only then handed it to the worker. The verifier's reply pipe holds about 25 such verdicts, so it
    blocked writing the 26th, stopped reading requests, the screener blocked submitting, and the worker
    waited for a group that never came (found by bench_receiver: no ack, ever). Now each batch is handed
    over as soon as it is submitted."""
    cfg = load_receiver_config(shared_config(tmp_path, mosquitto, devices, store_toml, receive_maximum=1000))
    central = load_central_key(cfg.receiver.key_file).public_key()
    sent = make_batches(devices[:1], 80, 500)
    with Receiver(cfg) as rx:
        agents = ResendingAgents(mosquitto.port, central, sent, window=80, resend_after=600)
        try:
            agents.run_until_done(timeout=120)
        finally:
            agents.close()
        assert rx.verifier.use_process is False or rx.verifier._child is not None
    with ReceiverStore(cfg.receiver) as s:
        check_chain(s.batch_bytes(devices[0].dev), sent[devices[0].dev])


def test_a_busy_shared_receiver_does_not_ask_for_resends(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """In a group, a gap's predecessor may sit in another receiver's queue: no ask while we are busy.

    The first 1,000-branch storm on two receivers asked 24,000 resends in 5 minutes (each rewinds
    a branch and adds work). Here a group of one holds seq 2 (a gap) while its ready queue reports
    work; for five resend intervals it asks nothing (an observation window, the only way to see a
    thing not happen); once idle it asks for seq 1, once, with a signed command.
    """
    (cfg_path,) = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml, resend_interval_s=0.3), 1)
    cfg = load_receiver_config(cfg_path)
    central = load_central_key(cfg.receiver.key_file).public_key()
    dev = devices[0]
    sent = [dev.next_batch(2) for _ in range(2)]
    with Receiver(cfg) as rx:
        monkeypatch.setattr(rx.ready, "qsize", lambda: 1)  # busy, as in a storm
        agent.publish("batch", dev.dev, sent[1])
        with ReceiverStore(cfg.receiver) as s:
            wait_for(lambda: s.device_state(dev.dev).get("held_batches") == 1, what="seq 2 held")
        time.sleep(1.5)
        assert not agent.decoded(central, "cmd"), "asked for a resend while busy"
        monkeypatch.undo()
        cmds = wait_for(lambda: agent.decoded(central, "cmd"), timeout=10, what="the resend ask once idle")
        assert [(c["cmd"], c["args"]) for c in cmds] == [("resend", {"from_seq": 1})]


def test_a_batch_just_before_its_predecessor_is_deferred_not_held(
    tmp_path: Path, mosquitto: Mosquitto, devices: list[DeviceSim], store_toml: str, agent: AgentSide
) -> None:
    """Shared receivers get a device's batches in turn, so seq N often comes just before N-1 lands.

    Holding it in `pending` writes, reads and checks the whole batch again; a receiver instead keeps
    it unacked for a later group (receiver/server.py, DEFER_MAX_S). Here seq 2 comes first and seq 1
    within that time: both are stored with nothing ever held, and the chain is the one sent.
    """
    a, b = receiver_configs(shared_config(tmp_path, mosquitto, devices, store_toml), 2)
    dev = devices[0]
    sent = [dev.next_batch(2) for _ in range(2)]
    cfg = load_receiver_config(a)
    central = load_central_key(cfg.receiver.key_file).public_key()
    with Receiver(cfg) as rx_a, Receiver(load_receiver_config(b)) as rx_b:
        agent.publish("batch", dev.dev, sent[1])
        wait_for(lambda: rx_a.deferrals + rx_b.deferrals >= 1, what="seq 2 deferred")
        agent.publish("batch", dev.dev, sent[0])
        agent.wait_ack(central, dev.dev, 2)
        assert rx_a.writer.held + rx_b.writer.held == 0
    with ReceiverStore(cfg.receiver) as s:
        st = s.device_state(dev.dev)
        assert st["acked_seq"] == 2 and st["held_batches"] == 0 and st["chain_breaks"] == 0
        check_chain(s.batch_bytes(dev.dev), sent)

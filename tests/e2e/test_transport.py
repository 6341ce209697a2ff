"""Transport faults against real Mosquitto: TLS with client certificates, refused PUBACKs,
and a real full disk under the buffer."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.peers.agent import Branch, sale
from tests.peers.mosquitto import Mosquitto, TlsFiles
from tests.peers.net import wait_for
from tests.peers.tls import make_tls_material

pytestmark = pytest.mark.slow


def test_tls_with_client_certificate_works_and_a_rogue_certificate_is_refused(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "mq", tls=TlsFiles(tls.ca_cert, tls.server_cert, tls.server_key)).start()
    branch = Branch(tmp_path / "branch", broker)
    try:
        branch.start_receiver(receiver={"ca_file": str(tls.ca_cert), "cert_file": str(tls.client_cert),
                                        "client_key_file": str(tls.client_key)})
        agent = branch.start_agent(uplink={"ca_file": str(tls.ca_cert), "cert_file": str(tls.client_cert),
                                           "key_file": str(tls.client_key)})
        assert branch.post([sale(1)]).status_code == 201
        wait_for(lambda: any(r["kind"] == "sale" for r in branch.rx_records()), timeout=20,
                 what="a sale over TLS")
        branch.stop_agent()
        agent = branch.start_agent(uplink={"ca_file": str(tls.ca_cert), "cert_file": str(tls.rogue_client_cert),
                                           "key_file": str(tls.rogue_client_key)})
        wait_for(lambda: agent.uplink.last_error is not None, timeout=15, what="a connection error")
        assert not agent.uplink.connected
        err = agent.uplink.last_error or ""
        assert "certificate" in err or "TLS" in err, err
        with branch.client() as c:
            st = c.get("/v1/status").json()
        assert st["broker"]["connected"] is False and st["broker"]["last_error"] == err
    finally:
        branch.close()
        broker.stop()


def test_agent_refuses_a_broker_it_cannot_verify(tmp_path: Path) -> None:
    tls = make_tls_material(tmp_path / "pki")
    broker = Mosquitto(tmp_path / "mq", tls=TlsFiles(tls.ca_cert, tls.server_cert, tls.server_key)).start()
    branch = Branch(tmp_path / "branch", broker)
    try:
        agent = branch.start_agent(uplink={"ca_file": str(tls.rogue_ca_cert), "cert_file": str(tls.client_cert),
                                           "key_file": str(tls.client_key)})
        wait_for(lambda: agent.uplink.last_error is not None, timeout=15, what="a TLS error")
        assert "certificate verify failed" in (agent.uplink.last_error or "").lower()
        assert "ca_file" in (agent.uplink.last_error or "")
    finally:
        branch.close()
        broker.stop()


def test_refused_pubacks_are_reported_retried_with_backoff_and_not_counted(tmp_path: Path) -> None:
    """Mosquitto answers 0x87 (not authorized) in the PUBACK of a denied publish; paho marks the
    message published anyway. The agent must keep the batch, say why, and back off."""
    acl = tmp_path / "acl"
    acl.write_text("topic readwrite coop/v1/+/+/+/status\ntopic read coop/v1/+/+/+/ack\n"
                   "topic read coop/v1/+/+/+/cmd\n")
    broker = Mosquitto(tmp_path / "mq", extra=f"acl_file {acl}\n").start()
    branch = Branch(tmp_path / "branch", broker)
    try:
        agent = branch.start_agent(uplink={"backoff_min_s": 0.5, "backoff_max_s": 2.0})
        assert branch.post([sale(1)]).status_code == 201
        wait_for(lambda: agent.uplink.refused_pubacks >= 2, timeout=20, what="refused PUBACKs")
        err = agent.uplink.last_error or ""
        assert "0x87" in err and "batch" in err, err
        start = agent.uplink.refused_pubacks
        threading.Event().wait(4.0)  # a measurement window for the retry rate, not a wait for a condition
        per_batch = (agent.uplink.refused_pubacks - start) / max(1, agent.store.last_seq())
        assert per_batch <= 6, f"{per_batch} retries a batch in 4 s: a tight loop, not a backoff"
        assert agent.store.backlog()["batches"] >= 1 and agent.store.acked_seq() == 0
        with branch.client() as c:
            st = c.get("/v1/status").json()
        assert st["components"]["uplink"] == "degraded"
        # The operator fixes the ACL: the same batches go through and are acked.
        broker.extra = ""
        broker.restart()
        branch.start_receiver()
        wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=30, what="backlog drained after fix")
    finally:
        branch.close()
        broker.stop()


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A real 6 MiB tmpfs: SQLite meets ENOSPC, not a simulated error."""
    mnt = tmp_path / "small-disk"
    mnt.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mnt)], capture_output=True)
    if r.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (needs root): {r.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_disk_full_answers_507_keeps_the_file_sound_and_resumes(branch: Branch, small_disk: Path) -> None:
    import sqlite3
    branch.data_dir = small_disk / "data"
    branch.data_dir.mkdir()
    (branch.data_dir / "device_key.pem").write_bytes((branch.root / "agent-data" / "device_key.pem").read_bytes())
    (branch.data_dir / "device_key.pem").chmod(0o600)
    agent = branch.start_agent()  # no receiver: nothing is acked, the disk fills
    accepted: list[str] = []
    status = 0
    reason = ""
    with branch.client() as c:
        for i in range(2000):
            r = branch.post([sale(i * 20 + j, note="x" * 400) for j in range(20)], client=c)
            if r.status_code != 201:
                status, reason = r.status_code, r.json()["reason"]
                break
            accepted += r.json()["ids"]
    assert status == 507, (status, reason)
    assert "full" in str(reason)
    db = branch.data_dir / "buffer.sqlite3"
    check = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    assert check.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    check.close()
    # Space returns: ingest resumes, and everything accepted reaches the centre.
    subprocess.run(["mount", "-o", "remount,size=256m", str(small_disk)], check=True)
    wait_for(lambda: branch.post([sale(999_999)]).status_code == 201, timeout=20, what="ingest to resume")
    branch.start_receiver()
    wait_for(lambda: {r["id"] for r in branch.rx_records()} >= set(accepted), timeout=60,
             what="every accepted record at the receiver")
    assert agent.store.reader().execute("PRAGMA integrity_check").fetchone()[0] == "ok"


def test_username_and_password_from_a_file_and_a_clear_error_when_wrong(tmp_path: Path) -> None:
    broker = Mosquitto(tmp_path / "mq", passwords={"branch-1": "s3cret-pw", "central": "c3ntral"}).start()
    branch = Branch(tmp_path / "branch", broker)
    good = tmp_path / "pw-good"
    good.write_text("s3cret-pw\n")
    bad = tmp_path / "pw-bad"
    bad.write_text("guess\n")
    try:
        (tmp_path / "rx-pw").write_text("c3ntral\n")
        branch.start_receiver(receiver={"username": "central", "password_file": str(tmp_path / "rx-pw")})
        agent = branch.start_agent(uplink={"username": "branch-1", "password_file": str(good)})
        assert branch.post([sale(1)]).status_code == 201
        wait_for(lambda: agent.store.backlog()["records"] == 0, timeout=20, what="acked with password auth")
        branch.stop_agent()
        agent = branch.start_agent(uplink={"username": "branch-1", "password_file": str(bad)})
        wait_for(lambda: agent.uplink.last_error is not None, timeout=15, what="an auth error")
        err = agent.uplink.last_error or ""
        assert "refused the connection" in err and "password_file" in err, err
        assert "guess" not in err and "s3cret" not in err
        assert not agent.uplink.connected
    finally:
        branch.close()
        broker.stop()


def test_a_refused_subscription_is_reported(branch: Branch) -> None:
    """A broker that refuses a subscription says so in the SUBACK (0x87 for an ACL): central
    commands could never arrive, so the agent reports it instead of looking healthy.

    Not a real peer for the refusal itself: Mosquitto 2.0.11 grants a subscription its ACL
    denies (measured: SUBACK "Granted QoS 1", then nothing delivered), so the SUBACK another
    broker would send is handed to the agent's paho callback directly, on a live uplink.
    """
    from paho.mqtt.packettypes import PacketTypes
    from paho.mqtt.reasoncodes import ReasonCode

    agent = branch.start_agent()
    wait_for(lambda: agent.uplink.subscribed, what="uplink subscribed (real SUBACK)")
    suback = [ReasonCode(PacketTypes.SUBACK, identifier=0x01), ReasonCode(PacketTypes.SUBACK, identifier=0x87)]
    agent.uplink._on_subscribe(None, None, 1, suback, None)  # type: ignore[arg-type]
    err = agent.uplink.last_error or ""
    assert "subscription" in err and "/cmd" in err and "/ack" not in err and "ACL" in err, err
    assert "Not authorized" in err, err
    assert not agent.uplink.subscribed
    assert agent.uplink.health() == "degraded"

"""broker.* and tls.* against a real Mosquitto: wrong password, ACL refusing the status topic,
an expired client certificate, a certificate about to expire."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from tests.doctor.conftest import DEVICE, Pc
from tests.peers.mosquitto import Mosquitto, TlsFiles
from tests.peers.tls import make_client_cert, make_tls_material


def _password_broker(tmp_path: Path, extra: str = "") -> Mosquitto:
    return Mosquitto(tmp_path / "mq", passwords={"agent": "right-Pa55word"}, extra=extra).start()


def test_right_password_connects_and_publishes(tmp_path: Path, pc: Pc) -> None:
    broker = _password_broker(tmp_path)
    try:
        pw = pc.root / "broker.password"
        pw.write_text("right-Pa55word\n")
        _, checks = pc.doctor(uplink={"broker": broker.url, "username": "agent", "password_file": str(pw)})
    finally:
        broker.stop()
    for fid in ("broker.reachable", "broker.auth", "broker.publish"):
        assert checks[fid]["result"] == "ok", checks[fid]
    assert checks["broker.tls"]["result"] == "skipped"
    assert f"coop/v1/{DEVICE}/status" in checks["broker.publish"]["message"]


def test_wrong_broker_password_fails_auth_with_the_fix(tmp_path: Path, pc: Pc) -> None:
    broker = _password_broker(tmp_path)
    try:
        pw = pc.root / "broker.password"
        pw.write_text("wrong-Pa55word\n")
        code, checks = pc.doctor(uplink={"broker": broker.url, "username": "agent", "password_file": str(pw)})
    finally:
        broker.stop()
    assert code == 2
    assert checks["broker.reachable"]["result"] == "ok"
    auth = checks["broker.auth"]
    # Mosquitto says 0x87 (not authorized) for a wrong password; other brokers 0x86
    assert auth["result"] == "error" and ("0x87" in auth["message"] or "0x86" in auth["message"]), auth
    assert "broker.password" in auth["fix"]
    assert checks["broker.publish"]["result"] == "skipped"
    assert "wrong-Pa55word" not in str(checks)


def test_acl_refusing_the_status_topic_fails_publish(tmp_path: Path, pc: Pc) -> None:
    """The broker lets the device in but its ACL allows only reading: the PUBACK says 0x87."""
    acl = tmp_path / "acl"
    acl.write_text("user agent\ntopic read coop/#\n")
    broker = _password_broker(tmp_path, extra=f"acl_file {acl}\n")
    try:
        pw = pc.root / "broker.password"
        pw.write_text("right-Pa55word\n")
        code, checks = pc.doctor(uplink={"broker": broker.url, "username": "agent", "password_file": str(pw)})
    finally:
        broker.stop()
    assert checks["broker.auth"]["result"] == "ok"
    pub = checks["broker.publish"]
    assert pub["result"] == "error" and "0x87" in pub["message"], pub
    assert "ACL" in pub["fix"] and code == 2


def test_expired_client_certificate(tmp_path: Path, pc: Pc) -> None:
    m = make_tls_material(tmp_path / "tls", client_cn=DEVICE)
    now = dt.datetime.now(dt.UTC)
    cert, key = tmp_path / "expired.crt", tmp_path / "expired.key"
    make_client_cert(m, cert, key, not_before=now - dt.timedelta(days=400), not_after=now - dt.timedelta(days=2),
                     cn=DEVICE)
    broker = Mosquitto(tmp_path / "mq", tls=TlsFiles(m.ca_cert, m.server_cert, m.server_key)).start()
    try:
        code, checks = pc.doctor(uplink={"broker": f"mqtts://localhost:{broker.port}", "ca_file": str(m.ca_cert),
                                         "cert_file": str(cert), "key_file": str(key)})
    finally:
        broker.stop()
    assert code == 2
    tls = checks["tls.client-cert"]
    assert tls["result"] == "error" and "expired on" in tls["message"] and "new client certificate" in tls["fix"]
    # the broker refuses it too; in TLS 1.3 its verdict on the client certificate comes after
    # the handshake, so the connection ends before a CONNACK
    assert checks["broker.auth"]["result"] == "error", checks
    assert "tls.client-cert" in checks["broker.auth"]["fix"]
    assert checks["tls.ca"]["result"] == "warning"  # the test CA lives 2 days


def test_certificate_expiring_within_30_days_warns(tmp_path: Path, pc: Pc) -> None:
    m = make_tls_material(tmp_path / "tls", client_cn=DEVICE)
    now = dt.datetime.now(dt.UTC)
    cert, key = tmp_path / "soon.crt", tmp_path / "soon.key"
    make_client_cert(m, cert, key, not_before=now - dt.timedelta(days=1), not_after=now + dt.timedelta(days=10),
                     cn=DEVICE)
    broker = Mosquitto(tmp_path / "mq", tls=TlsFiles(m.ca_cert, m.server_cert, m.server_key)).start()
    try:
        _, checks = pc.doctor(uplink={"broker": f"mqtts://localhost:{broker.port}", "ca_file": str(m.ca_cert),
                                      "cert_file": str(cert), "key_file": str(key)})
    finally:
        broker.stop()
    assert checks["tls.client-cert"]["result"] == "warning"
    assert "expires in" in checks["tls.client-cert"]["message"]
    for fid in ("broker.tls", "broker.auth", "broker.publish"):
        assert checks[fid]["result"] == "ok", checks[fid]

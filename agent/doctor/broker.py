"""Broker checks: a real connection as the agent makes it (TCP, TLS, MQTT 5 CONNECT with its
credentials), then one QoS 1 publish of a signed status to the device's status topic, whose
PUBACK reason code says whether the broker lets this device publish.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Iterator
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from agent import __version__
from agent.doctor.context import Context
from agent.uplink.mqtt import make_client, tls_context
from core.doctor import Finding, error, ok, skipped
from wire.cose import Signer
from wire.keys import KeyError_, load_private_key
from wire.topics import Topics

TIMEOUT_S = 8.0
IDS = ("broker.reachable", "broker.tls", "broker.auth", "broker.publish")

# MQTT 5 CONNACK reason codes (spec 3.2.2.2) a technician can act on.
_CONNACK_FIX = {
    0x86: "the broker refused the user name or password: check [uplink] username and the file "
          "/etc/coopagent/credentials/broker.password with the centre, then systemctl restart coopagent",
    # Mosquitto answers a wrong password with 0x87, not 0x86.
    0x87: "the broker does not accept this client: check [uplink] username and the file "
          "/etc/coopagent/credentials/broker.password, or the client certificate, with the centre",
    0x85: "the broker refused the client id: check [uplink] client_id",
    0x8A: "the broker has banned this client: call the centre",
}


def _skip_rest(after: str, reason: str) -> Iterator[Finding]:
    for fid in IDS[IDS.index(after) + 1:]:
        yield skipped(fid, reason)


def _tls(c: Context) -> Iterator[Finding]:
    u = c.cfg.uplink
    try:
        sock = socket.create_connection((u.host, u.port), timeout=TIMEOUT_S)
    except OSError as exc:
        yield error("broker.reachable", f"cannot reach {u.host}:{u.port}: {exc}",
                    f"check the network and firewall (nc -vz {u.host} {u.port}) and [uplink] broker")
        yield from _skip_rest("broker.reachable", "the broker is not reachable")
        return
    yield ok("broker.reachable", f"{u.host}:{u.port} accepts TCP")
    with sock:
        if not u.tls:
            yield skipped("broker.tls", "mqtt:// (no TLS)")
            return
        try:
            with tls_context(u).wrap_socket(sock, server_hostname=u.host) as tsock:
                version = tsock.version()
        except ssl.SSLCertVerificationError as exc:
            yield error("broker.tls", f"the broker's certificate is not accepted: {exc.verify_message}",
                        "check [uplink] ca_file is the centre's CA; if it says expired or not yet valid, "
                        "check this PC's clock (clock.sync) or ask the centre about its certificate")
            yield from _skip_rest("broker.tls", "no TLS session")
            return
        except (ssl.SSLError, OSError) as exc:
            yield error("broker.tls", f"TLS handshake with {u.host}:{u.port} failed: {exc}",
                        "check [uplink] ca_file, cert_file and key_file (tls.* checks) with the centre")
            yield from _skip_rest("broker.tls", "no TLS session")
            return
    # In TLS 1.3 the broker judges our client certificate after the handshake: a refusal shows at CONNECT.
    yield ok("broker.tls", f"{version} handshake, the broker's certificate verified")


def broker_checks(c: Context) -> Iterator[Finding]:
    results = list(_tls(c))
    yield from results
    if any(f.id == "broker.tls" and f.result.value in ("error",) for f in results) or \
            results[0].result.value == "error":
        return
    yield from _mqtt(c)


def _mqtt(c: Context) -> Iterator[Finding]:
    u, cfg = c.cfg.uplink, c.cfg
    topics = Topics.for_device(u.topic_prefix, cfg.agent.device)
    client_id = (u.client_id or "coopagent-" + cfg.agent.device.replace("/", "-")) + "-doctor"
    try:
        client = make_client(u, client_id, None)
    except (ValueError, OSError) as exc:  # unreadable password file or client key
        yield error("broker.auth", f"cannot prepare the connection: {exc}",
                    "check [uplink] password_file, cert_file and key_file exist and are readable by the agent")
        yield from _skip_rest("broker.auth", "no connection")
        return
    got: dict[str, Any] = {}
    client.on_connect = lambda _c, _u, _f, rc, _p: got.__setitem__("connack", rc)
    client.on_publish = lambda _c, _u, mid, rc, _p: got.__setitem__("puback", rc)
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = 0  # leave nothing behind at the broker
    deadline = time.monotonic() + TIMEOUT_S
    try:
        client.connect(u.host, u.port, keepalive=u.keepalive_s, clean_start=True, properties=props)
        while "connack" not in got and time.monotonic() < deadline:
            if client.loop(timeout=0.1) not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_AGAIN):
                break
    except (OSError, ssl.SSLError) as exc:
        yield error("broker.auth", f"the broker closed the connection: {exc}",
                    "the broker refused this client's TLS certificate or credentials: check them with the centre")
        yield from _skip_rest("broker.auth", "not connected")
        return
    rc: ReasonCode | None = got.get("connack")
    if rc is None:
        yield error("broker.auth", "no answer to CONNECT (the broker closed the connection)",
                    "the broker refused this client: " + ("see tls.client-cert; check the client certificate "
                                                          "with the centre" if u.cert_file else
                                                          "check the user and client id with the centre"))
        yield from _skip_rest("broker.auth", "not connected")
        client.disconnect()
        return
    if rc.is_failure:
        yield error("broker.auth", f"the broker refused the connection: {rc} ({rc.value:#04x})",
                    _CONNACK_FIX.get(rc.value, "check [uplink] username, password_file and certificates "
                                     "with the centre"))
        yield from _skip_rest("broker.auth", "not connected")
        return
    who = f"user {u.username}" if u.username else ("client certificate" if u.cert_file else "anonymous")
    yield ok("broker.auth", f"connected as {client_id} ({who})")
    try:
        yield from _publish(c, client, topics, got, deadline)
    finally:
        client.disconnect()  # sends DISCONNECT at once (not threaded); no will is set anyway


def _publish(c: Context, client: mqtt.Client, topics: Topics, got: dict[str, Any],
             deadline: float) -> Iterator[Finding]:
    fid = "broker.publish"
    try:
        signer = Signer(load_private_key(c.cfg.agent.key_path, check_mode=False))
    except KeyError_ as exc:
        yield skipped(fid, f"nothing to sign a status with ({exc})")
        return
    st = c.status or {}
    doc = {"v": 1, "dev": c.cfg.agent.device, "at": time.time_ns() // 1_000_000,
           "state": "online" if c.status is not None else "offline", "version": __version__,
           "backlog": dict(st.get("backlog") or {"records": 0, "batches": 0, "media_bytes": 0}),
           "acked_seq": st.get("acked_seq", 0), "components": dict(st.get("components") or {})}
    # Not retained: the agent's own retained status stays what the centre sees.
    info = client.publish(topics.status, signer.sign_map(doc), qos=1, retain=False)
    while "puback" not in got and time.monotonic() < deadline and client.is_connected():
        client.loop(timeout=0.1)
    rc: ReasonCode | None = got.get("puback")
    if info.rc != mqtt.MQTT_ERR_SUCCESS or rc is None:
        yield error(fid, f"no PUBACK for a publish to {topics.status} (the broker dropped the connection)",
                    "the broker's ACL must allow this device to publish to "
                    f"{topics.prefix}/#: ask the centre")
    elif rc.is_failure:
        yield error(fid, f"the broker refused a publish to {topics.status}: {rc} ({rc.value:#04x})",
                    f"the broker's ACL must allow this device to publish to {topics.prefix}/#: ask the centre")
    else:
        yield ok(fid, f"QoS 1 publish to {topics.status} acknowledged")

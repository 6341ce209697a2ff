"""Making a paho client for one connection attempt: MQTT 5, TLS or password, session expiry, will.

A new Client per attempt keeps paho's own out-queue from resending a previous connection's
messages behind our back: after a reconnect the uplink resends from the lowest unacked seq
itself, in order, the same bytes.
"""

from __future__ import annotations

import ssl
from pathlib import Path

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from agent.config.core import UplinkSection
from core.config.base import read_secret


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when its handshake fails: paho 2.2 wraps the socket, calls
    do_handshake() and lets the exception escape without closing it, so every refused
    attempt would leak a descriptor until the garbage collector found it."""

    def do_handshake(self, block: bool = False) -> None:
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise


def tls_context(cfg: UplinkSection) -> ssl.SSLContext:
    """The TLS settings of every broker connection (the uplink's and `coopagent doctor`'s)."""
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=_s(cfg.ca_file))
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.sslsocket_class = _ClosingSSLSocket
    if cfg.cert_file is not None and cfg.key_file is not None:
        ctx.load_cert_chain(str(cfg.cert_file), str(cfg.key_file))
    return ctx


def make_client(cfg: UplinkSection, client_id: str, will_topic: str | None, will_payload: bytes = b"") -> mqtt.Client:
    """will_topic None: no will (the doctor's probe must not announce the device offline)."""
    client = mqtt.Client(callback_api_version=CallbackAPIVersion.VERSION2, client_id=client_id,
                         protocol=mqtt.MQTTv5, reconnect_on_failure=False)
    client.enable_logger()  # paho logs at DEBUG through the 'paho.mqtt.client' logger; no payloads
    if cfg.tls:
        client.tls_set_context(tls_context(cfg))
    if cfg.username is not None:
        password = read_secret(cfg.password_file) if cfg.password_file is not None else None
        client.username_pw_set(cfg.username, password)
    client.max_inflight_messages_set(max(cfg.inflight_window, 20))
    client.max_queued_messages_set(0)
    if will_topic is not None:
        client.will_set(will_topic, will_payload, qos=1, retain=True)
    return client


# Room for a PUBLISH packet's own header, topic and properties around the payload.
PACKET_OVERHEAD = 4096


def connect_properties(cfg: UplinkSection) -> Properties:
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = cfg.session_expiry_s
    # MQTT 5 section 3.1.2.11.4: the broker must not send us a bigger packet (it drops it).
    # paho reads a whole packet into memory first, so without this anyone who may publish on
    # P/ack could make the agent hold up to the broker's limit (Mosquitto's default: 256 MB).
    # Payloads between max_payload_bytes and this are refused by the verifier, and recorded.
    props.MaximumPacketSize = cfg.max_payload_bytes + PACKET_OVERHEAD
    return props


def _s(p: Path | None) -> str | None:
    return str(p) if p is not None else None

"""The receiver's MQTT link: paho-mqtt 2.x, MQTT 5, a persistent session and acks after commit.

- clean_start=False with a session expiry: the broker queues what agents publish while the
  receiver is down, and delivers it when it comes back.
- manual_ack: the PUBACK for an inbound batch goes out only after the worker committed it
  (or its rejection), so a crash in between makes the broker deliver it again. A message
  id from an earlier connection is never acked on a newer one (ids are reused per
  connection); the broker redelivers those and the store makes that idempotent.
- Every SUBACK and PUBACK reason code is checked: a refused subscription fails start(), a
  refused publish (0x87 not authorized, 0x97 quota, ...) is logged with its reason and
  handed back for a retry, never counted as sent.
"""

from __future__ import annotations

import logging
import ssl
import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from core.config.base import read_secret
from receiver.config import ReceiverSection

log = logging.getLogger(__name__)

MessageFn = Callable[[str, bytes, int, int, int], None]  # topic, payload, mid, qos, connection generation


class MqttError(Exception):
    """The broker refused us (connect, subscribe or publish) or could not be reached in time."""


@dataclass
class Refused:
    topic: str
    payload: bytes
    reason: str
    key: Hashable | None = None  # what publish() was given: the server coalesces retries by it


def make_client(cfg: ReceiverSection, client_id: str, *, manual_ack: bool) -> mqtt.Client:
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5, manual_ack=manual_ack)
    if cfg.tls:
        client.tls_set(
            ca_certs=str(cfg.ca_file) if cfg.ca_file else None,
            certfile=str(cfg.cert_file) if cfg.cert_file else None,
            keyfile=str(cfg.client_key_file) if cfg.client_key_file else None,
            cert_reqs=ssl.CERT_REQUIRED,
            tls_version=ssl.PROTOCOL_TLS_CLIENT,
        )
    if cfg.username is not None:
        password = read_secret(cfg.password_file) if cfg.password_file is not None else None
        client.username_pw_set(cfg.username, password)
    client.reconnect_delay_set(1, 30)
    return client


def closed_early(cfg: ReceiverSection, rc: Any) -> str:
    """Why a connection ended before CONNACK, with the likely cause for a TLS client certificate."""
    hint = ""
    if cfg.tls and cfg.cert_file is not None:
        hint = " (with TLS this usually means the broker refused cert_file: is it signed by a CA it trusts?)"
    elif cfg.tls:
        hint = " (the broker may require a client certificate: set cert_file and client_key_file)"
    return f"the broker closed the connection before accepting it: {rc}{hint}"


class MqttLink:
    def __init__(self, cfg: ReceiverSection, on_message: MessageFn):
        self.cfg = cfg
        self._on_message = on_message
        self._client = make_client(cfg, cfg.client_id, manual_ack=True)
        self._client.on_connect = self._connected
        self._client.on_disconnect = self._disconnected
        self._client.on_subscribe = self._subscribed
        self._client.on_publish = self._published
        self._client.on_message = self._message
        self._lock = threading.Lock()
        self._gen = 0
        self._subscriptions: list[str] = []
        self._subscribed_ev = threading.Event()
        self._error: str | None = None
        self._inflight: dict[int, tuple[str, bytes, Hashable | None]] = {}
        self._refused: list[Refused] = []
        self._done: list[Hashable] = []  # keys of publishes the broker accepted (PUBACK success)
        self._early_results: dict[int, ReasonCode] = {}
        self.connected = False

    # -- lifecycle ----------------------------------------------------------------------

    def start(self, subscriptions: list[str], timeout: float = 15.0) -> None:
        """Connect, subscribe, and return once the broker granted every subscription."""
        self._subscriptions = subscriptions
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self.cfg.session_expiry_s
        props.ReceiveMaximum = self.cfg.receive_maximum
        try:
            self._client.connect(
                self.cfg.host,
                self.cfg.port,
                keepalive=self.cfg.keepalive_s,
                clean_start=False,
                properties=props,
            )
        except (OSError, ssl.SSLError) as exc:
            raise MqttError(f"cannot connect to the broker {self.cfg.host}:{self.cfg.port}: {exc}") from exc
        self._client.loop_start()
        if not self._subscribed_ev.wait(timeout) or self._error:
            reason = self._error or f"no SUBACK within {timeout} s"
            self.stop()
            raise MqttError(f"broker {self.cfg.host}:{self.cfg.port}: {reason}")

    def wait_published(self, timeout: float) -> bool:
        """Until the broker has answered each of our publishes (PUBACK), or timeout; False if not.

        Stopping under a flood, the socket still holds batches we will never read, and Linux
        answers a close with unread data by a reset, on which the broker drops what it had
        not yet read from us: the last acks, sent just before, were lost that way. Once the
        broker has PUBACKed them they are its own. paho's thread reads on meanwhile: stopping,
        our message callback drops each batch at once (unacked, the broker keeps it).
        """
        deadline = time.monotonic() + timeout
        while True:
            with self._lock:
                if not self._inflight:
                    return True
            if not self.connected or time.monotonic() >= deadline:
                return False
            time.sleep(0.01)

    def stop(self) -> None:
        self._client.disconnect()
        self._client.loop_stop()
        # paho 2.2 closes loop_start()'s wake-up socket pair only in Client.__del__. The client
        # dies in a reference cycle here (its callbacks are our bound methods), and the gc may
        # finalize the sockets before that __del__: "ResourceWarning: unclosed socket" from a
        # receiver stopped mid-test (tests/e2e/test_central_hostile.py restarts one), and a
        # descriptor pair held until then. No public API closes them.
        self._client._reset_sockets(sockpair_only=True)

    # -- callbacks (paho's network thread) ----------------------------------------------

    def _connected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        if rc.is_failure:
            self._error = f"connection refused: {rc}"
            log.error("broker refused the connection: %s", rc)
            if rc.value in (0x86, 0x87, 0x8C):  # bad credentials / not authorized: retrying will not fix it
                self._subscribed_ev.set()
            return
        with self._lock:
            self._gen += 1
            self.connected = True
        log.info("connected to %s:%d (session present: %s)", self.cfg.host, self.cfg.port, flags.session_present)
        client.subscribe([(t, SubscribeOptions(qos=1)) for t in self._subscriptions])

    def _disconnected(self, client: mqtt.Client, userdata: Any, flags: Any, rc: ReasonCode, props: Any) -> None:
        with self._lock:
            self.connected = False
        if not self._subscribed_ev.is_set():  # still in start(): fail it now instead of at its timeout
            self._error = closed_early(self.cfg, rc)
            self._subscribed_ev.set()
        elif rc.value != 0:
            log.warning("disconnected from the broker: %s; paho reconnects", rc)

    def _subscribed(self, client: mqtt.Client, userdata: Any, mid: int, rcs: list[ReasonCode], props: Any) -> None:
        bad = [f"{t}: {rc}" for t, rc in zip(self._subscriptions, rcs, strict=False) if rc.is_failure]
        if bad:
            self._error = "subscription refused: " + "; ".join(bad)
            log.error("%s", self._error)
        self._subscribed_ev.set()

    def _published(self, client: mqtt.Client, userdata: Any, mid: int, rc: ReasonCode, props: Any) -> None:
        # Called with paho's out-message lock held: never call into the client from here.
        with self._lock:
            sent = self._inflight.pop(mid, None)
            if sent is None:  # the PUBACK beat publish() back to the worker thread
                self._early_results[mid] = rc
            else:
                self._outcome(sent[0], sent[1], sent[2], rc)

    def _outcome(self, topic: str, payload: bytes, key: Hashable | None, rc: ReasonCode) -> None:
        if rc.is_failure:
            self._refuse(topic, payload, rc, key)
        elif key is not None:
            self._done.append(key)

    def _refuse(self, topic: str, payload: bytes, rc: ReasonCode | str, key: Hashable | None = None) -> None:
        log.error("broker refused our publish on %s: %s", topic, rc)
        self._refused.append(Refused(topic, payload, str(rc), key))

    def _message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        self._on_message(msg.topic, bytes(msg.payload), msg.mid, msg.qos, self._gen)

    # -- worker side --------------------------------------------------------------------

    def publish(self, topic: str, payload: bytes, key: Hashable | None = None) -> None:
        """QoS 1, not retained. paho queues it while disconnected and sends it on reconnect.

        With a key, the broker's verdict comes back by it: take_done() on success, take_refused().
        """
        info = self._client.publish(topic, payload, qos=1)  # not under self._lock: see _published
        with self._lock:
            if info.rc not in (mqtt.MQTT_ERR_SUCCESS, mqtt.MQTT_ERR_NO_CONN):
                self._refuse(topic, payload, mqtt.error_string(info.rc), key)
                return
            early = self._early_results.pop(info.mid, None)
            if early is None:
                self._inflight[info.mid] = (topic, payload, key)
            else:
                self._outcome(topic, payload, key, early)

    def take_refused(self) -> list[Refused]:
        with self._lock:
            out, self._refused = self._refused, []
        return out

    def take_done(self) -> list[Hashable]:
        with self._lock:
            out, self._done = self._done, []
        return out

    def ack(self, mid: int, qos: int, gen: int) -> None:
        """PUBACK an inbound message, only on the connection that delivered it."""
        if qos == 1 and gen == self._gen and self.connected:
            self._client.ack(mid, qos)


def publish_once(cfg: ReceiverSection, topic: str, payload: bytes, client_id: str, timeout: float) -> None:
    """Connect, publish one QoS 1 message, wait for its PUBACK and check its reason code, disconnect.

    For `coop-receiver send-command` while `run` holds the receiver's own session.
    """
    client = make_client(cfg, client_id, manual_ack=False)
    done = threading.Event()
    outcome: dict[str, Any] = {}

    def on_connect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        if rc.is_failure:
            outcome["error"] = f"connection refused: {rc}"
            done.set()
            return
        outcome["mid"] = c.publish(topic, payload, qos=1).mid

    def on_publish(c: mqtt.Client, u: Any, mid: int, rc: ReasonCode, p: Any) -> None:
        if rc.is_failure:
            outcome["error"] = f"broker refused the publish: {rc}"
        done.set()

    def on_disconnect(c: mqtt.Client, u: Any, f: Any, rc: ReasonCode, p: Any) -> None:
        if not done.is_set():
            outcome.setdefault("error", closed_early(cfg, rc))
            done.set()

    client.on_connect = on_connect
    client.on_publish = on_publish
    client.on_disconnect = on_disconnect
    try:
        client.connect(cfg.host, cfg.port, keepalive=cfg.keepalive_s, clean_start=True)
    except (OSError, ssl.SSLError) as exc:
        raise MqttError(f"cannot connect to the broker {cfg.host}:{cfg.port}: {exc}") from exc
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise MqttError(f"no PUBACK from {cfg.host}:{cfg.port} within {timeout} s")
        if "error" in outcome:
            raise MqttError(outcome["error"])
    finally:
        client.disconnect()
        client.loop_stop()

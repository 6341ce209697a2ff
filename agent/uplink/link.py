"""The uplink: publishes sealed batches in seq order and forgets them only on a signed central ack.

One thread owns the MQTT connection: it drives paho's loop() itself, so connecting,
publishing, PUBACK accounting and reconnect backoff happen in one place, in order, with
no locks. The window counts batches published but not yet acked by the centre (not merely
PUBACKed by the broker), so the broker never holds more of ours than the receiver can
take: Mosquitto drops messages past 1,000 queued per client and persists only every 30
minutes, and a PUBACK (even a successful one) proves nothing about the centre.
"""

from __future__ import annotations

import logging
import queue
import random
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import paho.mqtt.client as mqtt
from paho.mqtt.reasoncodes import ReasonCode

from agent.config import AgentConfig
from agent.uplink.mqtt import connect_properties, make_client
from buffer.store import Store
from core.interfaces import BufferUnavailable, Command, Component, Health
from wire.cose import Signer
from wire.messages import CentralVerifier, MediaAck, Refused, SeqAck
from wire.topics import Topics

log = logging.getLogger(__name__)

AUTH_FAILURES = {0x86, 0x87, 0x8C}  # bad user name or password, not authorized, bad auth method
AUTH_RETRY_S = 300.0  # credentials will not fix themselves: retry slowly, say so loudly
RESEND_MAX_FACTOR = 16  # the no-ack resend timer doubles up to 16 x resend_after_s while acks stay away


@dataclass
class Outstanding:
    """A batch published on this connection and not yet acked by the centre."""

    state: str  # inflight (no PUBACK yet) | delivered (PUBACK ok) | refused (PUBACK failure)
    since: float
    retry_at: float = 0.0
    backoff: float = 0.0


class MediaOutbox(Protocol):
    """What the uplink needs of the media store (buffer/media.py implements it)."""

    def next_chunk(self) -> tuple[str, int, bytes] | None: ...
    def chunk_sent(self, media_id: str, index: int) -> None: ...
    def on_ack(self, media_id: str, missing: tuple[int, ...]) -> None: ...
    def reset(self) -> None: ...


class Uplink(Component):
    name = "uplink"

    def __init__(self, cfg: AgentConfig, store: Store, signer: Signer, verifier: CentralVerifier,
                 status_doc: Callable[[], dict[str, Any]], on_command: Callable[[Command], bool],
                 on_refused: Callable[[str, str, str], None], media: MediaOutbox | None = None,
                 rng: random.Random | None = None):
        self.cfg = cfg
        self.ucfg = cfg.uplink
        self.store = store
        self.signer = signer
        self.verifier = verifier
        self.status_doc = status_doc
        self.on_command = on_command
        self.on_refused = on_refused
        self.media = media
        self.rng = rng or random.Random()  # noqa: S311 - jitter, not cryptography
        self.topics = Topics.for_device(self.ucfg.topic_prefix, cfg.agent.device)
        self.client_id = self.ucfg.client_id or "coopagent-" + cfg.agent.device.replace("/", "-")
        self._wake = threading.Event()
        self._requests: queue.SimpleQueue[tuple[str, Any]] = queue.SimpleQueue()
        self._client: mqtt.Client | None = None
        self.connected = False
        # True once the broker granted the ack and command subscriptions (SUBACK): a command
        # the centre publishes before that is not delivered on a first session.
        self.subscribed = False
        self.subscription_refused = False
        self.last_error: str | None = None
        self.refused_pubacks = 0
        self.connects = 0
        self.media_chunks_sent = 0
        self._status_force = False
        self._out: dict[int, Outstanding] = {}
        self._mids: dict[int, tuple[str, Any]] = {}
        self._next_seq = 1
        self._last_seq_cache = 0
        self.resends = 0  # times the no-ack timer resent the window (not counting reconnects or commands)
        self._resend_wait = self.ucfg.resend_after_s
        self._reset_tracking()

    # -- called from other threads -----------------------------------------------
    def wake(self) -> None:
        """New batches or media to send (the buffer calls this after sealing)."""
        self._wake.set()

    def resend_from(self, seq: int) -> None:
        self._requests.put(("resend", seq))
        self._wake.set()

    def publish_status_soon(self) -> None:
        self._requests.put(("status", None))
        self._wake.set()

    def idle(self) -> bool:
        """Connected, nothing waiting for the centre: the buffer may seal a small batch now."""
        return self.connected and not self._out

    def health(self) -> Health:
        if self.connected:
            refused = self.subscription_refused or (self.last_error and self._out_refused())
            return "degraded" if refused else "ok"
        return "down"

    # -- the thread --------------------------------------------------------------
    def run(self, stop: threading.Event) -> None:
        backoff = self.ucfg.backoff_min_s
        next_attempt = 0.0
        try:
            while not stop.is_set():
                if self._client is None:
                    now = time.monotonic()
                    if now < next_attempt:
                        stop.wait(min(0.5, next_attempt - now))
                        continue
                    delay = self._connect()
                    if delay is not None:  # failed: jittered exponential backoff, capped
                        wait = max(delay, backoff / 2 + self.rng.uniform(0, backoff / 2))
                        backoff = min(self.ucfg.backoff_max_s, backoff * 2)
                        next_attempt = time.monotonic() + wait
                        log.info("broker %s: next attempt in %.1f s", self.ucfg.broker, wait)
                        continue
                client = self._client
                assert client is not None
                busy = self.connected and self._has_work()
                rc = client.loop(timeout=0.005 if busy else 0.1)
                if rc != mqtt.MQTT_ERR_SUCCESS or self._client is None:
                    self._lost(f"connection lost ({mqtt.error_string(rc)})")
                    next_attempt = time.monotonic() + backoff / 2 + self.rng.uniform(0, backoff / 2)
                    backoff = min(self.ucfg.backoff_max_s, backoff * 2)
                    continue
                if self.connected:
                    backoff = self.ucfg.backoff_min_s
                    self._pump()
                    if not self._has_work():
                        self._wake.wait(0.02)
                        self._wake.clear()
        finally:
            self._shutdown()

    def _has_work(self) -> bool:
        return self._wake.is_set() or self._next_seq <= self._last_seq_cache or not self._requests.empty()

    # -- connection --------------------------------------------------------------
    def _connect(self) -> float | None:
        """One attempt; returns None on success, or the minimum delay before the next one."""
        will = self._signed_status("offline")
        client = make_client(self.ucfg, self.client_id, self.topics.status, will)
        client.on_connect = self._on_connect
        client.on_publish = self._on_publish
        client.on_message = self._on_message
        client.on_subscribe = self._on_subscribe
        client.on_disconnect = self._on_disconnect
        self._connack: ReasonCode | None = None
        try:
            client.connect(self.ucfg.host, self.ucfg.port, keepalive=self.ucfg.keepalive_s,
                           clean_start=False, properties=connect_properties(self.ucfg))
            deadline = time.monotonic() + 10
            while self._connack is None and time.monotonic() < deadline:
                if client.loop(timeout=0.1) != mqtt.MQTT_ERR_SUCCESS:
                    break
        except ssl.SSLCertVerificationError as exc:
            return self._connect_failed(client, f"TLS: the broker {self.ucfg.host}:{self.ucfg.port} is not trusted: "
                                        f"certificate verify failed ({exc.verify_message}); check [uplink] ca_file")
        except ssl.SSLError as exc:
            return self._connect_failed(client, f"TLS handshake with {self.ucfg.host}:{self.ucfg.port} failed: "
                                        f"{exc.reason or exc}; check [uplink] ca_file, cert_file and key_file")
        except OSError as exc:
            return self._connect_failed(client, f"cannot reach broker {self.ucfg.host}:{self.ucfg.port}: "
                                        f"{exc.strerror or exc}")
        if self._connack is None:
            return self._connect_failed(client, f"broker {self.ucfg.host}:{self.ucfg.port} did not answer CONNECT "
                                        "(closed the connection: wrong client certificate, or not MQTT 5?)")
        if self._connack.is_failure:
            code = self._connack.value
            msg = f"broker refused the connection: {self._connack} ({code:#04x})"
            if code in AUTH_FAILURES:
                msg += "; fix [uplink] username/password_file or the client certificate"
                self._connect_failed(client, msg)
                return AUTH_RETRY_S
            return self._connect_failed(client, msg)
        self._client = client
        self.connected = True
        self.subscribed = self.subscription_refused = False
        self.connects += 1
        self.last_error = None
        self._reset_tracking()
        client.subscribe([(self.topics.ack, 1), (self.topics.cmd, 1)])
        self._status_force = True
        log.info("connected to broker %s:%d as %s", self.ucfg.host, self.ucfg.port, self.client_id)
        return None

    def _connect_failed(self, client: mqtt.Client, message: str) -> float:
        self.last_error = message
        log.warning("%s", message)
        try:
            if client.is_connected():
                client.disconnect()
                client.loop(timeout=0.01)
        except Exception:  # noqa: S110 - the socket may be half open; nothing to save
            pass
        return 0.0

    def _lost(self, reason: str) -> None:
        if self.connected:
            log.warning("broker %s: %s; will resend from seq %d", self.ucfg.broker, reason,
                        self.store.acked_seq() + 1)
        self.connected = False
        self.subscribed = False
        self.last_error = reason
        if self._client is not None:
            try:
                if self._client.is_connected():
                    self._client.disconnect()
            except Exception:  # noqa: S110
                pass
        self._client = None
        self._reset_tracking()

    def _shutdown(self) -> None:
        """Stop: a signed retained 'offline' status, confirmed by the broker if it can be, then close."""
        client = self._client
        if client is None or not self.connected:
            return
        try:
            info = client.publish(self.topics.status, self._signed_status("offline"), qos=1, retain=True)
            deadline = time.monotonic() + 2
            while not info.is_published() and time.monotonic() < deadline:
                if client.loop(timeout=0.05) != mqtt.MQTT_ERR_SUCCESS:
                    break
            client.disconnect()
            client.loop(timeout=0.05)
        except Exception as exc:  # shutting down: report, never raise
            log.warning("offline status not confirmed: %s", exc)
        self.connected = False
        self.subscribed = False
        self._client = None

    # -- paho callbacks (all on this thread, inside loop()) ------------------------
    def _on_connect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                    properties: Any) -> None:
        self._connack = reason
        max_packet = getattr(properties, "MaximumPacketSize", None)
        if max_packet is not None and max_packet < self.ucfg.max_payload_bytes + 512:
            self.last_error = (f"broker's maximum packet size {max_packet} is below [uplink] max_payload_bytes "
                               f"{self.ucfg.max_payload_bytes}; lower max_payload_bytes")
            log.error("%s", self.last_error)

    def _on_subscribe(self, client: mqtt.Client, userdata: Any, mid: int, reasons: list[ReasonCode],
                      properties: Any) -> None:
        topics = (self.topics.ack, self.topics.cmd)  # the order of the one subscribe() call
        refused = [f"{topic} ({code})" for topic, code in zip(topics, reasons, strict=False) if code.is_failure]
        if refused:
            self.last_error = ("broker refused the subscription to " + ", ".join(refused) +
                               "; central acks and commands cannot arrive: check the broker's ACL")
            log.error("%s", self.last_error)
        self.subscribed = not refused
        self.subscription_refused = bool(refused)

    def _on_disconnect(self, client: mqtt.Client, userdata: Any, flags: Any, reason: ReasonCode,
                       properties: Any) -> None:
        if self._client is client and self.connected:
            self.last_error = f"disconnected by broker: {reason}"

    def _on_publish(self, client: mqtt.Client, userdata: Any, mid: int, reason: ReasonCode,
                    properties: Any) -> None:
        what = self._mids.pop(mid, None)
        if what is None:
            return
        kind, key = what
        failed = reason.is_failure
        if failed:
            # paho marks the message published either way; a refused PUBACK (0x87 not authorized,
            # 0x95 packet too large, 0x97 quota exceeded) is not a delivery.
            self.refused_pubacks += 1
            self.last_error = f"broker refused {kind} {key}: {reason} ({reason.value:#04x})"
            log.warning("%s; retrying with backoff", self.last_error)
        if kind == "batch":
            out = self._out.get(key)
            if out is None:
                return
            now = time.monotonic()
            if failed:
                out.backoff = min(self.ucfg.backoff_max_s, max(self.ucfg.backoff_min_s, out.backoff * 2))
                out.state, out.retry_at = "refused", now + out.backoff + self.rng.uniform(0, out.backoff / 2)
            else:
                out.state, out.since = "delivered", now
        elif kind == "media" and self.media is not None:
            media_id, index = key
            if failed:
                self.media.reset()
            else:
                self.media.chunk_sent(media_id, index)

    def _on_message(self, client: mqtt.Client, userdata: Any, msg: mqtt.MQTTMessage) -> None:
        what = "ack" if msg.topic == self.topics.ack else "command"
        try:
            if msg.topic == self.topics.ack:
                self._handle_ack(self.verifier.ack(bytes(msg.payload)))
            elif msg.topic == self.topics.cmd:
                self._handle_command(self.verifier.command(bytes(msg.payload), time.time_ns() // 1_000_000,
                                                           self.ucfg.command_max_skew_s * 1000))
        except Refused as exc:
            log.warning("refused message on %s: %s", msg.topic, exc)
            self.on_refused(what, exc.code, str(exc))
        except Exception as exc:
            # Never out of on_message: paho would raise it from loop(), the thread would restart
            # without PUBACKing the message, and the broker would deliver it again after the
            # reconnect (our session persists): one poison message, a crash loop.
            log.exception("could not handle a message on %s; refused", msg.topic)
            self.on_refused(what, "internal", f"{what}: {type(exc).__name__} while handling it")

    def _handle_ack(self, ack: SeqAck | MediaAck) -> None:
        if isinstance(ack, MediaAck):
            if self.media is not None:
                self.media.on_ack(ack.media_id, ack.missing)
            return
        try:
            self.store.ack(ack.seq).result(timeout=30)
        except ValueError as exc:
            # Signed by the centre, but for a batch we never sealed: a bug or a replay from
            # another life of this buffer; acting on it would forget what was not received.
            raise Refused(f"ack: {exc}", "unsealed") from None
        except BufferUnavailable:
            # Stopping: the batch stays unacked on disk, is resent after the restart, and the
            # centre acks the duplicate again.
            log.info("ack for seq %d arrived while the buffer is stopping; it will be re-acked", ack.seq)
            return
        for seq in [s for s in self._out if s <= ack.seq]:
            del self._out[seq]
        self._next_seq = max(self._next_seq, ack.seq + 1)
        self._last_progress = time.monotonic()
        self._resend_wait = self.ucfg.resend_after_s  # acks flow again: patience back to normal
        if self.media is not None:
            self._wake.set()

    def _handle_command(self, cmd: Command) -> None:
        from_seq = cmd.args.get("from_seq")
        if cmd.cmd == "resend" and (type(from_seq) is not int or from_seq < 1):
            raise Refused(f"command {cmd.id}: resend needs from_seq, a positive integer", "fields")
        # The id is recorded before anything runs, the resend's rewind included: a command id
        # is carried out at most once (spec), so a replayed resend cannot rewind us again.
        if not self.on_command(cmd):
            raise Refused(f"command {cmd.id} ({cmd.cmd}) was already carried out: replayed or "
                          "delivered again", "replay")
        if cmd.cmd == "resend":
            assert type(from_seq) is int
            self._resend(from_seq)

    # -- sending -----------------------------------------------------------------
    def _reset_tracking(self) -> None:
        self._out = {}
        self._mids = {}
        acked = self.store.acked_seq() if self.store.started else 0
        self._next_seq = acked + 1
        self._last_seq_cache = 0
        self._last_progress = time.monotonic()
        self._last_status = 0.0
        self._last_status_key: Any = None

    def _out_refused(self) -> bool:
        return any(o.state == "refused" for o in self._out.values())

    def _resend(self, from_seq: int) -> None:
        for seq in [s for s in self._out if s >= from_seq]:
            del self._out[seq]
        self._next_seq = from_seq
        self._last_progress = time.monotonic()

    def _pump(self) -> None:
        client = self._client
        assert client is not None
        while True:
            try:
                kind, arg = self._requests.get_nowait()
            except queue.Empty:
                break
            if kind == "resend":
                self._resend(int(arg))
            elif kind == "status":
                self._status_force = True
        now = time.monotonic()
        # Safety net: nothing acked for a while although the broker took our batches -> resend from
        # the lowest unacked (the receiver's session that held them was dropped: a shared-subscription
        # receiver that died, a broker that forgot them). Never while a batch still waits for its
        # PUBACK on this live connection: the broker has not even taken it, and paho sends it again
        # by itself after a reconnect. The wait doubles at each resend that brings no ack, up to
        # RESEND_MAX_FACTOR x resend_after_s, with jitter: in the storm of issue 10, branches resending
        # on a fixed timer multiplied the centre's work while it was slow, and queued gigabytes at
        # the broker.
        oldest = min((o.since for o in self._out.values()), default=now)
        waiting = any(o.state == "inflight" for o in self._out.values())
        if self._out and not waiting and now - max(self._last_progress, oldest) > self._resend_wait:
            log.warning("no central ack for %.0f s; resending from seq %d (next time after %.0f s)",
                        now - self._last_progress, self.store.acked_seq() + 1, self._resend_wait * 2)
            self.resends += 1
            self._resend(self.store.acked_seq() + 1)
            cap = self.ucfg.resend_after_s * RESEND_MAX_FACTOR
            self._resend_wait = min(cap, self._resend_wait * 2) * self.rng.uniform(1.0, 1.1)
        for seq, out in sorted(self._out.items()):
            if out.state == "refused" and out.retry_at <= now:
                self._publish_batches(client, seq, 1, retry=True)
        self._last_seq_cache = self.store.last_seq()
        room = self.ucfg.inflight_window - len(self._out)
        if room > 0 and self._next_seq <= self._last_seq_cache:
            self._publish_batches(client, self._next_seq, room)
        if self.media is not None and self._next_seq > self._last_seq_cache and not self._out_refused():
            self._send_media(client)
        self._maybe_status(client, now)

    def _publish_batches(self, client: mqtt.Client, from_seq: int, limit: int, retry: bool = False) -> None:
        for seq, cose in self.store.batches_from(from_seq, limit):
            info = client.publish(self.topics.batch, cose, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost(f"publish failed: {mqtt.error_string(info.rc)}")
                return
            prior = self._out.get(seq)
            self._out[seq] = Outstanding("inflight", time.monotonic(), backoff=prior.backoff if prior else 0.0)
            self._mids[info.mid] = ("batch", seq)
            if not retry:
                self._next_seq = seq + 1

    def _send_media(self, client: mqtt.Client) -> None:
        assert self.media is not None
        for _ in range(4):  # a few chunks per turn, so acks and new batches are never far behind
            nxt = self.media.next_chunk()
            if nxt is None:
                return
            media_id, index, data = nxt
            info = client.publish(self.topics.media(media_id, index), data, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                self._lost(f"publish failed: {mqtt.error_string(info.rc)}")
                return
            self._mids[info.mid] = ("media", (media_id, index))
            self.media_chunks_sent += 1

    # -- status ------------------------------------------------------------------
    def _signed_status(self, state: str) -> bytes:
        doc = dict(self.status_doc())
        doc["state"] = state
        doc["at"] = time.time_ns() // 1_000_000
        return self.signer.sign_map(doc)

    def _maybe_status(self, client: mqtt.Client, now: float) -> None:
        doc = self.status_doc()
        key = (doc.get("components"), doc.get("state"))
        if not (self._status_force or key != self._last_status_key
                or now - self._last_status >= self.ucfg.status_interval_s):
            return
        self._status_force = False
        self._last_status, self._last_status_key = now, key
        info = client.publish(self.topics.status, self._signed_status("online"), qos=1, retain=True)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self._mids[info.mid] = ("status", "online")

"""Receiver: the reference central server, one MQTT link and one worker thread.

paho's network thread only queues inbound messages. The worker takes whatever has queued
(up to a group cap), judges each message inside one SQLite transaction, commits once
(synchronous=FULL), and only then publishes the signed acks and PUBACKs the broker: an
ack never promises more than is on disk, and the fsync is shared by the whole group. The
queue is bounded (INBOX_MAX); when it is full, paho stops reading and TCP holds the rest
at the broker.
"""

from __future__ import annotations

import heapq
import logging
import queue
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from core.interfaces import Component
from receiver.config import ReceiverConfig
from receiver.database import open_database
from receiver.keys import DeviceRegistry, load_central_key
from receiver.media import MediaAssembler
from receiver.metrics import ReceiverMetrics
from receiver.mqtt import MqttLink
from receiver.retention import Retention
from receiver.verifier import Job, Ticket, Verifier
from receiver.writer import Writer
from wire.batches import MEDIA_ID_RE
from wire.cose import Signer
from wire.messages import command, media_ack, seq_ack
from wire.topics import device_topic, parse_topic

log = logging.getLogger(__name__)

GROUP_MAX = 50  # messages per transaction: up to ~25,000 records, one fsync, acks within ~0.5 s
TICK_S = 0.25  # housekeeping when idle: media asks, resends, refused publishes
PRUNE_EVERY_S = 60.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
INBOX_MAX = 2 * GROUP_MAX
REFUSED_MIN_S = 1.0
REFUSED_MAX_S = 60.0


@dataclass
class Inbound:
    topic: str
    payload: bytes
    mid: int
    qos: int
    gen: int
    ticket: Ticket | None = None  # a batch sent to the verifier process on arrival
    arrived: float = field(default_factory=time.perf_counter)  # for the verify latency metric


class Worker(Component):
    name = "receiver-worker"

    def __init__(self, rx: Receiver):
        self.rx = rx

    def run(self, stop: threading.Event) -> None:
        rx = self.rx
        last_prune = time.monotonic()
        try:
            while not stop.is_set():
                group = self._take(stop)
                if group:
                    self._process_until_done(group, stop)
                try:
                    rx.housekeeping()
                    if time.monotonic() - last_prune >= PRUNE_EVERY_S:
                        last_prune = time.monotonic()
                        rx.prune()
                except Exception:  # a worker that dies is silent; one that logs and goes on is not
                    log.exception("housekeeping failed; going on")
                    stop.wait(1.0)
        finally:
            rx.writer.db.close()

    def _process_until_done(self, group: list[Inbound], stop: threading.Event) -> None:
        """Retry a group whose commit failed (disk full, I/O error) with backoff until it succeeds.

        Its messages are not PUBACKed, and MQTT 5 redelivers an unacked message only after a
        reconnect: dropping the group would leave it stuck in the session, so it is kept and retried.
        """
        delay = RETRY_MIN_S
        while True:
            try:
                self.rx.process(group)
                self.rx.last_error = None
                return
            except self.rx.writer.db.errors as exc:
                self.rx.last_error = f"{type(exc).__name__}: {exc}"
                log.error("cannot commit %d messages (%s); retrying in %.1f s", len(group), exc, delay)
            except Exception as exc:  # a bug outside any one message: keep the group, say so loudly
                self.rx.last_error = f"{type(exc).__name__}: {exc}"
                log.exception("cannot process %d messages; retrying in %.1f s", len(group), delay)
            if stop.wait(delay):
                return
            delay = min(delay * 2, RETRY_MAX_S)

    def _take(self, stop: threading.Event) -> list[Inbound]:
        q = self.rx.inbox
        try:
            first = q.get(timeout=TICK_S)
        except queue.Empty:
            return []
        group = [first]
        while len(group) < GROUP_MAX:
            try:
                group.append(q.get_nowait())
            except queue.Empty:
                break
        return group


class Receiver:
    """start() returns once subscribed; stop() stops the worker and disconnects."""

    def __init__(self, config: ReceiverConfig):
        self.config = config
        cfg = config.receiver
        self.prefix = cfg.topic_prefix
        self.signer = Signer(load_central_key(cfg.key_file))
        self.registry = DeviceRegistry(config)
        # Bounded: Mosquitto 2.0.11 was measured sending ~375 unacked batches despite ReceiveMaximum 200.
        # A full inbox blocks paho's network thread, which stops reading the socket: TCP flow control
        # then holds the rest at the broker instead of in our memory.
        self.inbox: queue.Queue[Inbound] = queue.Queue(maxsize=INBOX_MAX)
        self.writer = Writer(open_database(cfg, writer=True), self.registry, cfg.max_pending_batches)
        self.media = MediaAssembler(
            self.writer.db,
            cfg.media_dir,
            idle_s=cfg.media_idle_s,
            retry_max_s=cfg.media_retry_max_s,
            early_cap_bytes=cfg.max_early_media_mb * 1024 * 1024,
        )
        self.media.load()
        self.verifier = Verifier()
        self.link = MqttLink(cfg, self._on_message)
        self.metrics = ReceiverMetrics(cfg)
        self.retention = Retention(config.retention, cfg.media_dir)
        self.writer.metrics = self.metrics
        self.metrics.gauge("coop_receiver_inbox_messages", "messages queued for the worker", self.inbox.qsize)
        self.metrics.gauge("coop_receiver_broker_connected", "1 while connected to the broker",
                           lambda: float(self.link.connected))
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._last_resend: dict[str, tuple[float, int]] = {}
        self._cmd_lock = threading.Lock()
        self.commits = 0
        self.last_error: str | None = None
        self._health_written: dict[str, str] = {}
        self._refused_delay: dict[tuple[str, bytes], float] = {}
        self._retry_queue: list[tuple[float, str, bytes]] = []

    # -- lifecycle ----------------------------------------------------------------------

    def start(self) -> Receiver:
        self.metrics.start()
        self.verifier.start()
        self._thread = threading.Thread(
            target=Worker(self).run, args=(self._stop,), name="receiver-worker", daemon=True
        )
        self._thread.start()
        p = self.prefix
        try:
            self.link.start([f"{p}/+/+/+/batch", f"{p}/+/+/+/status", f"{p}/+/+/+/media/+/+"])
        except Exception:
            self.stop()
            raise
        log.info("receiver up: %d registered devices, prefix %s", len(self.registry.devices()), p)
        return self

    def stop(self) -> None:
        """Let the worker finish its group (its acks and PUBACKs go out), then disconnect.

        Messages still queued are not PUBACKed: the broker delivers them again next session.
        """
        self._stop.set()
        try:
            if self._thread is not None:
                self._thread.join(timeout=30)
                self._thread = None
        finally:
            self.verifier.stop()  # before link.stop(): paho's thread may be blocked writing to it
            self.link.stop()
            self.verifier.close()
            self.metrics.stop()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inbound ------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, gen: int) -> None:
        job = self._job(topic, payload)
        item = Inbound(topic, payload, mid, qos, gen, None if job is None else self.verifier.submit(job))
        while True:
            try:
                self.inbox.put(item, timeout=0.5)
                return
            except queue.Full:
                if self._stop.is_set():  # stopping: drop it unacked; the broker sends it again next session
                    return

    def process(self, group: list[Inbound]) -> None:
        w = self.writer
        t0 = time.perf_counter()
        w.begin()
        try:
            for msg in group:
                self._dispatch(msg)
            for dev, seq, man in w.result.manifests:
                self.media.on_manifest(
                    dev, w.state(dev).did, seq, man, device_topic(self.prefix, dev, "batch"), w.reject
                )
            result = w.commit()
        except BaseException:
            w.rollback()
            raise
        self.commits += 1
        self.metrics.committed(len(group), time.perf_counter() - t0)
        # Durable now: tell the agents, then release the broker's copies.
        for dev in sorted(result.ack_devs):
            self.link.publish(device_topic(self.prefix, dev, "ack"), seq_ack(self.signer, dev, w.state(dev).contiguous))
        self._publish_media_acks()
        for msg in group:
            self.link.ack(msg.mid, msg.qos, msg.gen)
        self._ask_resends()

    def _job(self, topic: str, payload: bytes) -> Job | None:
        """The check_batch work for the verifier process, for a batch that _dispatch would check."""
        t = parse_topic(self.prefix, topic)
        if t is None or t.kind != "batch" or len(payload) > self.config.receiver.max_payload_bytes:
            return None
        keys = self.registry.cached_keys(t.dev)  # unknown: the worker rescans and rejects it
        return None if keys is None else Job(t.dev, payload, keys)

    def _dispatch(self, msg: Inbound) -> None:
        w = self.writer
        t = parse_topic(self.prefix, msg.topic)
        dev = t.dev if t else "?"
        if t is None:
            w.reject(
                dev,
                msg.topic,
                "bad_topic",
                "topic is not PREFIX/SOCIETY/BRANCH/DEVICE/batch|status|media/ID/N",
            )
            return
        if len(msg.payload) > self.config.receiver.max_payload_bytes:
            w.reject(
                dev,
                msg.topic,
                "too_large",
                f"{len(msg.payload)} bytes; the cap is {self.config.receiver.max_payload_bytes}",
            )
            return
        w.flush_states()  # so a rollback to the savepoint can reload this device's state from the DB
        w.db.execute("SAVEPOINT msg")
        try:
            if t.kind == "batch":
                verdict = None
                if msg.ticket is not None:
                    verdict = self.verifier.verdict(msg.ticket)
                    self.metrics.verified(time.perf_counter() - msg.arrived)
                w.on_batch(t.dev, msg.topic, msg.payload, verdict)
            elif t.kind == "status":
                if msg.payload:  # an empty retained message only clears the broker's copy
                    w.on_status(t.dev, msg.topic, msg.payload)
            elif self.registry.keys_for(t.dev) is None:
                w.reject(dev, msg.topic, "unknown_device", "media chunk from a device with no registered key")
            elif t.index < 0 or not t.media_id or not _media_id_ok(t.media_id):
                w.reject(dev, msg.topic, "bad_topic", "MEDIA_ID must match [A-Za-z0-9_-]{1,64}, INDEX be decimal")
            else:
                self.media.on_chunk(t.dev, msg.topic, t.media_id, t.index, msg.payload, w.reject)
            w.db.execute("RELEASE msg")
        except w.db.errors:
            raise  # the database, not the message: the whole group is retried
        except Exception as exc:  # one poison message must not block everything queued behind it
            w.db.execute("ROLLBACK TO msg")
            w.db.execute("RELEASE msg")
            w.forget(t.dev)
            log.exception("internal error on %s", msg.topic)
            w.reject(dev, msg.topic, "internal_error", f"{type(exc).__name__}: {exc}")

    # -- outbound -----------------------------------------------------------------------

    def _publish_media_acks(self) -> None:
        for dev, media_id, missing in self.media.take_outbox().acks:
            self.link.publish(device_topic(self.prefix, dev, "ack"), media_ack(self.signer, dev, media_id, missing))

    def _ask_resends(self) -> None:
        """One signed resend per device with a gap, at most every resend_interval_s."""
        now = time.monotonic()
        interval = self.config.receiver.resend_interval_s
        for dev, from_seq in self.writer.gaps():
            last = self._last_resend.get(dev)
            if last is not None and last[1] == from_seq and now - last[0] < interval:
                continue
            self._last_resend[dev] = (now, from_seq)
            log.info("gap at %s: asking for resend from seq %d", dev, from_seq)
            self.send_command(dev, "resend", {"from_seq": from_seq})

    def _health(self) -> None:
        """Write the link state and last error to the database when they change (status reads them)."""
        now = {"broker": "connected" if self.link.connected else "disconnected", "last_error": self.last_error or ""}
        if now != self._health_written:
            self.writer.set_health(now)
            self._health_written = now

    def housekeeping(self) -> None:
        self._health()
        self.media.tick()
        self._publish_media_acks()
        self._ask_resends()
        self._retry_refused()

    def _retry_refused(self) -> None:
        """Publish again what the broker refused, each message with its own doubling delay (1 s .. 60 s).

        Acks and commands are idempotent for the agent, so a late or repeated one does no harm; a
        refusal that will not go away (an ACL) must not become a tight loop of errors.
        """
        now = time.monotonic()
        for r in self.link.take_refused():
            key = (r.topic, r.payload)
            delay = min(self._refused_delay.get(key, REFUSED_MIN_S / 2) * 2, REFUSED_MAX_S)
            self._refused_delay[key] = delay
            heapq.heappush(self._retry_queue, (now + delay, r.topic, r.payload))
        while self._retry_queue and self._retry_queue[0][0] <= now:
            _, topic, payload = heapq.heappop(self._retry_queue)
            self.link.publish(topic, payload)
        if len(self._refused_delay) > 10_000:
            self._refused_delay.clear()

    def prune(self) -> None:
        """Every PRUNE_EVERY_S: old rejections go, and the coming months' partitions are made (PostgreSQL)."""
        w = self.writer
        w.db.begin()
        try:
            w.prune_rejections(self.config.receiver.max_rejections_per_device)
            w.db.commit()
        except BaseException:
            w.db.rollback()
            raise
        w.db.maintain(int(time.time() * 1000))
        self.retention.maybe_run(w.db)  # when due ([retention] run_every_s); off unless enabled

    def send_command(self, dev: str, cmd: str, args: Mapping[str, Any]) -> str:
        """Publish a signed command to the device (QoS 1); returns its id."""
        with self._cmd_lock:
            cid, cose = command(self.signer, dev, cmd, args)
        self.link.publish(device_topic(self.prefix, dev, "cmd"), cose)
        log.info("command %s %s sent to %s", cid, cmd, dev)
        return cid


def _media_id_ok(media_id: str) -> bool:
    return bool(MEDIA_ID_RE.match(media_id))

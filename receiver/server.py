"""Receiver: the reference central server, one MQTT link, a screener thread and one worker thread.

paho's network thread only queues inbound messages. The screener (receiver/screen.py) looks
up the hashes of the queued batches, so bytes already stored skip the verifier, and sends
the rest to the verifier process. The worker takes whatever is ready (up to a group cap),
locks the group's devices in one order, judges each message inside one transaction, commits
once, and only then publishes the signed acks (coalesced per device: receiver/acks.py) and
PUBACKs the broker: an ack never promises more than is committed, and the fsync is shared by
the whole group. Both queues are bounded; when they are full, paho stops reading and TCP
holds the rest at the broker. Every wait is bounded and watches the stop event, so stop()
completes under any load (issue 10: it hung behind a thread blocked on a full queue).

Several receivers may share the batch and media topics (`shared_group`, MQTT 5 shared
subscriptions). The database is then the point of order: a device's chain head is read
under a row lock in each transaction (never trusted from a cache), a batch that comes before
its predecessor is held in `pending` until the predecessor lands on whichever receiver, and
an ack says the head the database holds (docs/centre-deployment.md).
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Hashable, Mapping
from typing import Any

from core.interfaces import Component
from receiver import search
from receiver.acks import AckOutbox
from receiver.config import ReceiverConfig
from receiver.database import open_database
from receiver.keys import DeviceRegistry, load_central_key
from receiver.media import MediaAssembler
from receiver.metrics import ReceiverMetrics
from receiver.mqtt import MqttLink
from receiver.retention import Retention
from receiver.screen import Inbound, Screener, put_until
from receiver.verifier import Verifier
from receiver.writer import Writer
from wire.batches import MEDIA_ID_RE
from wire.cose import Signer
from wire.messages import command, media_ack, seq_ack
from wire.topics import device_topic, parse_topic

log = logging.getLogger(__name__)

GROUP_MAX = 50  # messages per transaction: up to ~25,000 records, one fsync, acks within ~0.5 s
TICK_S = 0.25  # housekeeping when idle: media asks, resends, refused publishes
INDEX_IDLE_BATCHES = 50  # search index: batches indexed per idle tick
INDEX_MAX_LAG_S = 300.0  # ... and while busy, once the oldest unindexed batch is this old
INDEX_BUSY_BATCHES = 10
PRUNE_EVERY_S = 60.0
RETRY_MIN_S = 0.5
RETRY_MAX_S = 30.0
INBOX_MAX = 2 * GROUP_MAX
READY_MAX = GROUP_MAX
RESEND_ASK_MAX_S = 600.0  # the longest wait between two resend asks for the same gap
REFUSED_MIN_S = 1.0
REFUSED_MAX_S = 60.0
# Receivers sharing a subscription get one device's batches in turn, so a batch often comes just
# before its predecessor lands on the other receiver. Holding it in `pending` costs a write of the
# whole batch, a read and a second check; deferring it (unacked, in memory, its verdict kept) to a
# later group costs a lock. Past DEFER_MAX_S, or with DEFER_MAX batches deferred, it is held as before.
DEFER_RETRY_S = 0.05
DEFER_MAX_S = 2.0
DEFER_MAX = GROUP_MAX
STOP_WORKER_S = 6.0  # the worker finishes its group within this, or is left (unacked: redelivered)
STOP_THREAD_S = 2.0


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
                    rx.index_search(idle=not group)
                    rx.housekeeping()
                    if time.monotonic() - last_prune >= PRUNE_EVERY_S:
                        last_prune = time.monotonic()
                        rx.prune()
                except Exception:  # a worker that dies is silent; one that logs and goes on is not
                    log.exception("housekeeping failed; going on")
                    stop.wait(1.0)
        finally:
            try:
                rx.final_acks()
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
        """New messages first, then the deferred ones whose time has come (their predecessors may be among the new)."""
        q = self.rx.ready
        due = self.rx.due_deferred(time.monotonic())
        wait = self.rx.next_deferred_s(time.monotonic()) if not due else 0.0
        try:
            first = q.get(timeout=min(TICK_S, wait)) if wait > 0 else q.get_nowait()
        except queue.Empty:
            return due
        group = [first]
        while len(group) + len(due) < GROUP_MAX:
            try:
                group.append(q.get_nowait())
            except queue.Empty:
                break
        return group + due


class Receiver:
    """start() returns once subscribed; stop() stops the threads and disconnects, within seconds."""

    def __init__(self, config: ReceiverConfig):
        self.config = config
        cfg = config.receiver
        self.prefix = cfg.topic_prefix
        self.signer = Signer(load_central_key(cfg.key_file))
        self.registry = DeviceRegistry(config)
        # Bounded: Mosquitto 2.0.11 was measured sending ~375 unacked batches despite ReceiveMaximum 200.
        # A full inbox holds paho's network thread (in bounded waits), which stops reading the socket:
        # TCP flow control then holds the rest at the broker instead of in our memory.
        self.inbox: queue.Queue[Inbound] = queue.Queue(maxsize=INBOX_MAX)
        self.ready: queue.Queue[Inbound] = queue.Queue(maxsize=READY_MAX)
        self.writer = Writer(open_database(cfg, writer=True), self.registry, cfg.max_pending_batches)
        self.media = MediaAssembler(
            self.writer.db,
            cfg.media_dir,
            idle_s=cfg.media_idle_s,
            retry_max_s=cfg.media_retry_max_s,
            early_cap_bytes=cfg.max_early_media_mb * 1024 * 1024,
            eager_asks=cfg.shared_group is None,
        )
        self.media.load()
        self.verifier = Verifier()
        self.screener = Screener(
            self.prefix,
            cfg.max_payload_bytes,
            self.registry.cached_keys,
            lambda: open_database(cfg, writer=False),
            self.verifier,
            self.inbox,
            self.ready,
            GROUP_MAX,
        )
        self.acks = AckOutbox(self._publish_ack)
        self.link = MqttLink(cfg, self._on_message)
        self.metrics = ReceiverMetrics(cfg)
        self.retention = Retention(config.retention, cfg.media_dir)
        self.writer.metrics = self.metrics
        self.metrics.gauge("coop_receiver_inbox_messages", "messages queued for the worker", self.inbox.qsize)
        self.metrics.gauge(
            "coop_receiver_broker_connected", "1 while connected to the broker", lambda: float(self.link.connected)
        )
        self._stop = threading.Event()
        self._backfill: tuple[int, int] | None = (0, 0)  # search index: batches stored before a crash
        self._threads: list[threading.Thread] = []
        self._gap_seen: dict[str, tuple[float, int, int]] = {}  # dev -> (since, from_seq, asks so far)
        self._cmd_lock = threading.Lock()
        self.commits = 0
        self.deferrals = 0  # times a batch ahead of its chain was kept for a later group instead of held
        self._deferred: list[Inbound] = []  # not acked at the broker; judged again from retry_at
        self._deferring: list[Inbound] = []  # those of the group being processed
        self.last_error: str | None = None
        self._health_written: dict[str, str] = {}
        self._refused_delay: dict[Hashable, float] = {}
        self._retry: dict[Hashable, tuple[float, str, bytes]] = {}  # newest refused publish per key

    # -- lifecycle ----------------------------------------------------------------------

    def subscriptions(self) -> list[str]:
        """Batches and media through the shared group when one is set; status always to each receiver.

        A retained message is never sent on a shared subscription (MQTT 5, 4.8.2), so each receiver
        subscribes to status on its own, gets the retained copies, and stores them idempotently.
        """
        p = self.prefix
        group = self.config.receiver.shared_group
        share = f"$share/{group}/" if group else ""
        return [f"{share}{p}/+/+/+/batch", f"{p}/+/+/+/status", f"{share}{p}/+/+/+/media/+/+"]

    def start(self) -> Receiver:
        self.metrics.start()
        self.verifier.start()
        for name, target in (("receiver-screener", self.screener.run), ("receiver-worker", Worker(self).run)):
            t = threading.Thread(target=target, args=(self._stop,), name=name, daemon=True)
            t.start()
            self._threads.append(t)
        try:
            self.link.start(self.subscriptions())
        except Exception:
            self.stop()
            raise
        log.info(
            "receiver up: %d registered devices, prefix %s%s",
            len(self.registry.devices()),
            self.prefix,
            f", shared group {self.config.receiver.shared_group}" if self.config.receiver.shared_group else "",
        )
        return self

    def stop(self) -> None:
        """Let the worker finish its group (its acks and PUBACKs go out), then disconnect; bounded in time.

        Messages still queued are not PUBACKed: the broker delivers them again next session (or, for
        a shared subscription, the agents' resends reach another receiver). Every thread waits in
        bounded steps that watch the stop event, so this returns within ~10 s under any load.
        """
        self._stop.set()
        try:
            worker = next((t for t in self._threads if t.name == "receiver-worker"), None)
            if worker is not None:
                worker.join(timeout=STOP_WORKER_S)
                if worker.is_alive():
                    log.warning(
                        "the worker did not finish its group within %.0f s; its messages stay unacked", STOP_WORKER_S
                    )
        finally:
            self.verifier.stop()  # a screener blocked writing to the verifier gets EPIPE now
            for t in self._threads:
                if t.name != "receiver-worker":
                    t.join(timeout=STOP_THREAD_S)
            self._threads = []
            if not self.link.wait_published(STOP_THREAD_S):
                log.warning("stopping: the broker did not confirm our last acks within %.0f s; "
                            "the agents' resends will be acked again", STOP_THREAD_S)
            self.link.stop()
            self.verifier.close()
            self.metrics.stop()

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- inbound ------------------------------------------------------------------------

    def _on_message(self, topic: str, payload: bytes, mid: int, qos: int, gen: int) -> None:
        # paho's thread: never blocks for good. Stopping, the message is dropped unacked (the broker
        # keeps it for the next session); otherwise wait for room (back-pressure), watching the stop.
        if not self._stop.is_set():
            put_until(self.inbox, Inbound(topic, payload, mid, qos, gen), self._stop)

    def _group_devices(self, group: list[Inbound]) -> list[str]:
        """The registered devices this group writes for, in one order for every receiver (no deadlocks)."""
        devs = set()
        for msg in group:
            t = parse_topic(self.prefix, msg.topic)
            if t is not None and self.registry.cached_keys(t.dev) is not None:
                devs.add(t.dev)
        return sorted(devs)

    def process(self, group: list[Inbound]) -> None:
        w = self.writer
        t0 = time.perf_counter()
        self._deferring = []
        w.begin()
        try:
            w.lock_devices(self._group_devices(group))
            for msg in group:
                self._dispatch(msg)
            w.flush_appends()  # the group's batches, in a few statements, before their media rows
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
            self.acks.want(dev, w.state(dev).contiguous)
        self._flush_acks()
        self._publish_media_acks()
        kept = {id(m) for m in self._deferring}
        now = time.monotonic()
        for msg in self._deferring:
            msg.deferred_at = now if msg.deferred_at is None else msg.deferred_at
            msg.retry_at = now + DEFER_RETRY_S
        self._deferred.extend(self._deferring)
        self.deferrals += len(self._deferring)
        for msg in group:
            if id(msg) not in kept:
                self.link.ack(msg.mid, msg.qos, msg.gen)
        self._ask_resends()

    def due_deferred(self, now: float) -> list[Inbound]:
        """Take the deferred batches whose retry time has come (the worker's thread only)."""
        if not self._deferred:
            return []
        due = [m for m in self._deferred if m.retry_at <= now]
        if due:
            self._deferred = [m for m in self._deferred if m.retry_at > now]
        return due

    def next_deferred_s(self, now: float) -> float:
        """Seconds until a deferred batch is due (TICK_S when none waits)."""
        return max(0.0, min((m.retry_at for m in self._deferred), default=now + TICK_S) - now)

    def _may_defer(self, msg: Inbound) -> bool:
        if self.config.receiver.shared_group is None:
            return False  # one receiver gets a device's batches in order: a gap is a loss, hold it at once
        if msg.ticket is None:
            return False  # checked in the worker (no verifier process): judging it again would check it again
        if msg.deferred_at is not None:
            return time.monotonic() - msg.deferred_at < DEFER_MAX_S
        return len(self._deferred) + len(self._deferring) < DEFER_MAX

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
        w.begin_message(t.dev)  # a savepoint only if the message writes (receiver/scope.py)
        try:
            if t.kind == "batch":
                if msg.known:
                    w.on_known(t.dev, msg.topic, msg.digest, msg.payload)
                else:
                    verdict = None
                    if msg.ticket is not None:
                        verdict = self.verifier.verdict(msg.ticket)  # kept on the ticket: a deferred batch reuses it
                        if msg.deferred_at is None:
                            self.metrics.verified(time.perf_counter() - msg.arrived)
                    if w.on_batch(t.dev, msg.topic, msg.payload, verdict, defer_ahead=self._may_defer(msg)):
                        self._deferring.append(msg)
            elif t.kind == "status":
                if msg.payload:  # an empty retained message only clears the broker's copy
                    w.on_status(t.dev, msg.topic, msg.payload)
            elif self.registry.keys_for(t.dev) is None:
                w.reject(dev, msg.topic, "unknown_device", "media chunk from a device with no registered key")
            elif t.index < 0 or not t.media_id or not _media_id_ok(t.media_id):
                w.reject(dev, msg.topic, "bad_topic", "MEDIA_ID must match [A-Za-z0-9_-]{1,64}, INDEX be decimal")
            else:
                self.media.on_chunk(t.dev, msg.topic, t.media_id, t.index, msg.payload, w.reject)
            w.end_message()
        except w.db.errors:
            raise  # the database, not the message: the whole group is retried
        except Exception as exc:  # one poison message must not block everything queued behind it
            w.abort_message()
            log.exception("internal error on %s", msg.topic)
            w.reject(dev, msg.topic, "internal_error", f"{type(exc).__name__}: {exc}")

    # -- outbound -----------------------------------------------------------------------

    def _publish_ack(self, dev: str, seq: int) -> None:
        self.link.publish(device_topic(self.prefix, dev, "ack"), seq_ack(self.signer, dev, seq), key=("ack", dev))

    def _flush_acks(self, final: bool = False) -> None:
        for key in self.link.take_done():
            if isinstance(key, tuple) and key[0] == "ack":
                self.acks.accepted(key[1])
        self.acks.flush(final)

    def final_acks(self) -> None:
        """The worker's last act before stop() disconnects: every ack owed for what it committed."""
        self._flush_acks(final=True)
        self._publish_media_acks()

    def _publish_media_acks(self) -> None:
        for dev, media_id, missing in self.media.take_outbox().acks:
            key = ("media", dev, media_id)
            self._retry.pop(key, None)  # this answer supersedes a refused older one
            self.link.publish(
                device_topic(self.prefix, dev, "ack"), media_ack(self.signer, dev, media_id, missing), key=key
            )

    def _ask_resends(self) -> None:
        """One signed resend per device with a gap, at most every resend_interval_s across all receivers.

        With a shared group, batches of one device reach the receivers out of order, so a gap is
        normal for a while: its predecessor may sit in another receiver's queue for as long as
        that queue takes to drain. So we never ask while we are busy ourselves (a storm: the first
        1,000-branch storm asked 24,000 resends in 5 minutes, each rewinding a branch and adding
        work, a loop that fed itself), a gap must last resend_interval_s, each further ask for the
        same gap waits twice as long (capped at RESEND_ASK_MAX_S), and the ask is claimed in the
        database so that only one receiver sends it.
        """
        shared = self.config.receiver.shared_group is not None
        if shared and (self.ready.qsize() or self.inbox.qsize()):
            return
        now = time.monotonic()
        interval = self.config.receiver.resend_interval_s
        gaps = self.writer.gaps()
        for dev, from_seq in gaps:
            seen = self._gap_seen.get(dev)
            if seen is None or seen[1] != from_seq:
                self._gap_seen[dev] = seen = (now, from_seq, 0)
                if shared:
                    continue
            elif now - seen[0] < min(interval * 2 ** seen[2], RESEND_ASK_MAX_S):
                continue
            if not self.writer.claim_resend(dev, from_seq, interval):
                continue
            self._gap_seen[dev] = (now, from_seq, seen[2] + 1)
            log.info("gap at %s: asking for resend from seq %d", dev, from_seq)
            self.send_command(dev, "resend", {"from_seq": from_seq})
        if len(self._gap_seen) > len(gaps) + 1000:
            open_gaps = {d for d, _ in gaps}
            self._gap_seen = {d: v for d, v in self._gap_seen.items() if d in open_gaps}

    def _health(self) -> None:
        """Write the link state and last error to the database when they change (status reads them)."""
        now = {"broker": "connected" if self.link.connected else "disconnected", "last_error": self.last_error or ""}
        if now != self._health_written:
            self.writer.set_health(now, self.config.receiver.client_id)
            self._health_written = now

    def index_search(self, *, idle: bool) -> None:
        """Fill the search index after the ack: when idle, or when it lags INDEX_MAX_LAG_S behind.

        In a storm the agents' acks come first and search trails by at most about INDEX_MAX_LAG_S;
        at start, the batches a crash left unindexed are backfilled in idle time.
        """
        w = self.writer
        if w.unindexed and (idle or w.index_lag_s() >= INDEX_MAX_LAG_S):
            w.index_stored(INDEX_IDLE_BATCHES if idle else INDEX_BUSY_BATCHES)
        elif idle and self._backfill is not None:
            n, self._backfill = search.backfill_step(w.db, self._backfill, INDEX_IDLE_BATCHES)
            if n:
                log.info("search index: %d records of earlier batches indexed", n)

    def housekeeping(self) -> None:
        self._health()
        self.media.tick()
        self._publish_media_acks()
        self._retry_refused()
        self._flush_acks()
        self._ask_resends()

    def _retry_refused(self) -> None:
        """Publish again what the broker refused, the newest per key only, each key with its own backoff.

        Seq acks go back to the ack outbox (the newest head is sent, never the refused bytes); a
        media ack is kept per file, the newest answer only; commands each on their own. Delays double
        from 1 s to 60 s: a refusal that will not go away (an ACL) must not become a tight loop.
        """
        now = time.monotonic()
        for r in self.link.take_refused():
            if isinstance(r.key, tuple) and r.key[0] == "ack":
                self.acks.refused(r.key[1])
                continue
            key: Hashable = r.key if r.key is not None else (r.topic, r.payload)
            delay = min(self._refused_delay.get(key, REFUSED_MIN_S / 2) * 2, REFUSED_MAX_S)
            self._refused_delay[key] = delay
            self._retry[key] = (now + delay, r.topic, r.payload)
        for key, (at, topic, payload) in list(self._retry.items()):
            if at <= now:
                del self._retry[key]
                self.link.publish(topic, payload, key=key)
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

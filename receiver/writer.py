"""The write side: each device's chain, idempotent storage of batches and records, rejections.

One instance, used only by the server's worker thread, inside transactions the worker
opens per group of messages (group commit: one fsync for many batches). The chain rules
(uplink-v1 "Batch"): seq N is stored only when N-1 is stored and prev equals SHA-256 of
the stored bytes of N-1. A batch ahead of the chain is held in `pending` (durably, so the
broker message can be acknowledged) until the gap fills. A used seq with other bytes, or a
prev that does not match, is a chain break: the batch is kept as evidence, never stored.

Several writers (receivers sharing one subscription, one database) may work at once, so a
device's chain head is never trusted from memory across transactions: each transaction reads
it afresh under the device's row lock (SELECT ... FOR UPDATE on PostgreSQL; SQLite's BEGIN
IMMEDIATE already serializes whole transactions), and the worker takes a group's locks in
device order before anything else, so two writers neither both extend nor both break a chain,
and never deadlock over each other's devices.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections import deque
from dataclasses import dataclass, field, replace

from receiver import registry as regdb
from receiver.database import Database, RecordRow, StoredBatch
from receiver.keys import DeviceRegistry
from receiver.metrics import NULL as NULL_METRICS
from receiver.metrics import ReceiverMetrics
from receiver.scope import ScopedDatabase
from receiver.search import index_batch
from receiver.verifier import Verdict
from wire.batches import Batch, Manifest, Rejected, check_batch, check_status, verify_signed

log = logging.getLogger(__name__)

LOCK_CHUNK = 500  # devices locked and read per statement at the start of a group


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass
class DevState:
    did: int
    dev: str
    contiguous: int
    last_hash: bytes
    highest_seen: int
    pending: int
    dirty: bool = False


@dataclass
class Staged:
    """A batch that extends its chain, judged and waiting to be written with the rest of its group."""

    st: DevState
    topic: str
    batch: Batch
    received_at: int


@dataclass
class GroupResult:
    """What a committed group obliges the server to publish."""

    ack_devs: set[str] = field(default_factory=set)
    manifests: list[tuple[str, int, Manifest]] = field(default_factory=list)


class Writer:
    metrics: ReceiverMetrics = NULL_METRICS  # the server sets its own when metrics are on

    def __init__(self, db: Database, registry: DeviceRegistry, max_pending: int):
        self.db = ScopedDatabase(db)
        self.registry = registry
        self.max_pending = max_pending
        self._states: dict[str, DevState] = {}
        self.result = GroupResult()
        registry.refresh(db)  # keys added with `coop-receiver device add` exist only in the database
        self.known = 0  # batches acknowledged again on their hash alone
        self.held = 0  # batches held in `pending` (ahead of their chain)
        # The search index (receiver/search.py) is filled after the ack, not in the ingest transaction:
        # batches committed and not yet indexed, oldest first (did, dev, seq, all ids new, committed at).
        self.unindexed: deque[tuple[int, str, int, bool, float]] = deque()
        self._stored_now: list[tuple[int, str, int, bool, float]] = []
        # Batches that extend their chains are written once per group (flush_appends), not one by one.
        self._staged: list[Staged] = []
        self._staged_hash: dict[tuple[int, int], bytes] = {}
        self._message: tuple[str | None, DevState | None, int, int] | None = None
        # Set when a message flushed the group's staged batches (a key rotation): what to restage if it fails.
        self._flushed_in_message: tuple[list[Staged], int] | None = None

    # -- transactions -------------------------------------------------------------------

    def begin(self) -> None:
        self.db.begin()
        self._stored_now = []
        self._staged, self._staged_hash = [], {}
        self.result = GroupResult()
        self.registry.refresh(self.db)  # a `device revoke` takes effect at the next group
        self._states.clear()  # another receiver may have moved any chain since our last commit

    def lock_devices(self, devs: list[str]) -> None:
        """Take the row locks of these devices now, in this order (sorted by the caller: no deadlock).

        Only devices that have a row: a device is made (and locked) when something of it is accepted,
        so one whose messages are all rejected stays unknown.
        """
        todo = [dev for dev in devs if dev not in self._states]
        for i in range(0, len(todo), LOCK_CHUNK):
            self._load_many(todo[i : i + LOCK_CHUNK])

    def commit(self) -> GroupResult:
        self.flush_appends()
        self.flush_states()
        self.db.commit()
        self.unindexed.extend(self._stored_now)
        self._stored_now = []
        return self.result

    def rollback(self) -> None:
        self.db.rollback()
        self._stored_now = []
        self._staged, self._staged_hash = [], {}
        self._message = None
        self._states.clear()  # reload from the database: the cached states may hold rolled-back values
        self.registry.invalidate()  # and a rotation applied in the undone transaction

    # -- the search index, after the ack -------------------------------------------------

    def index_lag_s(self) -> float:
        """How long the oldest committed batch has waited for the search index (0 when none waits)."""
        return time.monotonic() - self.unindexed[0][4] if self.unindexed else 0.0

    def index_stored(self, limit: int) -> int:
        """Index up to `limit` committed batches, oldest first, in a transaction of their own.

        Why not in the ingest transaction: extracting and inserting the search rows cost more CPU
        than storing the batch (measured: 5.6k records/s on PostgreSQL with it inline, docs/
        benchmarks.md), and the agents wait for acks, not for search. A crash before this runs
        leaves the batch stored and unindexed; the receiver's start-up backfill indexes it.
        """
        if not self.unindexed:
            return 0
        items = [self.unindexed.popleft() for _ in range(min(limit, len(self.unindexed)))]
        self.db.begin()
        try:
            for did, dev, seq, all_new, _ in items:
                row = self.db.execute("SELECT cose FROM batches WHERE did = ? AND seq = ?", (did, seq)).fetchone()
                if row is not None:  # None: its message's savepoint was rolled back
                    index_batch(self.db, did, dev, seq, bytes(row[0]), all_new)
            self.db.commit()
        except BaseException:
            self.db.rollback()
            self.unindexed.extendleft(reversed(items))
            raise
        return len(items)

    # -- device state -------------------------------------------------------------------

    def state(self, dev: str) -> DevState:
        st = self._states.get(dev) or self._load(dev, create=True)
        assert st is not None
        return st

    def _load(self, dev: str, *, create: bool) -> DevState | None:
        """Read the device's chain head under its row lock (made first if create), and cache it for this transaction."""
        # for_update is the driver's own constant (" FOR UPDATE" or ""), never input
        select = "SELECT did, contiguous, last_hash, highest_seen FROM devices WHERE dev = ?" + self.db.for_update  # noqa: S608
        row = self.db.execute(select, (dev,)).fetchone()
        if row is None and not create:
            return None
        if row is None:  # another receiver may insert it at the same moment: one row wins, both use it
            self.db.execute("INSERT INTO devices (dev) VALUES (?) ON CONFLICT (dev) DO NOTHING", (dev,))
            row = self.db.execute(select, (dev,)).fetchone()
        pending = self.db.execute("SELECT count(*) FROM pending WHERE did = ?", (row[0],)).fetchone()[0]
        st = DevState(did=row[0], dev=dev, contiguous=row[1], last_hash=row[2], highest_seen=row[3], pending=pending)
        self._states[dev] = st
        return st

    def _load_many(self, devs: list[str]) -> None:
        """Lock and read the chain heads of existing devices in one statement (in dev order: no deadlock)."""
        marks = ", ".join("?" * len(devs))
        select = (
            f"SELECT did, dev, contiguous, last_hash, highest_seen FROM devices WHERE dev IN ({marks}) "  # noqa: S608
            f"ORDER BY dev{self.db.for_update}"
        )
        rows = self.db.execute(select, devs).fetchall()
        if not rows:
            return
        dids = ", ".join("?" * len(rows))
        held = dict(
            self.db.execute(
                f"SELECT did, count(*) FROM pending WHERE did IN ({dids}) GROUP BY did",  # noqa: S608
                [r[0] for r in rows],
            ).fetchall()
        )
        for r in rows:
            self._states[r[1]] = DevState(
                did=r[0], dev=r[1], contiguous=r[2], last_hash=r[3], highest_seen=r[4], pending=held.get(r[0], 0)
            )

    def flush_states(self) -> None:
        rows = [(s.contiguous, s.last_hash, s.highest_seen, s.did) for s in self._states.values() if s.dirty]
        if rows:
            self.db.executemany(
                "UPDATE devices SET contiguous = ?, last_hash = ?, highest_seen = ? WHERE did = ?", rows
            )
        for s in self._states.values():
            s.dirty = False

    def forget(self, dev: str) -> None:
        """Drop the cached state of dev; it is read again when needed."""
        self._states.pop(dev, None)
        self.registry.invalidate()

    # -- one message of the group --------------------------------------------------------

    def begin_message(self, dev: str | None) -> None:
        """Remember what handling one message may change, so abort_message can undo exactly that."""
        st = self._states.get(dev) if dev is not None else None
        self._message = (dev, replace(st) if st is not None else None, len(self._staged), len(self.result.manifests))
        self._flushed_in_message = None
        self.db.begin_message()

    def end_message(self) -> None:
        self.db.end_message()
        self._message = self._flushed_in_message = None

    def abort_message(self) -> None:
        """Undo one message: its writes (the savepoint), its staged batches and its device's cached head."""
        self.db.abort_message()
        if self._message is None:
            return
        dev, snapshot, staged, manifests = self._message
        self._message = None
        if self._flushed_in_message is not None:
            # The savepoint's rollback undid the earlier messages' batches written by that flush: stage them again.
            flushed, stored_now = self._flushed_in_message
            self._flushed_in_message = None
            self._staged = flushed[:staged]
            del self._stored_now[stored_now:]
        else:
            del self._staged[staged:]
        self._staged_hash = {(i.st.did, i.batch.seq): i.batch.hash for i in self._staged}
        del self.result.manifests[manifests:]
        if dev is not None:
            if snapshot is not None:
                self._states[dev] = snapshot
            else:
                self._states.pop(dev, None)
        self.registry.invalidate()

    def flush_appends(self) -> None:
        """Write the group's staged batches and their record index: a few statements for the whole group.

        A record id already stored, or repeated earlier in this group, is skipped (the first is kept)
        and reported as duplicate_record_id, as the spec's "unique per device" asks.
        """
        if not self._staged:
            return
        staged, self._staged, self._staged_hash = self._staged, [], {}
        if self._message is not None and self._flushed_in_message is None:
            self._flushed_in_message = (staged, len(self._stored_now))
        seen: set[tuple[int, str]] = set()
        batches: list[StoredBatch] = []
        records: list[list[RecordRow]] = []
        for item in staged:
            did, b = item.st.did, item.batch
            batches.append((did, b.seq, b.hash, b.sealed, len(b.rows), item.received_at, b.cose))
            rows: list[RecordRow] = []
            for i, r in enumerate(b.rows):
                if (did, r[0]) not in seen:
                    seen.add((did, r[0]))
                    rows.append((did, r[0], b.seq, i, r[1], r[2], r[3]))
            records.append(rows)
        new = self.db.insert_stored(batches, records)
        per_dev: dict[int, list[int]] = {}
        at = now_ms()
        for item, inserted in zip(staged, new, strict=True):
            st, b = item.st, item.batch
            dups = len(b.rows) - inserted
            self._stored_now.append((st.did, st.dev, b.seq, not dups, time.monotonic()))  # for the search index
            if dups:
                log.warning("%s seq %d: %d record ids were already stored from an earlier batch", st.dev, b.seq, dups)
                self.reject(
                    st.dev,
                    item.topic,
                    "duplicate_record_id",
                    f"{dups} record ids of seq {b.seq} were stored before; kept the first",
                    b.seq,
                )
            totals = per_dev.setdefault(st.did, [0, 0])
            totals[0] += inserted
            totals[1] += dups
            self.metrics.stored(inserted)
        self.db.executemany(
            "UPDATE devices SET records = records + ?, duplicate_ids = duplicate_ids + ?, last_batch_at = ? "
            "WHERE did = ?",
            [(n, d, at, did) for did, (n, d) in sorted(per_dev.items())],
        )

    def set_health(self, values: dict[str, str], receiver: str) -> None:
        """Record this receiver's own state (broker link, last error) in its own small transaction.

        Keyed by the receiver's client id (RECEIVER:NAME), so receivers sharing one database each keep
        their own row instead of overwriting one another's.
        """
        at = now_ms()
        self.db.begin()
        try:
            self.db.executemany(
                "INSERT INTO health (key, value, at) VALUES (?, ?, ?) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, at = excluded.at",
                [(f"{receiver}:{k}", v, at) for k, v in values.items()],
            )
            self.db.commit()
        except BaseException:
            self.rollback()
            raise

    def claim_resend(self, dev: str, from_seq: int, interval_s: float) -> bool:
        """True for the one receiver that may ask dev to resend from from_seq now (at most every interval_s).

        Its own statement outside the group's transaction: the claim is a courtesy between receivers,
        not part of what an ack promises.
        """
        at = now_ms()
        cur = self.db.execute(
            "UPDATE devices SET resend_asked_at = ? WHERE dev = ? AND contiguous + 1 = ? "
            "AND (resend_asked_at IS NULL OR resend_asked_at <= ?)",
            (at, dev, from_seq, at - int(interval_s * 1000)),
        )
        return cur.rowcount == 1

    def gaps(self) -> list[tuple[str, int]]:
        """(device, first missing seq) for every device with verified batches beyond its chain."""
        rows = self.db.execute("SELECT dev, contiguous FROM devices WHERE highest_seen > contiguous").fetchall()
        return [(r[0], r[1] + 1) for r in rows]

    # -- rejections ---------------------------------------------------------------------

    def reject(self, dev: str, topic: str, code: str, reason: str, seq: int | None = None) -> None:
        log.warning("rejected from %s on %s: %s: %s", dev, topic, code, reason)
        self.metrics.rejected(code)
        self.db.execute(
            "INSERT INTO rejections (at, dev, topic, code, reason, seq) VALUES (?, ?, ?, ?, ?, ?)",
            (now_ms(), dev, topic, code, reason, seq),
        )

    def _chain_break(self, st: DevState, topic: str, seq: int, cose_hash: bytes, cose: bytes, reason: str) -> None:
        log.error("CHAIN BREAK %s seq %d: %s", st.dev, seq, reason)
        self.db.execute(
            "INSERT INTO chain_breaks (did, seq, hash, reason, first_at, cose) VALUES (?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (did, seq, hash) DO UPDATE SET times = chain_breaks.times + 1",
            (st.did, seq, cose_hash, reason, now_ms(), cose),
        )
        self.reject(st.dev, topic, "chain_break", reason, seq)

    def prune_rejections(self, keep: int) -> None:
        devs = [r[0] for r in self.db.execute("SELECT dev FROM rejections GROUP BY dev HAVING count(*) > ?", (keep,))]
        for dev in devs:
            self.db.execute(
                "DELETE FROM rejections WHERE dev = ? AND rid <= (SELECT rid FROM rejections "
                "WHERE dev = ? ORDER BY rid DESC LIMIT 1 OFFSET ?)",
                (dev, dev, keep),
            )

    # -- batches ------------------------------------------------------------------------

    def on_batch(
        self, dev: str, topic: str, cose: bytes, verdict: Verdict | None = None, *, defer_ahead: bool = False
    ) -> bool:
        """Judge and store one batch; `verdict` is check_batch's outcome when the verifier process made it.

        With defer_ahead, a batch ahead of its chain is neither held nor counted: True is returned
        and the caller keeps the message (unacked at the broker) to judge it again shortly, when
        its predecessor has likely landed on another receiver (receiver/server.py).
        """
        if verdict is None:
            keys = self.registry.keys_for(dev)
            if keys is None:
                self.reject(dev, topic, "unknown_device", "no public key registered for this device")
                return False
            try:
                verdict = check_batch(cose, dev, keys)
            except Rejected as exc:
                verdict = exc
        elif isinstance(verdict, Rejected) and verdict.code == "unknown_kid":
            # Checked ahead with the keys of its arrival: a rotation stored since may have made it known.
            try:
                verdict = check_batch(cose, dev, self.registry.keys_for(dev) or {})
            except Rejected as exc:
                verdict = exc
        if isinstance(verdict, Rejected):
            if verdict.code == "chain_break" and verdict.seq is not None:
                st = self.state(dev)
                self._chain_break(st, topic, verdict.seq, hashlib.sha256(cose).digest(), cose, verdict.reason)
            else:
                self.reject(dev, topic, verdict.code, verdict.reason, verdict.seq)
            return False
        if not isinstance(verdict, Batch):
            raise verdict  # a bug while checking: the server rejects this message as internal_error
        batch = verdict
        if self._kid_refused(topic, batch):
            return False
        st = self.state(dev)
        if defer_ahead and batch.seq > st.contiguous + 1:
            return True
        if batch.seq > st.highest_seen:
            st.highest_seen = batch.seq
            st.dirty = True
        if batch.seq <= st.contiguous:
            self._seen_before(st, topic, batch)
        elif batch.seq == st.contiguous + 1:
            if self._append(st, topic, batch):
                self._drain_pending(st, topic)
        else:
            self._hold(st, topic, batch)
        return False

    def on_known(self, dev: str, topic: str, digest: bytes, cose: bytes) -> None:
        """A batch whose exact bytes the screener found stored or held: acknowledge, without a second check.

        Its bytes were verified when they were stored. Under the device's lock, make sure they still
        are (retention may have removed them since the lookup); if not, judge the batch in full.
        """
        st = self.state(dev)
        if (
            digest not in self._staged_hash.values()
            and self.db.execute(
                "SELECT 1 FROM batches WHERE did = ? AND hash = ? "
                "UNION ALL SELECT 1 FROM pending WHERE did = ? AND hash = ?",
                (st.did, digest, st.did, digest),
            ).fetchone()
            is None
        ):
            self.on_batch(dev, topic, cose)
            return
        log.debug("%s: batch stored already (same bytes); acknowledged again without checking it twice", dev)
        self.known += 1
        self.result.ack_devs.add(dev)

    def _seen_before(self, st: DevState, topic: str, batch: Batch) -> None:
        stored = self._staged_hash.get((st.did, batch.seq))
        if stored is None:
            row = self.db.execute("SELECT hash FROM batches WHERE did = ? AND seq = ?", (st.did, batch.seq)).fetchone()
            stored = bytes(row[0]) if row is not None else None
        if stored == batch.hash:
            log.debug("duplicate %s seq %d; re-ack", st.dev, batch.seq)
            self.metrics.outcome("duplicate")
        else:
            self._chain_break(
                st,
                topic,
                batch.seq,
                batch.hash,
                batch.cose,
                f"seq {batch.seq} is already stored with other bytes",
            )
        self.result.ack_devs.add(st.dev)  # either way the agent learns where the chain stands

    def _append(self, st: DevState, topic: str, batch: Batch) -> bool:
        if batch.prev != st.last_hash:
            self._chain_break(
                st,
                topic,
                batch.seq,
                batch.hash,
                batch.cose,
                f"prev of seq {batch.seq} is not SHA-256 of the stored seq {batch.seq - 1}",
            )
            return False
        self._staged.append(Staged(st, topic, batch, now_ms()))
        self._staged_hash[(st.did, batch.seq)] = batch.hash
        st.contiguous, st.last_hash, st.dirty = batch.seq, batch.hash, True
        self.result.ack_devs.add(st.dev)
        self.result.manifests.extend((st.dev, batch.seq, m) for m in batch.media)
        if not regdb.rotation_records(batch):
            return True
        self.flush_appends()  # a rotation's registry rows follow their batch, as when it was written alone
        if regdb.on_stored(
            self.db, st.dev, topic, batch, self.registry.entries(st.dev), self.registry.rotation_policy, self.reject
        ):
            self.registry.refresh(self.db, force=True)  # the next batch of this group may be signed by the new key
        return True

    def _kid_refused(self, topic: str, batch: Batch) -> bool:
        """Refuse (recorded, not acked) a batch whose key may not sign its seq: revoked, retired, not yet valid."""
        problem = self.registry.check_kid(batch.dev, batch.kid, batch.seq)
        if problem is None:
            return False
        self.reject(batch.dev, topic, problem[0], problem[1], batch.seq)
        return True

    def _hold(self, st: DevState, topic: str, batch: Batch) -> None:
        row = self.db.execute("SELECT hash FROM pending WHERE did = ? AND seq = ?", (st.did, batch.seq)).fetchone()
        if row is not None:
            if row[0] != batch.hash:
                self._chain_break(
                    st,
                    topic,
                    batch.seq,
                    batch.hash,
                    batch.cose,
                    f"seq {batch.seq} is already held with other bytes",
                )
            return
        if st.pending >= self.max_pending:
            self.reject(
                st.dev,
                topic,
                "pending_full",
                f"seq {batch.seq} not held: {st.pending} batches already wait for seq {st.contiguous + 1}",
                batch.seq,
            )
            return
        self.db.execute(
            "INSERT INTO pending (did, seq, hash, cose, received_at) VALUES (?, ?, ?, ?, ?)",
            (st.did, batch.seq, batch.hash, batch.cose, now_ms()),
        )
        st.pending += 1
        self.held += 1
        self.metrics.outcome("held")
        log.info("%s seq %d held: waiting for seq %d", st.dev, batch.seq, st.contiguous + 1)

    def _drain_pending(self, st: DevState, topic: str) -> None:
        """After the chain grew: store the held batches that now follow it, in order."""
        while st.pending:
            row = self.db.execute(
                "SELECT cose FROM pending WHERE did = ? AND seq = ?", (st.did, st.contiguous + 1)
            ).fetchone()
            if row is None:
                return
            self.db.execute("DELETE FROM pending WHERE did = ? AND seq = ?", (st.did, st.contiguous + 1))
            st.pending -= 1
            keys = self.registry.keys_for(st.dev) or {}
            try:
                batch = check_batch(row[0], st.dev, keys)
            except Rejected as exc:
                self.reject(st.dev, topic, exc.code, f"held batch: {exc.reason}", exc.seq)
                return
            if self._kid_refused(topic, batch):
                return
            if not self._append(st, topic, batch):
                return

    # -- status -------------------------------------------------------------------------

    def on_status(self, dev: str, topic: str, cose: bytes) -> None:
        keys = self.registry.keys_for(dev)
        if keys is None:
            self.reject(dev, topic, "unknown_device", "status from a device with no registered key")
            return
        try:
            kid, payload = verify_signed(cose, dev, keys)
            check_status(payload)
        except Rejected as exc:
            self.reject(dev, topic, exc.code, exc.reason)
            return
        entry = self.registry.entries(dev).get(kid)
        if entry is not None and entry.revoked_at is not None:  # a status has no seq: only revocation applies
            self.reject(dev, topic, "key_revoked", f"status signed by revoked kid {kid.hex()}")
            return
        st = self.state(dev)
        self.db.execute(
            "UPDATE devices SET status_cose = ?, status_json = ?, status_at = ? WHERE did = ?",
            (cose, json.dumps(payload, default=repr, sort_keys=True), now_ms(), st.did),
        )

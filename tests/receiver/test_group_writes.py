"""A group's batches are written together at its end: what that must not change, on SQLite and PostgreSQL.

The writer stages every batch that extends its chain and writes the group's batches and record
index in a few statements (Writer.flush_appends), and a message's savepoint is taken only when
it writes (receiver/scope.py). These tests hold the old one-by-one meaning to it: ids repeated
within a group, the same bytes twice in a group, a message that fails after others were
staged, and a key rotation (which writes the staged batches mid-message) that fails.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from receiver.store import ReceiverStore
from receiver.writer import Writer
from tests.receiver.helpers import DeviceSim
from tests.receiver.test_key_rotation import rotation_record, signed_batch
from tests.receiver.test_writer import config_for, writer_for
from wire.cose import kid_for

STORES = ("sqlite", "postgresql")


def _message(w: Writer, dev: DeviceSim, cose: bytes, *, fail: bool = False) -> None:
    """One message as the server's worker handles it: its own scope, undone if handling fails."""
    w.begin_message(dev.dev)
    w.on_batch(dev.dev, f"coop/v1/{dev.dev}/batch", cose)
    if fail:
        w.abort_message()
    else:
        w.end_message()


def test_ids_repeated_within_a_group_keep_the_first(tmp_path: Path, store_toml: str) -> None:
    a, b = DeviceSim("soc-a/branch-1/agent-1"), DeviceSim("soc-a/branch-2/agent-1")
    cfg = config_for(tmp_path, a, store_toml)
    w = writer_for(cfg)
    first = a.record()
    again = dict(a.record(), id=first["id"])  # the same id with other content, one batch later
    w.begin()
    _message(w, a, a.next_batch(records=[first, a.record()]))
    _message(w, a, a.next_batch(records=[again, a.record()]))
    _message(w, a, a.next_batch(2))
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        state = s.device_state(a.dev)
        assert state["acked_seq"] == 3 and state["records"] == 5 and state["duplicate_record_ids"] == 1
        kept = [r for r in s.records(a.dev) if r["id"] == first["id"]]
        assert len(kept) == 1 and kept[0]["seq"] == 1 and kept[0]["data"] == first["data"]
        assert [(r["code"], r["seq"]) for r in s.rejections(a.dev)] == [("duplicate_record_id", 2)]
        assert [seq for seq, _ in s.batch_bytes(a.dev)] == [1, 2, 3]
        assert s.device_state(b.dev)["known"] is False
    w.db.close()


def test_the_same_bytes_twice_in_a_group_are_acked_again_not_a_chain_break(tmp_path: Path, store_toml: str) -> None:
    a = DeviceSim("soc-a/branch-1/agent-1")
    cfg = config_for(tmp_path, a, store_toml)
    w = writer_for(cfg)
    one, two = a.next_batch(1), a.next_batch(1)
    w.begin()
    _message(w, a, one)
    _message(w, a, one)  # a resend that reached the same group: judged against the staged batch
    _message(w, a, two)
    w.begin_message(a.dev)  # and once more through the screener's path (bytes already seen)
    w.on_known(a.dev, "t", hashlib.sha256(two).digest(), two)
    w.end_message()
    result = w.commit()
    assert result.ack_devs == {a.dev} and w.known == 1
    with ReceiverStore(cfg.receiver) as s:
        state = s.device_state(a.dev)
        assert state["acked_seq"] == 2 and state["chain_breaks"] == 0 and state["records"] == 2
        assert s.batch_bytes(a.dev) == [(1, one), (2, two)]
    w.db.close()


def test_a_failed_message_undoes_only_itself(tmp_path: Path, store_toml: str) -> None:
    a, b = DeviceSim("soc-a/branch-1/agent-1"), DeviceSim("soc-a/branch-2/agent-1")
    cfg = config_for(tmp_path, a, store_toml)
    w = writer_for(cfg)
    a1, a2, b1 = a.next_batch(2), a.next_batch(2), b.next_batch(2)
    w.begin()
    _message(w, a, a1)
    _message(w, a, a2, fail=True)  # staged, then its handling failed: as if it never came
    _message(w, b, b1)  # an unregistered device: a rejection, written behind its own savepoint
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        assert s.device_state(a.dev)["acked_seq"] == 1 and [q for q, _ in s.batch_bytes(a.dev)] == [1]
        assert s.device_state(a.dev)["records"] == 2
        assert [r["code"] for r in s.rejections(b.dev)] == ["unknown_device"]
    w.begin()
    _message(w, a, a2)  # sent again: it extends the chain, no break
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        state = s.device_state(a.dev)
        assert state["acked_seq"] == 2 and state["chain_breaks"] == 0 and state["records"] == 4
    w.db.close()


def test_a_failed_rotation_stages_the_earlier_batches_again(tmp_path: Path, store_toml: str) -> None:
    """A rotation writes the group's staged batches inside its own message; if that message fails,
    the savepoint's rollback takes those writes back, and they must still be stored at commit."""
    a = DeviceSim("soc-a/branch-1/agent-1")
    cfg = config_for(tmp_path, a, store_toml)
    w = writer_for(cfg)
    new = Ed25519PrivateKey.generate()
    plain = a.next_batch(3)
    rotation = signed_batch(a, a.key, [rotation_record(a, new)])
    w.begin()
    _message(w, a, plain)
    _message(w, a, rotation, fail=True)
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        state = s.device_state(a.dev)
        assert state["acked_seq"] == 1 and state["records"] == 3
        assert [q for q, _ in s.batch_bytes(a.dev)] == [1]
    w.begin()
    assert w.registry.check_kid(a.dev, kid_for(new.public_key()), 3) is not None  # not applied
    _message(w, a, rotation)
    after = signed_batch(a, new, [a.record()])
    _message(w, a, after)  # the same group: signed by the new key, known since the rotation
    w.commit()
    with ReceiverStore(cfg.receiver) as s:
        state = s.device_state(a.dev)
        assert state["acked_seq"] == 3 and state["records"] == 5 and state["chain_breaks"] == 0
        assert s.rejections(a.dev) == []
    w.db.close()

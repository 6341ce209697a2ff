"""The verifier process gives check_batch's verdicts, in order, and the worker checks in-process without it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from receiver.verifier import Job, Verifier
from tests.receiver.helpers import DeviceSim
from wire.batches import Batch, Rejected, check_batch
from wire.cose import kid_for


@pytest.fixture
def verifier() -> Iterator[Verifier]:
    v = Verifier(use_process=True)
    v.start()
    try:
        yield v
    finally:
        v.stop()
        v.close()


def _jobs(dev: DeviceSim) -> list[Job]:
    keys = {kid_for(dev.key.public_key()): dev.key.public_key()}
    good = [dev.next_batch(4) for _ in range(3)]
    forged = dev.sign(dev.payload([dev.record()], 9, b"\x00" * 32), key=DeviceSim("x/y/z").key)
    bad_seq1 = dev.sign(dev.payload([dev.record()], 1, b"\x01" * 32))  # chain_break, with its seq
    return [Job(dev.dev, c, keys) for c in (good[0], forged, good[1], bad_seq1, good[2])]


def _same(a: object, b: object) -> bool:
    if isinstance(a, Rejected) and isinstance(b, Rejected):
        return (a.code, a.reason, a.seq) == (b.code, b.reason, b.seq)
    return isinstance(a, Batch) and a == b


def test_the_process_gives_check_batchs_verdicts_in_order(verifier: Verifier) -> None:
    jobs = _jobs(DeviceSim("soc/br/dev"))
    tickets = [verifier.submit(j) for j in jobs]
    assert all(t.child is not None for t in tickets)
    for job, ticket in zip(jobs, tickets, strict=True):
        try:
            expected: object = check_batch(job.cose, job.dev, job.keys)
        except Rejected as exc:
            expected = exc
        got = verifier.verdict(ticket)
        assert _same(got, expected), (got, expected)
        assert verifier.verdict(ticket) is got  # kept for a retried group
    codes = [v.code for v in (verifier.verdict(t) for t in tickets) if isinstance(v, Rejected)]
    assert codes == ["unknown_kid", "chain_break"]


def test_a_lost_child_means_checking_in_process_then_a_new_child(
    verifier: Verifier, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("receiver.verifier.RESTART_AFTER_S", 0.0)
    jobs = _jobs(DeviceSim("soc/br/dev"))
    first = verifier.submit(jobs[0])
    assert first.child is not None
    first.child.proc.kill()
    first.child.proc.join(5)
    assert isinstance(verifier.verdict(first), Batch)  # checked here instead
    later = [verifier.submit(j) for j in jobs[1:]]
    assert later[-1].child is not None and later[-1].child is not first.child
    assert [type(verifier.verdict(t)).__name__ for t in later] == ["Rejected", "Batch", "Rejected", "Batch"]


def test_without_a_process_everything_is_checked_in_the_worker() -> None:
    v = Verifier(use_process=False)
    v.start()
    jobs = _jobs(DeviceSim("soc/br/dev"))
    tickets = [v.submit(j) for j in jobs]
    assert all(t.child is None for t in tickets)
    assert [type(v.verdict(t)).__name__ for t in tickets] == ["Batch", "Rejected", "Batch", "Rejected", "Batch"]

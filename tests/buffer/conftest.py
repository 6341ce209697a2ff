from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from buffer.store import Store
from buffer.writer import SealOptions
from wire.cose import Signer

DEV = "coop-a/branch-1/agent-1"


@pytest.fixture
def signer() -> Signer:
    return Signer(Ed25519PrivateKey.generate())


@pytest.fixture
def make_store(tmp_path: Path, signer: Signer) -> Iterator[Callable[..., Store]]:
    made: list[Store] = []

    def make(path: Path | None = None, **opts: object) -> Store:
        o = {"device": DEV, "batch_max_records": 500, "batch_max_age_s": 0.05, "max_payload_bytes": 262144,
             "max_db_bytes": 0}
        o.update(opts)
        s = Store(path or tmp_path / "buffer.sqlite3", signer, SealOptions(**o)).start()  # type: ignore[arg-type]
        made.append(s)
        return s

    yield make
    for s in made:
        s.close()

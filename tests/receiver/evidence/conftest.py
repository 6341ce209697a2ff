"""One branch's evidence at the centre per store, made once per module through the real ingest
path (tests/receiver/evidence/site.py), then read by the export with the receiver stopped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from receiver.config import ReceiverConfig, load_receiver_config
from receiver.evidence.export import ExportSummary, export_bundle
from receiver.evidence.keys import lookup_for
from receiver.keys import load_central_key
from receiver.server import Receiver
from receiver.store import ReceiverStore
from tests.peers.mosquitto import Mosquitto
from tests.receiver.evidence.site import Site, make_clip, make_jpeg, populate
from tests.receiver.helpers import AgentSide, DeviceSim, write_config
from wire.cose import Signer


@dataclass
class Env:
    """A stopped receiver's store holding the site's evidence, and what exports it."""

    kind: str
    cfg: ReceiverConfig
    site: Site
    signer: Signer
    other: DeviceSim  # a registered device with nothing stored
    second: DeviceSim  # another till of the branch, with two batches stored
    second_ids: list[str]

    @property
    def dev(self) -> str:
        return self.site.dev.dev

    def export(self, out: Path, selection: list[tuple[str, str]] | None = None, **kw: object) -> ExportSummary:
        with ReceiverStore(self.cfg.receiver) as store, out.open("wb") as f:
            sel = selection if selection is not None else [(self.dev, self.site.void_id)]
            return export_bundle(
                store.conn, self.cfg.receiver.media_dir, sel, self.signer, f,
                exporter_name="Ministry control centre (test)", keys=lookup_for(self.cfg), **kw,  # type: ignore[arg-type]
            )


@pytest.fixture(scope="module")
def clips(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    d = tmp_path_factory.mktemp("clips")
    return {
        "void": make_clip(d / "void.mp4"),
        "other": make_clip(d / "other.mp4", pattern="testsrc2"),
        "snap": make_jpeg(d / "snap.jpg"),
    }


def build(tmp: Path, kind: str, request: pytest.FixtureRequest, clips: dict[str, Path]) -> Env:
    extra = ""
    if kind == "postgresql":
        pg = request.getfixturevalue("pg_server")
        (tmp / "pg.password").write_text(pg.password + "\n")
        extra = f'database_url = "{pg.url(pg.new_database(), with_password=False)}"\n' \
                'database_password_file = "pg.password"'
    broker = Mosquitto(tmp / "mosquitto").start()
    dev, other = DeviceSim("soc-a/branch-1/till-3"), DeviceSim("soc-a/branch-2/till-1")
    second = DeviceSim("soc-a/branch-1/till-4")
    try:
        toml = write_config(tmp, broker.url, [dev, other, second], extra=f"media_idle_s = 0.5\n{extra}")
        cfg = load_receiver_config(toml)
        rx = Receiver(cfg).start()
        agent = AgentSide(broker.port)
        try:
            site = populate(rx, agent, dev, clips["void"], [clips["other"], clips["snap"]])
            second_recs = [[second.record() for _ in range(2)] for _ in range(2)]
            for recs in second_recs:
                agent.publish("batch", second.dev, second.next_batch(records=recs))
            agent.wait_ack(rx.signer.key.public_key(), second.dev, 2)
        finally:
            agent.close()
            rx.stop()
    finally:
        broker.stop()
    return Env(kind, cfg, site, Signer(load_central_key(cfg.receiver.key_file)), other, second,
               [r["id"] for recs in second_recs for r in recs])


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
        clips: dict[str, Path]) -> Iterator[Env]:
    yield build(tmp_path_factory.mktemp(f"site-{request.param}"), request.param, request, clips)


@pytest.fixture(scope="module")
def sqlite_env(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory,
               clips: dict[str, Path]) -> Env:
    return build(tmp_path_factory.mktemp("site"), "sqlite", request, clips)

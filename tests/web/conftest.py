"""Fixtures for the evidence view: a centre whose store holds real signed batches and a real H.264 clip.

The store is filled through the receiver's own Writer and MediaAssembler (what `coop-receiver
run` does with each MQTT message), from batches signed by DeviceSim; the clip is an MP4 made
by ffmpeg (libx264), announced by a signed `media` record and reassembled from its chunks.
A module that sets `STORES = ("sqlite", "postgresql")` runs against both stores
(tests/receiver/conftest.py's parametrization and its real PostgreSQL).
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import uvicorn
from selenium import webdriver
from selenium.webdriver.chrome.options import Options
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import WebDriverWait

from receiver.config import ReceiverConfig, load_receiver_config
from receiver.database import open_database
from receiver.keys import DeviceRegistry
from receiver.media import MediaAssembler
from receiver.web import accounts
from receiver.web.schema import open_web_state
from receiver.writer import Writer
from tests.page.conftest import CHROMIUM_ARGS
from tests.peers.net import free_port, wait_for
from tests.receiver.conftest import pg_server, store_kind, store_toml  # noqa: F401 - fixtures
from tests.receiver.helpers import DeviceSim, write_config

T0 = 1_764_000_000_000  # 2025-11-24 16:00:00 UTC: every record of the fixture is near it
PASSWORD = "correct horse battery"
ROOT = Path(__file__).resolve().parents[2]
OUTPUT = ROOT / "test-output" / "evidence-web"  # screenshots, kept for a person to look at (ignored by git)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "store_kind" in metafunc.fixturenames:
        metafunc.parametrize("store_kind", getattr(metafunc.module, "STORES", ("sqlite",)), indirect=True)


def make_mp4(path: Path, seconds: float = 4.0) -> Path:
    """A real H.264 (baseline) MP4 with its index first, as the branch's clipper writes them."""
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        pytest.fail("ffmpeg is missing (Debian package ffmpeg; scripts/install-system-deps.sh)")
    subprocess.run(
        [ffmpeg, "-hide_banner", "-loglevel", "error", "-f", "lavfi", "-i", "testsrc=size=320x240:rate=25",
         "-t", str(seconds), "-c:v", "libx264", "-pix_fmt", "yuv420p", "-profile:v", "baseline",
         "-movflags", "+faststart", "-y", str(path)],
        check=True, timeout=60,
    )
    return path


def sale(rid_seq: int, receipt: str, *, at: int, till: int = 3, void: bool = False, refund: bool = False,
         gtin: str = "06291041500213") -> dict[str, Any]:
    data: dict[str, Any] = {
        "receipt": receipt, "till": till, "currency": "KWD", "total": 1250,
        "lines": [{"gtin": gtin, "qty": 2, "unit_price": 250, "amount": 500},
                  {"gtin": "5000112637922", "qty": 1, "unit_price": 750, "amount": 750}],
    }
    if void:
        data["void"] = True
    if refund:
        data["refund"] = True
    return {"id": f"0190a000-0000-7000-8000-{rid_seq:012d}", "kind": "sale", "at": at, "src": "api:pos-3", "data": data}


@dataclass
class Centre:
    """The receiver's config and store, filled; the web state with accounts; where things are."""

    config: ReceiverConfig
    tmp: Path
    devices: dict[str, DeviceSim]
    clip: Path
    ids: dict[str, str] = field(default_factory=dict)  # names of interesting records -> "did:seq:pos"

    def store_batch(self, dev: str, records: list[dict[str, Any]], chunks: dict[str, bytes] | None = None) -> int:
        """Sign and store one batch of `dev` as the receiver's worker does; chunks: media id -> file bytes."""
        sim = self.devices[dev]
        cose = sim.next_batch(records=records)
        db = open_database(self.config.receiver, writer=True)
        try:
            writer = Writer(db, DeviceRegistry(self.config), 100)
            media = MediaAssembler(db, self.config.receiver.media_dir, idle_s=1, retry_max_s=5,
                                   early_cap_bytes=10**8)
            media.load()
            writer.begin()
            writer.on_batch(dev, f"coop/v1/{dev}/batch", cose)
            for d, seq, man in writer.result.manifests:
                media.on_manifest(d, writer.state(d).did, seq, man, f"coop/v1/{d}/batch", writer.reject)
            for media_id, blob in (chunks or {}).items():
                size = 64 * 1024
                for i in range(0, max(1, -(-len(blob) // size))):
                    media.on_chunk(dev, f"coop/v1/{dev}/media/{media_id}/{i}", media_id, i,
                                   blob[i * size:(i + 1) * size], writer.reject)
            writer.commit()
            writer.index_stored(1000)  # what the receiver's worker does after the ack
            did = int(writer.state(dev).did)
            rej = db.execute("SELECT code, reason FROM rejections").fetchall()
            assert not rej, rej
        finally:
            db.close()
        return did

    def web_db(self) -> Any:
        r = self.config.receiver
        return open_web_state(r.database_url, r.database_password(), self.config.web.db)


def media_record(n: int, media_id: str, blob: bytes, camera: str, start: int, end: int,
                 reason: dict[str, Any]) -> dict[str, Any]:
    size = 64 * 1024
    return {"id": f"0190a000-0000-7000-9000-{n:012d}", "kind": "media", "at": end, "src": "camera:" + camera,
            "data": {"media": media_id, "camera": camera, "type": "video/mp4", "start": start, "end": end,
                     "size": len(blob), "sha256": hashlib.sha256(blob).digest(), "chunk": size,
                     "chunks": -(-len(blob) // size), "reason": reason}}


@pytest.fixture
def centre(tmp_path: Path, store_toml: str) -> Iterator[Centre]:  # noqa: F811 - the fixture imported above
    """Two societies; branch soc-a/branch-1 has a void with a clip, a refund, waste, a variance, a camera gap."""
    sims = {d: DeviceSim(d) for d in ("soc-a/branch-1/agent-1", "soc-a/branch-2/agent-1", "soc-b/branch-9/agent-1")}
    path = write_config(tmp_path, "mqtt://127.0.0.1:1", list(sims.values()), extra=store_toml)
    cfg = load_receiver_config(path)
    cfg.web.db = tmp_path / "web.sqlite3"
    clip = make_mp4(tmp_path / "clip.mp4")
    c = Centre(cfg, tmp_path, sims, clip)
    blob = clip.read_bytes()
    void_at = T0 + 60_000
    a1, a2, b9 = list(sims)
    c.store_batch(a1, [sale(1, "R-1001", at=T0), sale(2, "R-1002", at=T0 + 30_000, gtin="06291041500299")])
    did = c.store_batch(a1, [
        sale(3, "R-1003", at=void_at, void=True),
        media_record(1, "clip-void-1", blob, "till-3", void_at - 5_000, void_at + 5_000,
                     {"record": "0190a000-0000-7000-8000-000000000003", "rule": "voids"}),
        {"id": "0190a000-0000-7000-a000-000000000001", "kind": "gap", "at": void_at, "src": "agent",
         "data": {"what": "media", "camera": "door", "start": void_at - 20_000, "end": void_at + 40_000,
                  "reason": "camera offline"}},
    ], chunks={"clip-void-1": blob})
    c.ids["void"] = f"{did}:2:0"
    c.store_batch(a1, [
        sale(4, "R-1004", at=T0 + 120_000, refund=True),
        {"id": "0190a000-0000-7000-b000-000000000001", "kind": "stock_move", "at": T0 + 130_000, "src": "api:erp",
         "data": {"type": "waste", "gtin": "06291041500213", "qty": 3, "from": "shelf", "to": "bin", "doc": "W-77"}},
        {"id": "0190a000-0000-7000-b000-000000000002", "kind": "count_session", "at": T0 + 140_000,
         "src": "scanner:store", "data": {"session": "ST-5", "state": "closed", "locations": ["aisle-1"],
                                          "totals": {"06291041500213": {"qty": 9, "variance": -2}}}},
        {"id": "0190a000-0000-7000-b000-000000000003", "kind": "count_session", "at": T0 + 150_000,
         "src": "scanner:store", "data": {"session": "ST-6", "state": "open", "locations": ["aisle-2"]}},
    ])
    c.store_batch(a2, [sale(10, "R-2001", at=T0 + 10_000, void=True)])
    c.store_batch(b9, [sale(20, "R-9001", at=T0 + 20_000, void=True, till=7)])
    db = c.web_db()
    try:
        accounts.add_authority(db, "ministry", ["*"], ["*"])
        accounts.add_authority(db, "partner", ["soc-b"], ["sale"])
        accounts.add_account(db, "admin", PASSWORD, "admin", "ministry")
        accounts.add_account(db, "olga", PASSWORD, "operator", "ministry")
        accounts.add_account(db, "audrey", PASSWORD, "auditor", "ministry")
        accounts.add_account(db, "pat", PASSWORD, "auditor", "partner")
    finally:
        db.close()
    yield c


@dataclass
class Web:
    """The web application served by real uvicorn on a loopback port."""

    url: str
    centre: Centre
    app: Any


@pytest.fixture
def web(centre: Centre) -> Iterator[Web]:
    from receiver.web.app import create_app

    port = free_port()
    centre.config.web.port = port
    app = create_app(centre.config)
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, name="web-under-test", daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=20, what="uvicorn started")
    try:
        yield Web(f"http://127.0.0.1:{port}", centre, app)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        app.state.web.close()


class Browser:
    def __init__(self, driver: webdriver.Chrome, base: str, shots: Path, test: str) -> None:
        self.d = driver
        self.base = base
        self.shots = shots
        self.test = test
        self.n = 0

    def get(self, path: str) -> None:
        self.d.get(self.base + path)

    def shot(self, name: str) -> Path:
        self.n += 1
        path = self.shots / f"{self.test}-{self.n:02d}-{name}.png"
        self.d.save_screenshot(str(path))
        OUTPUT.mkdir(parents=True, exist_ok=True)
        shutil.copy(path, OUTPUT / path.name)
        return path

    def text(self) -> str:
        return str(self.d.find_element(By.TAG_NAME, "body").text)

    def wait(self, pred: object, timeout: float = 15) -> None:
        WebDriverWait(self.d, timeout).until(pred)  # type: ignore[arg-type]

    def login(self, name: str, password: str = PASSWORD) -> None:
        self.get("/login")
        self.d.find_element(By.ID, "name").send_keys(name)
        self.d.find_element(By.ID, "password").send_keys(password)
        self.d.find_element(By.ID, "login").click()
        self.wait(lambda d: "/login" not in d.current_url or d.find_elements(By.CSS_SELECTOR, "#message.error"))


@pytest.fixture
def browser(web: Web, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Browser]:
    opts = Options()
    opts.binary_location = shutil.which("chromium") or "/usr/bin/chromium"
    for arg in [*CHROMIUM_ARGS, f"--user-data-dir={tmp_path / 'chromium-profile'}",
                "--autoplay-policy=no-user-gesture-required"]:
        opts.add_argument(arg)
    service = Service(shutil.which("chromedriver") or "/usr/bin/chromedriver",
                      log_output=str(tmp_path / "chromedriver.log"))
    driver = webdriver.Chrome(service=service, options=opts)
    shots = tmp_path / "screenshots"
    shots.mkdir()
    try:
        yield Browser(driver, web.url, shots, request.node.name.removeprefix("test_")[:40])
    finally:
        driver.quit()

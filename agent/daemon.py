"""The running agent: builds the buffer, uplink, API and device components, and stops them in order.

Start order: keys -> buffer -> uplink -> API -> clock/watchdog/housekeeping -> devices.
Stop order is the reverse for the producers (devices, then the API: no new records),
then the buffer (commit what is queued, seal the rest), then the uplink (a last chance to
send, then a signed 'offline' status), so SIGTERM loses nothing and says goodbye.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import TYPE_CHECKING, Any

from agent import __version__
from agent.clock import CentreClock, ClockWatch
from agent.commands import CommandRouter
from agent.config import AgentConfig
from agent.keyrotation import check_signing_key
from agent.refusals import RefusalLog
from agent.sdnotify import Notifier, WatchdogPinger
from agent.status import StatusBuilder
from agent.subsystems import build_families, build_panels
from agent.supervisor import Supervisor
from agent.uplink.link import Uplink
from buffer.media import MediaStore
from buffer.store import Store
from buffer.writer import SealOptions
from core.interfaces import (
    AgentContext,
    CommandHandler,
    Component,
    Health,
    MediaSink,
    RecordListener,
    RecordSink,
)
from wire.cose import Signer
from wire.keys import load_private_key, load_public_key
from wire.messages import CentralVerifier

if TYPE_CHECKING:
    from agent.page.routes import StatusPage

log = logging.getLogger(__name__)


class Housekeeping(Component):
    """Prunes acked batches and media past retention, once a minute."""

    name = "housekeeping"

    def __init__(self, agent: Agent):
        self.agent = agent

    def run(self, stop: threading.Event) -> None:
        retention = self.agent.cfg.buffer.retention_hours * 3600
        while not stop.wait(60):
            self.agent.refusals.flush()
            self.agent.store.prune(retention)
            self.agent.media_store.prune()


class Agent(AgentContext):
    def __init__(self, cfg: AgentConfig, notifier: Notifier | None = None, with_api: bool = True):
        self.cfg = cfg
        self.notifier = notifier or Notifier()
        self.with_api = with_api
        self._health: dict[str, Health] = {}
        self._stack = ExitStack()
        self.started_at = time.time()
        self.supervisor = Supervisor(cfg.supervisor)
        self.workers = ThreadPoolExecutor(max_workers=2, thread_name_prefix="command")
        # Keys first: a bad key must stop the start before anything is opened.
        self.key = load_private_key(cfg.agent.key_path)
        self.central_key = load_public_key(cfg.uplink.central_key)
        self.signer = Signer(self.key)
        cfg.agent.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(cfg.db_path, self.signer, SealOptions(
            device=cfg.agent.device, batch_max_records=cfg.buffer.batch_max_records,
            batch_max_age_s=cfg.buffer.batch_max_age_s, max_payload_bytes=cfg.uplink.max_payload_bytes,
            max_db_bytes=cfg.buffer.max_db_mb * 2**20, batch_min_age_s=cfg.buffer.batch_min_age_s,
            agent_version=__version__))
        try:
            check_signing_key(self.store.writer.conn, self.signer, cfg.agent.key_path)  # an interrupted rotation
        except BaseException:
            self.store.writer.conn.close()
            raise
        self.media_store = MediaStore(self.store, cfg.media_dir, cfg.media.chunk_bytes, cfg.media.quota_mb * 2**20,
                                      cfg.media.bandwidth_kbps, cfg.buffer.retention_hours * 3600)
        self.status = StatusBuilder(self)
        self.commands = CommandRouter(self)
        self.refusals = RefusalLog(lambda detail: self.device_event("uplink", "refused", detail),
                                   cfg.uplink.refusal_records_per_minute)
        verifier = CentralVerifier(self.central_key, cfg.agent.device, max_bytes=cfg.uplink.max_payload_bytes)
        self.uplink = Uplink(cfg, self.store, self.signer, verifier,
                             self.status.spec_doc, self.commands.dispatch, self.refusals.refused,
                             media=self.media_store)
        self.clock = ClockWatch(self, cfg.clock)
        self.centre_clock = CentreClock()
        self.components: list[Component] = []

    # -- AgentContext ----------------------------------------------------------------
    @property
    def config(self) -> AgentConfig:
        return self.cfg

    @property
    def records(self) -> RecordSink:
        return self.store

    @property
    def media(self) -> MediaSink:
        return self.media_store

    def subscribe_records(self, listener: RecordListener) -> None:
        self.store.add_listener(listener)

    def register_command(self, name: str, handler: CommandHandler) -> None:
        self.commands.register(name, handler)

    def device_event(self, device: str, event: str, detail: Mapping[str, Any] | None = None,
                     src: str = "agent") -> None:
        data: dict[str, Any] = {"device": device, "event": event}
        if detail is not None:
            data["detail"] = dict(detail)
        self.store.submit([{"kind": "device_event", "src": src, "data": data}], timeout=30)

    def set_health(self, component: str, health: Health) -> None:
        if self._health.get(component) != health:
            self._health[component] = health
            self.uplink.publish_status_soon()

    def health(self) -> dict[str, Health]:
        out = dict(self._health)
        out.update(self.supervisor.health())
        out["buffer"] = "down" if not self.store.writer.is_alive() else ("degraded" if self.store.full else "ok")
        return out

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> Agent:
        self.store.start()
        self._stack.callback(self.store.close)
        self.store.writer.on_sealed = self.uplink.wake
        self.store.writer.idle_hint = self.uplink.idle
        self.supervisor.add(self.uplink)
        page = self._status_page() if self.with_api and self.cfg.status_page.enabled else None
        if self.with_api:
            from agent.api.server import ApiComponent
            from agent.metrics import metrics_text_for
            routers = self._routers()
            if page is not None:
                from agent.page.routes import page_router
                routers.append(page_router(page))
            self.api = ApiComponent(self.cfg, self.store, self.status.full_doc, metrics_text_for(self),
                                    routers=routers)
            self.supervisor.add(self.api)
        self.supervisor.add(self.clock)
        self.supervisor.add(Housekeeping(self))
        self.supervisor.add(WatchdogPinger(self.notifier, healthy=self._progressing))
        built = build_families(self)
        self.components = [c for comps in built.values() for c in comps]
        if page is not None:
            page.panels = build_panels(self, built, page.hub.publish)
            self.components += [page.sampler, page.doctor]
        for comp in self.components:
            self.supervisor.add(comp)
        self.supervisor.start()
        if self.with_api and not self.api.started.wait(30):
            # READY promises a usable agent: the POS can post once systemd says so.
            log.error("the local API did not start listening within 30 s; see its errors above")
        self.device_event("agent", "started", {"version": __version__})
        self.notifier.ready(f"buffering; uplink to {self.cfg.uplink.host}:{self.cfg.uplink.port}")
        log.info("agent %s started (version %s)", self.cfg.agent.device, __version__)
        return self

    def _routers(self) -> list[Any]:
        from agent.subsystems import api_routers

        return api_routers()

    def _status_page(self) -> StatusPage:
        """The technician's page (agent.page): its sampler and doctor run as components."""
        from agent.doctor import run as run_doctor
        from agent.page.doctor import DoctorRunner
        from agent.page.history import History, Probe, Sample, Sampler
        from agent.page.hub import EventHub
        from agent.page.routes import StatusPage

        def sample() -> Sample:
            return Sample(time.time_ns() // 1_000_000, self.store.backlog()["records"], self.store.acked_seq(),
                          self.store.last_seq())

        def link() -> dict[str, Any]:
            return {"connected": self.uplink.connected, "last_error": self.uplink.last_error}

        hub = EventHub()
        history = History(self.cfg.status_page.history_hours)
        doctor = DoctorRunner(lambda: run_doctor(self.cfg), self.cfg.status_page.doctor_every_min, hub.publish)
        return StatusPage(self.cfg, self.status.full_doc, hub, history, doctor,
                          Sampler(Probe(sample, link), history, hub.publish))

    def _progressing(self) -> bool:
        """The watchdog's proof of life: the buffer's writer thread is alive."""
        return self.store.writer.is_alive()

    def stop(self) -> None:
        """Devices and the API first (no new records), then seal, then the offline status."""
        self.notifier.stopping("stopping: sealing the buffer and saying goodbye to the centre")
        try:
            self.device_event("agent", "stopped", {"uptime_s": int(time.time() - self.started_at)})
        except Exception as exc:  # stopping because the disk is full is still a stop
            log.warning("could not record the stop event: %s", exc)
        for comp in reversed(self.components):
            self.supervisor.stop_one(comp)
        producers: list[Component] = [self.clock]
        if self.with_api:
            producers.insert(0, self.api)
        for comp in producers:
            self.supervisor.stop_one(comp)
        self.workers.shutdown(wait=True, cancel_futures=True)
        self.notifier.extend_timeout(60)  # sealing a large backlog may outlast TimeoutStopSec
        self.store.stop()            # commit what is queued, seal what is left
        self.uplink.wake()
        self.supervisor.stop()       # the uplink last: offline status, then disconnect
        self._stack.close()
        log.info("agent stopped")

"""A whole branch under mixed load: the kill test's and the soak benchmark's shared rig.

Real peers only: Mosquitto (restarted now and then), the reference receiver (in this process),
`coopagent run` as its own process (so it can be SIGKILLed and measured alone), a dock scanner
and an MT-SICS scale on socat pty pairs (the project's simulators), and RTSP cameras (GStreamer).
The load: tills posting sales (a failed post is re-posted with the same ids, as a POS does),
receivings at the dock (delivery note, weighed item, counted item), and clips asked by the
centre. The checks at the end compare what the sources were told (201) and what the agent
committed with what the centre stored.
"""

from __future__ import annotations

import hashlib
import itertools
import os
import random
import signal
import sqlite3
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import cbor2
import httpx

from drivers.serial.sim.devices import MtSicsSim, ScannerSim
from drivers.serial.sim.pty import PtyLink
from tests.peers.agent import Branch, sale
from tests.peers.mosquitto import Mosquitto
from tests.peers.net import wait_for
from tests.peers.rtsp_server import RtspCamera
from wire.cose import decode_unverified

GTIN_WEIGHED = "5901234123457"
GTIN_COUNTED = "4006381333931"
# Names a half-written file carries in the agent's data dir: SQLite's own journals are not
# among them (WAL is the buffer's mode), an open recording segment is (part-*.ts) only while
# its ffmpeg runs, so the check is made after a clean stop.
HALF_WRITTEN = ("*.tmp", "*.partial", "*.ffconcat", "clip-*.mp4", "part-*.ts", "*-journal")


@dataclass
class LoadPlan:
    """How hard and how often; the kill test and the soak use different values."""

    tills: int = 2
    sales_per_post: int = 1
    post_every_s: float = 0.5
    dock_every_s: float = 6.0
    cameras: int = 2
    clip_every_s: float = 60.0
    clip_len_s: float = 4.0
    broker_every_s: float = 180.0  # 0: never restarted
    broker_down_s: float = 3.0
    seed: int = 20261206


class Till(threading.Thread):
    """Posts sales with its own ids; keeps the ids answered 201; re-posts a failed request
    with the same ids (the agent may have committed it before it died)."""

    def __init__(self, branch: Branch, name: str, plan: LoadPlan, stop: threading.Event):
        super().__init__(daemon=True, name=f"till-{name}")
        self.branch, self.plan, self.stop_ev = branch, plan, stop
        self.till = name
        self.acked: list[str] = []
        self.failures = 0  # connection errors (agent down) and non-201 answers
        self.refused: list[tuple[int, str]] = []  # non-201 answers that were not 503 (a bug)
        self.n = 0

    def run(self) -> None:
        pending: list[dict[str, Any]] | None = None
        client = self.branch.client()
        next_at = time.monotonic()
        while not self.stop_ev.is_set():
            if pending is None:
                self.stop_ev.wait(max(0.0, next_at - time.monotonic()))
                if self.stop_ev.is_set():
                    break
                next_at += self.plan.post_every_s
                pending = []
                for _ in range(self.plan.sales_per_post):
                    self.n += 1
                    rec = sale(self.n)
                    rec["data"]["till"] = self.till
                    pending.append({**rec, "id": str(uuid.uuid4())})
            try:
                r = self.branch.post(pending, client=client)
            except httpx.HTTPError:
                self.failures += 1
                client.close()
                self.stop_ev.wait(0.05)
                client = self.branch.client()
                continue
            if r.status_code == 201:
                self.acked += r.json()["ids"]
                pending = None
                continue
            self.failures += 1
            if r.status_code != 503:
                self.refused.append((r.status_code, r.text[:200]))
            self.stop_ev.wait(0.05)
        client.close()


class Dock(threading.Thread):
    """A receiving at the dock, over and over: the delivery note, an item on the scale (a new
    weight each time), then three pieces of another item. Paced by the clock: it is a load,
    the checks read what the agent committed."""

    def __init__(self, scanner: ScannerSim, scale: MtSicsSim, plan: LoadPlan, stop: threading.Event):
        super().__init__(daemon=True, name="dock")
        self.scanner, self.scale, self.plan, self.stop_ev = scanner, scale, plan, stop
        self.notes: list[str] = []
        self.codes = 0
        self.weights: list[int] = []

    def run(self) -> None:
        step = self.plan.dock_every_s / 6
        for n in itertools.count(1):
            note = f"INV-{n}"
            grams = 1000 + n
            steps: list[Callable[[], None]] = [
                partial(self._scan, note), partial(self._scan, "]E0" + GTIN_WEIGHED), partial(self._place, grams),
                partial(self.scale.place, 0), partial(self._scan, "CMD:QTY:3"), partial(self._scan, GTIN_COUNTED)]
            for action in steps:
                if self.stop_ev.wait(step):
                    return
                action()

    def _scan(self, code: str) -> None:
        self.scanner.scan(code)
        self.codes += 1
        if code.startswith("INV-"):
            self.notes.append(code)

    def _place(self, grams: int) -> None:
        self.scale.place(grams)
        self.weights.append(grams)


class ClipAsker(threading.Thread):
    """The centre asks for a clip of the last seconds, cameras in turn, while the agent's
    uplink is connected (a command published to an absent session is not delivered)."""

    def __init__(self, mb: MixedBranch, stop: threading.Event):
        super().__init__(daemon=True, name="clips")
        self.mb, self.stop_ev = mb, stop
        self.asked: list[str] = []

    def run(self) -> None:
        cams = itertools.cycle(self.mb.camera_names)
        while not self.stop_ev.wait(self.mb.plan.clip_every_s):
            if not self.mb.uplink_connected():
                continue
            end = time.time_ns() // 1_000_000 - 1500
            start = end - int(self.mb.plan.clip_len_s * 1000)
            rx = self.mb.branch.receiver
            if rx is None:
                continue
            self.asked.append(rx.send_command(self.mb.branch.device, "clip",
                                              {"camera": next(cams), "start": start, "end": end}))


class BrokerFlapper(threading.Thread):
    """Restarts Mosquitto every `broker_every_s` (down for `broker_down_s`; no persistence,
    so every queued message and session is forgotten)."""

    def __init__(self, broker: Mosquitto, plan: LoadPlan, stop: threading.Event):
        super().__init__(daemon=True, name="broker-flap")
        self.broker, self.plan, self.stop_ev = broker, plan, stop
        self.restarts = 0
        self.lock = threading.Lock()

    def run(self) -> None:
        while not self.stop_ev.wait(self.plan.broker_every_s):
            with self.lock:
                self.broker.stop()
                self.stop_ev.wait(self.plan.broker_down_s)
                self.broker.start()
                self.restarts += 1


@dataclass
class Verdict:
    """What the centre holds against what the sources were told and the agent committed."""

    sales_acked: int = 0
    sales_lost: list[str] = field(default_factory=list)
    committed: int = 0  # records in the agent's buffer (every kind)
    committed_lost: list[str] = field(default_factory=list)
    at_centre: int = 0
    duplicates: list[str] = field(default_factory=list)  # ids or device events stored twice
    unexpected: list[str] = field(default_factory=list)  # at the centre, never committed by the agent
    notes_sent: int = 0
    notes_at_centre: int = 0
    weights_placed: int = 0
    weights_at_centre: int = 0
    media_announced: int = 0
    media_missing: list[str] = field(default_factory=list)
    media_bad: list[str] = field(default_factory=list)
    clips_asked: int = 0
    chain: dict[str, Any] = field(default_factory=dict)
    half_written: list[str] = field(default_factory=list)
    integrity: str = ""

    def problems(self) -> list[str]:
        out = []
        for name in ("sales_lost", "committed_lost", "duplicates", "unexpected", "media_missing", "media_bad",
                     "half_written"):
            v = getattr(self, name)
            if v:
                out.append(f"{name}: {len(v)}: {v[:5]}")
        if self.integrity != "ok":
            out.append(f"buffer integrity_check: {self.integrity}")
        if self.chain.get("chain_breaks") or self.chain.get("rejections") or self.chain.get("duplicate_record_ids"):
            out.append(f"receiver state: {self.chain}")
        return out

    def summary(self) -> dict[str, Any]:
        return {k: (len(v) if isinstance(v, list) else v) for k, v in self.__dict__.items()}


class MixedBranch:
    """Builds the branch under `root`; `start()`, then `start_load()`, then `stop_load()`,
    `settle()` and `verdict()`; `close()` stops every peer it started."""

    def __init__(self, root: Path, plan: LoadPlan, agent_over: dict[str, Any] | None = None):
        self.root, self.plan = root, plan
        self.rng = random.Random(plan.seed)
        root.mkdir(parents=True, exist_ok=True)
        self.broker = Mosquitto(root / "mosquitto")
        self.branch = Branch(root / "branch", self.broker)
        self.links: list[PtyLink] = []
        self.cameras: list[RtspCamera] = []
        self.camera_names = [f"cam{i + 1}" for i in range(plan.cameras)]
        self.stop_ev = threading.Event()
        self.threads: list[threading.Thread] = []
        self.tills: list[Till] = []
        self.dock: Dock | None = None
        self.clips: ClipAsker | None = None
        self.flapper: BrokerFlapper | None = None
        self.agent_over = agent_over or {}
        self.scanner: ScannerSim | None = None
        self.scale: MtSicsSim | None = None

    # -- peers ------------------------------------------------------------------------
    def start(self) -> MixedBranch:
        self.broker.start()
        scan_link = PtyLink(self.root / "tty-scanner", self.root / "dev-scanner").start()
        scale_link = PtyLink(self.root / "tty-scale", self.root / "dev-scale").start()
        self.links += [scan_link, scale_link]
        self.scanner = ScannerSim(scan_link.device_side).start()
        self.scale = MtSicsSim(scale_link.device_side).start()
        for name in self.camera_names:
            # small and slow: the cameras' own encoders share the machine with the agent
            self.cameras.append(RtspCamera(self.root / f"rtsp-{name}", width=640, height=360, fps=10, kbps=400).start())
        self.over = {
            "scanners": [{"name": "dock", "port": str(scan_link.agent_side), "scale": "dock", "location": "DOCK-1"}],
            "scales": [{"name": "dock", "port": str(scale_link.agent_side), "protocol": "mt-sics",
                        "poll_interval_s": 0.1}],
            "workflow": {"pair_window_s": 5},
            "cameras": [{"name": n, "url": c.url("main"), "sub_url": c.url("sub"), "stale_after_s": 5,
                         "tamper": {"enabled": False}}
                        for n, c in zip(self.camera_names, self.cameras, strict=True)],
            "recording": {"segment_s": 2, "io_timeout_s": 5, "ring_minutes": 10},
            "buffer": {"batch_max_age_s": 0.5},
            **self.agent_over,
        }
        self.branch.start_receiver()
        return self

    def start_agent(self) -> int:
        proc = self.branch.start_agent_process(start_timeout=90, **self.over)
        return proc.pid

    @property
    def pid(self) -> int | None:
        return self.branch.proc.pid if self.branch.proc is not None else None

    def status(self) -> dict[str, Any] | None:
        try:
            with self.branch.client() as c:
                r = c.get("/v1/status", timeout=5)
        except httpx.HTTPError:
            return None
        return r.json() if r.status_code == 200 else None

    def uplink_connected(self) -> bool:
        st = self.status()
        return bool(st and st["broker"]["connected"])

    # -- load -------------------------------------------------------------------------
    def start_load(self) -> None:
        assert self.scanner is not None and self.scale is not None
        self.tills = [Till(self.branch, str(i + 1), self.plan, self.stop_ev) for i in range(self.plan.tills)]
        self.dock = Dock(self.scanner, self.scale, self.plan, self.stop_ev)
        self.threads = [*self.tills, self.dock]
        if self.plan.cameras and self.plan.clip_every_s:
            self.clips = ClipAsker(self, self.stop_ev)
            self.threads.append(self.clips)
        if self.plan.broker_every_s:
            self.flapper = BrokerFlapper(self.broker, self.plan, self.stop_ev)
            self.threads.append(self.flapper)
        for t in self.threads:
            t.start()

    def stop_load(self) -> None:
        self.stop_ev.set()
        for t in self.threads:
            t.join(timeout=60)
            assert not t.is_alive(), f"{t.name} did not stop"
        if self.broker.proc is None:
            self.broker.start()

    def acked_sales(self) -> list[str]:
        return [i for t in self.tills for i in t.acked]

    # -- the agent's side of the books ------------------------------------------------------
    def buffer_path(self) -> Path:
        return self.branch.data_dir / "buffer.sqlite3"

    def committed(self) -> tuple[list[dict[str, Any]], list[str], str]:
        """Every record the agent committed (sealed batches, then unsealed bodies), the media
        it announced, and SQLite's integrity_check; read-only, with the agent stopped."""
        con = sqlite3.connect(f"file:{self.buffer_path()}?mode=ro", uri=True)
        try:
            integrity = con.execute("PRAGMA integrity_check").fetchone()[0]
            recs: list[dict[str, Any]] = []
            for (cose,) in con.execute("SELECT cose FROM batches ORDER BY seq"):
                recs += cbor2.loads(decode_unverified(cose)[2])["records"]
            for (body,) in con.execute("SELECT body FROM records WHERE seq IS NULL ORDER BY rowid"):
                recs.append(cbor2.loads(body))
            media = [m for (m,) in con.execute("SELECT media_id FROM media")]
        finally:
            con.close()
        return recs, media, str(integrity)

    def half_written(self) -> list[str]:
        """Files in the agent's data dir that a clean stop must not leave: temporary or
        partial files, and media files the buffer does not know."""
        data = self.branch.data_dir
        found = [str(p.relative_to(data)) for pat in HALF_WRITTEN for p in data.rglob(pat)]
        work = data / "recordings" / ".work"  # the cameras' scratch: only the pending clip list stays
        if work.is_dir():
            found += [str(p.relative_to(data)) for p in work.iterdir()
                      if p.name != "pending-clips.json" and str(p.relative_to(data)) not in found]
        con = sqlite3.connect(f"file:{self.buffer_path()}?mode=ro", uri=True)
        try:
            known = {Path(p).name for (p,) in con.execute("SELECT path FROM media WHERE state != 'evicted'")}
        finally:
            con.close()
        media_dir = data / "media"
        if media_dir.is_dir():
            found += [f"media/{p.name} (unknown to the buffer)" for p in media_dir.iterdir()
                      if p.is_file() and p.name not in known]
        return sorted(found)

    # -- the end ----------------------------------------------------------------------------
    def settle(self, timeout: float = 300) -> None:
        """With the agent running and the broker up: every batch acked and every clip complete."""
        def done() -> bool:
            st = self.status()
            if not st or st["backlog"]["records"] or st["acked_seq"] < st["last_seq"]:
                return False
            with self.branch.rx_store() as s:
                return all(s.media_path(self.branch.device, m["data"]["media"]) is not None
                           for m in s.records(self.branch.device) if m["kind"] == "media")
        wait_for(done, timeout=timeout, interval=1.0, what="backlog drained and every clip complete at the centre")

    def verdict(self) -> Verdict:
        """Call with the agent stopped cleanly."""
        v = Verdict()
        recs, media, v.integrity = self.committed()
        rx = self.branch.rx_records()
        v.at_centre = len(rx)
        rx_ids = [r["id"] for r in rx]
        seen: set[str] = set()
        v.duplicates = [i for i in rx_ids if i in seen or seen.add(i)]  # type: ignore[func-returns-value]
        acked = self.acked_sales()
        v.sales_acked = len(acked)
        v.sales_lost = sorted(set(acked) - seen)
        committed_ids = {r["id"] for r in recs}
        v.committed = len(committed_ids)
        v.committed_lost = sorted(committed_ids - seen)
        v.unexpected = sorted(seen - committed_ids)
        # device records stored twice under different ids: one scan of a delivery note, one move per scan
        notes = [r["data"]["raw"] for r in rx if r["kind"] == "scan" and r["data"]["raw"].startswith("INV-")]
        v.duplicates += [f"scan {c}" for c in sorted(c for c, k in Counter(notes).items() if k > 1)]
        moves = [r["data"].get("scan") for r in rx if r["kind"] == "stock_move" and r["data"].get("scan")]
        v.duplicates += [f"stock_move for scan {s}" for s in sorted(s for s, k in Counter(moves).items() if k > 1)]
        grams = [r["data"]["grams"] for r in rx if r["kind"] == "weight" and r["data"]["grams"] > 0]
        v.duplicates += [f"weight {g} g" for g in sorted(g for g, k in Counter(grams).items() if k > 1)]
        v.weights_placed = len(self.dock.weights) if self.dock else 0
        v.weights_at_centre = len(set(grams))
        v.notes_sent = len(self.dock.notes) if self.dock else 0
        v.notes_at_centre = len(set(notes))
        v.media_announced = len(media)
        rx_media = {r["data"]["media"]: r["data"] for r in rx if r["kind"] == "media"}
        with self.branch.rx_store() as s:
            for mid in media:
                man = rx_media.get(mid)
                path = s.media_path(self.branch.device, mid) if man else None
                if man is None or path is None:
                    v.media_missing.append(mid)
                    continue
                data = path.read_bytes()
                if len(data) != man["size"] or hashlib.sha256(data).digest() != bytes(man["sha256"]):
                    v.media_bad.append(mid)
        v.clips_asked = len(self.clips.asked) if self.clips else 0
        st = self.branch.rx_state()
        v.chain = {k: st[k] for k in ("chain_breaks", "rejections", "duplicate_record_ids") if k in st}
        v.half_written = self.half_written()
        return v

    def close(self) -> None:
        self.stop_ev.set()
        self.branch.close()
        for c in self.cameras:
            c.stop()
        for s in (self.scanner, self.scale):
            if s is not None:
                s.stop()
        for link in self.links:
            link.stop()
        self.broker.stop()


def process_tree(pid: int) -> list[int]:
    """The process and its descendants (the agent's ffmpeg children, API workers)."""
    children: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children.get(p, [])
    return out


def _kb(path: str, key: str) -> int:
    try:
        for line in Path(path).read_text().splitlines():
            if line.startswith(key):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def sample(pid: int) -> dict[str, Any]:
    """RSS and open descriptors of the agent process; PSS, USS and descriptors of its whole tree."""
    tree = process_tree(pid)

    def fds(p: int) -> int:
        try:
            return len(os.listdir(f"/proc/{p}/fd"))
        except OSError:
            return 0

    return {
        "rss_mb": round(_kb(f"/proc/{pid}/status", "VmRSS:") / 1024, 2),
        "pss_tree_mb": round(sum(_kb(f"/proc/{p}/smaps_rollup", "Pss:") for p in tree) / 1024, 2),
        # private pages only (USS): unlike PSS, it does not move when other processes that map
        # the same libraries come and go on the machine
        "uss_tree_mb": round(sum(_kb(f"/proc/{p}/smaps_rollup", "Private_Clean:")
                                 + _kb(f"/proc/{p}/smaps_rollup", "Private_Dirty:") for p in tree) / 1024, 2),
        "fds": fds(pid),
        "fds_tree": sum(fds(p) for p in tree),
        "threads": _kb(f"/proc/{pid}/status", "Threads:"),
        "children": len(tree) - 1,
    }



# The kill test's load: more, shorter everything than the soak, so that a few seconds between
# kills see sales, a receiving step, a clip being cut or uploaded and a broker restart.
KILLS_PLAN = LoadPlan(tills=3, sales_per_post=5, post_every_s=0.2, dock_every_s=3.0, cameras=1,
                      clip_every_s=3.0, clip_len_s=2.0, broker_every_s=15.0, broker_down_s=1.0)


def kill_loop(mb: MixedBranch, kills: int, log: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Start the agent and the load, SIGKILL the agent `kills` times at random moments (most
    within 3 s of its start, one in four after a longer run so clips get cut and uploaded),
    restarting it each time; then drain, stop it cleanly and judge. Returns a report."""
    t0 = time.monotonic()
    mb.start_agent()
    mb.start_load()
    for i in range(kills):
        wait = mb.rng.uniform(5.0, 12.0) if mb.rng.random() < 0.25 else mb.rng.uniform(0.0, 3.0)
        time.sleep(wait)  # noqa: TID251 - a random kill moment, not a wait for an event
        rc = mb.branch.kill_agent_process(signal.SIGKILL)
        assert rc == -signal.SIGKILL, f"kill {i + 1}: the agent had exited ({rc}): {mb.branch.agent_log()[-2000:]}"
        if log:
            log(f"kill {i + 1}/{kills} after {wait:.1f} s; sales acked {len(mb.acked_sales())}")
        mb.start_agent()
    mb.stop_load()
    load_s = time.monotonic() - t0
    mb.settle()
    last_rc = mb.branch.kill_agent_process(signal.SIGTERM)
    verdict = mb.verdict()
    return {"kills": kills, "load_s": round(load_s, 1), "total_s": round(time.monotonic() - t0, 1),
            "last_rc": last_rc, "broker_restarts": mb.flapper.restarts if mb.flapper else 0,
            "sales_failures": sum(t.failures for t in mb.tills),
            "sales_refused": [r for t in mb.tills for r in t.refused][:10],
            "verdict": verdict.summary(), "problems": verdict.problems()}

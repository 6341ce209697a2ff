"""`make demo`: a whole branch on this machine, on embedded defaults, in a temp folder.

Starts a local Mosquitto, the reference receiver (`coop-receiver run`) and the agent
(`coopagent run`), feeds sample sales and stock records through the agent's local API,
and shows them arriving verified at the receiver and the agent's backlog reaching zero.
Every process is a real one, started the way a technician would start it.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import tomli_w

from wire.keys import generate_key_file, public_pem

DEVICE = "demo-society/branch-1/agent-1"
BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait(pred: Callable[[], Any], timeout: float, what: str, interval: float = 0.1) -> Any:
    """Poll pred until truthy; SystemExit naming `what` after timeout (the demo and the bench use it)."""
    deadline = time.monotonic() + timeout
    while True:
        got = pred()
        if got:
            return got
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(interval)


def port_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return True
    except OSError:
        return False


def say(msg: str) -> None:
    print(f"[demo] {msg}", flush=True)


class Demo:
    def __init__(self, root: Path):
        self.root = root
        self.procs: list[tuple[str, subprocess.Popen[bytes]]] = []
        self.mqtt_port = free_port()
        self.api_port = free_port()
        self.rtsp_port = free_port()

    def spawn(self, name: str, args: list[str], stdin_pipe: bool = False) -> subprocess.Popen[bytes]:
        """stdin_pipe: a child that quits at end of input (the camera simulator) gets a pipe we hold open."""
        log = open(self.root / f"{name}.log", "ab")  # noqa: SIM115 - handed to the child
        proc = subprocess.Popen(args, stdout=log, stderr=log, env=dict(os.environ, PYTHONUNBUFFERED="1"),
                                stdin=subprocess.PIPE if stdin_pipe else subprocess.DEVNULL)
        log.close()
        self.procs.append((name, proc))
        return proc

    def setup(self) -> tuple[Path, Path]:
        r = self.root
        (r / "mosquitto.conf").write_text(
            f"listener {self.mqtt_port} 127.0.0.1\nallow_anonymous true\npersistence false\n"
            + ("user root\n" if os.geteuid() == 0 else ""))
        generate_key_file(r / "agent-data" / "device_key.pem")
        central = generate_key_file(r / "central_key.pem")
        (r / "central.pub.pem").write_text(public_pem(central.public_key()))
        token = r / "api.token"
        token.write_text(secrets.token_urlsafe(24) + "\n")
        token.chmod(0o600)
        agent_cfg = r / "agent.toml"
        agent_cfg.write_text(tomli_w.dumps({
            "agent": {"device": DEVICE, "data_dir": str(r / "agent-data")},
            "uplink": {"broker": f"mqtt://127.0.0.1:{self.mqtt_port}", "central_key": str(r / "central.pub.pem")},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token_file": str(token)},
            # The simulated dock (drivers.serial.sim): a scanner paired to an MT-SICS scale.
            "scanners": [{"name": "dock", "port": str(r / "tty-scanner"), "scale": "dock", "location": "DOCK-1"}],
            "scales": [{"name": "dock", "port": str(r / "tty-scale"), "protocol": "mt-sics",
                        "poll_interval_s": 0.2}],
            "workflow": {"pair_window_s": 3},
            # The simulated camera (GStreamer's RTSP server, tests/peers/rtsp_gst.py) and a rule:
            # any waste booked at the dock gets a clip, 6 s before to 2 s after.
            "cameras": [{"name": "demo-dock", "url": f"rtsp://127.0.0.1:{self.rtsp_port}/main",
                         "sub_url": f"rtsp://127.0.0.1:{self.rtsp_port}/sub"}],
            "clip_rules": [{"name": "waste-at-dock", "kind": "stock_move", "match": {"type": "waste"},
                            "camera": "demo-dock", "pre_s": 6, "post_s": 2}],
        }))
        dev_pub = r / "device.pub.pem"
        key_show = subprocess.run([str(BIN / "coopagent"), "keys", "show", "--pem", "--config", str(agent_cfg)],
                                  capture_output=True, text=True, check=True)
        dev_pub.write_text(key_show.stdout)
        rx_cfg = r / "receiver.toml"
        rx_cfg.write_text(tomli_w.dumps({
            "receiver": {"db": str(r / "receiver.sqlite3"), "broker": f"mqtt://127.0.0.1:{self.mqtt_port}",
                         "key_file": str(r / "central_key.pem"), "media_dir": str(r / "received-media")},
            "devices": [{"id": DEVICE, "public_key": str(dev_pub)}],
        }))
        return agent_cfg, rx_cfg

    def run(self) -> None:
        agent_cfg, rx_cfg = self.setup()
        say(f"working folder {self.root}")
        mosq = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        self.spawn("mosquitto", [mosq, "-c", str(self.root / "mosquitto.conf")])
        wait(lambda: port_open(self.mqtt_port), 10, "mosquitto")
        say(f"mosquitto listening on 127.0.0.1:{self.mqtt_port}")
        self.spawn("receiver", [str(BIN / "coop-receiver"), "run", "--config", str(rx_cfg)])
        # GStreamer's RTSP server runs in Debian's Python, which has python3-gi.
        self.spawn("camera-sim", ["/usr/bin/python3", str(Path(__file__).resolve().parents[1] / "tests" / "peers"
                                                          / "rtsp_gst.py"), "--port", str(self.rtsp_port),
                                  "--width", "1280", "--height", "720", "--fps", "10", "--gop", "10", "--shared"],
                   stdin_pipe=True)
        wait(lambda: port_open(self.rtsp_port), 30, "the simulated camera")
        say(f"simulated camera (H.264 720p over RTSP) on 127.0.0.1:{self.rtsp_port}")
        sim = self.spawn("serial-sim", [sys.executable, "-m", "drivers.serial.sim",
                                        "--scanner-link", str(self.root / "tty-scanner"),
                                        "--scale-link", str(self.root / "tty-scale"),
                                        "--script", "both", "--pace", "0.3", "--exit"])
        wait(lambda: (self.root / "tty-scale").exists(), 20, "the simulated scanner and scale")
        say("simulated dock scanner and MT-SICS scale on pseudo-terminals; they play a receiving and a stock-take")
        self.spawn("agent", [str(BIN / "coopagent"), "run", "--config", str(agent_cfg)])
        wait(lambda: port_open(self.api_port), 30, "the agent's API")
        say(f"agent {DEVICE} up; local API on 127.0.0.1:{self.api_port}")
        self.feed()
        self.waste_clip()
        wait(lambda: sim.poll() is not None, 180, "the serial script to finish")
        if sim.returncode != 0:
            raise SystemExit(f"demo: the serial simulator failed; see {self.root / 'serial-sim.log'}")
        say("the receiving and the stock-take are done at the dock")
        self.show(agent_cfg, rx_cfg)

    def feed(self) -> None:
        token = (self.root / "api.token").read_text().strip()
        with httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}", "X-Coop-Source": "pos-3"}) as c:
            sent = 0
            for i in range(20):
                records = [sample_sale(i * 10 + j) for j in range(9)] + [sample_stock_move(i)]
                r = c.post("/v1/records", json={"records": records})
                if r.status_code != 201:
                    raise SystemExit(f"demo: the API answered {r.status_code}: {r.text}")
                sent += len(records)
            say(f"posted {sent} records (180 sales, 20 stock moves) through POST /v1/records: all 201")
            bad = c.post("/v1/records", json={"records": [{"kind": "sale", "data": {"till": "3"}}]})
            say(f"a malformed sale is refused: {bad.status_code} {bad.json().get('reason')}")
            self.expected = sent

    def waste_clip(self) -> None:
        """Book a waste at the dock once the ring holds the pre-roll; the clip rule cuts a clip."""
        token = (self.root / "api.token").read_text().strip()
        time.sleep(8)  # the ring needs 6 s of recording before the waste for its pre-roll
        with httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30,
                          headers={"Authorization": f"Bearer {token}"}) as c:
            r = c.post("/v1/records", json={"records": [{"kind": "stock_move", "data": {
                "type": "waste", "gtin": "06291041500213", "qty": 2, "from": "DOCK-1", "to": None,
                "doc": "WO-0042", "reason": "damaged in delivery"}}]})
        if r.status_code != 201:
            raise SystemExit(f"demo: the waste was refused: {r.status_code} {r.text}")
        self.waste_id = r.json()["ids"][0]
        say(f"waste booked at the dock (record {self.waste_id}); the rule 'waste-at-dock' asks for a clip")

    def show_clip(self) -> None:
        import sqlite3
        wait(lambda: sorted((self.root / "received-media").rglob("*.mp4")), 90, "the clip at the centre")
        clips = sorted((self.root / "received-media").rglob("*.mp4"))
        probe = subprocess.run(["ffprobe", "-v", "error", "-show_entries", "format=duration:stream=codec_name,width,"
                                "height", "-of", "default=nw=1", str(clips[0])], capture_output=True, text=True)
        info = " ".join(probe.stdout.split())
        rx = sqlite3.connect(f"file:{self.root / 'receiver.sqlite3'}?mode=ro", uri=True)
        try:
            row = rx.execute("SELECT count(*) FROM records WHERE kind='media'").fetchone()
        finally:
            rx.close()
        say(f"clip verified (size and SHA-256 against its signed manifest) at the centre: {clips[0].name} "
            f"[{info}]; {row[0]} media manifest(s) in the chain")

    def show(self, agent_cfg: Path, rx_cfg: Path) -> None:
        self.show_clip()
        def backlog_zero() -> bool:
            out = subprocess.run([str(BIN / "coopagent"), "status", "--json", "--config", str(agent_cfg)],
                                 capture_output=True, text=True)
            import json
            doc = json.loads(out.stdout or "{}")
            return bool(doc.get("running")) and doc.get("backlog", {}).get("records") == 0
        wait(backlog_zero, 60, "the agent's backlog to reach zero")
        say("the centre acked everything: the agent's backlog is zero")
        import sqlite3
        rx = sqlite3.connect(f"file:{self.root / 'receiver.sqlite3'}?mode=ro", uri=True)
        try:
            kinds = dict(rx.execute("SELECT kind, count(*) FROM records GROUP BY kind").fetchall())
        finally:
            rx.close()
        say("records verified and stored at the centre, by kind: "
            + ", ".join(f"{k} {n}" for k, n in sorted(kinds.items())))
        for title, cmd in (("agent status", [str(BIN / "coopagent"), "status", "--config", str(agent_cfg)]),
                           ("receiver status", [str(BIN / "coop-receiver"), "status", "--config", str(rx_cfg)])):
            print(f"\n--- {title} ---", flush=True)
            subprocess.run(cmd, check=False)

    def stop(self) -> None:
        for name, proc in reversed(self.procs):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
                try:
                    rc = proc.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    rc = proc.wait()
                if name == "agent":
                    say(f"agent stopped with exit code {rc} (SIGTERM: sealed, said offline)")


def sample_sale(i: int) -> dict[str, Any]:
    qty = 1 + i % 3
    return {"id": str(uuid.uuid4()), "kind": "sale", "data": {
        "receipt": f"T3-{1000 + i}", "till": "3", "currency": "KWD",
        "lines": [{"gtin": "06291041500213", "qty": qty, "unit_price": 350, "amount": 350 * qty}],
        "total": 350 * qty}}


def sample_stock_move(i: int) -> dict[str, Any]:
    return {"kind": "stock_move", "data": {"type": "receive", "gtin": "06291041500213", "qty": 24,
                                           "from": "supplier:al-safi", "to": "store-room", "doc": f"INV-{7700 + i}"}}


def main() -> None:
    root = Path(tempfile.mkdtemp(prefix="coop-demo-"))
    demo = Demo(root)
    try:
        demo.run()
    finally:
        demo.stop()
        say(f"logs and databases are in {root}")


if __name__ == "__main__":
    main()

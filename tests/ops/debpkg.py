"""Helpers of the Debian package tests: build a .deb (cached by source commit), and set up an
agent installed from it inside a booted container, talking to a receiver on the host."""

from __future__ import annotations

import hashlib
import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from tests.peers.agent import Branch, sale, toml_dumps
from tests.peers.container import Container, cache_dir, locked
from tests.peers.net import free_port, port_open

ROOT_DIR = Path(__file__).resolve().parents[2]
BUILD = ROOT_DIR / "systemd" / "deb" / "build.sh"
CONFIG = "/etc/coopagent/agent.toml"


def build_deb(src: Path, out: Path) -> Path:
    r = subprocess.run(["bash", str(src / "systemd" / "deb" / "build.sh"), "--src", str(src), "--out", str(out)],
                       capture_output=True, text=True, timeout=1200)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    debs = sorted(out.glob("coopagent_*.deb"))
    assert len(debs) == 1, debs
    return debs[0]


def deb_of_commit(commit: str) -> Path:
    """The package of an earlier commit of main, built from `git archive` with that commit's
    own build script, and cached: the same commit always gives the same package."""
    out = cache_dir() / "debs" / commit
    with locked(cache_dir() / ".debs.lock"):
        done = sorted(out.glob("coopagent_*.deb"))
        if done:
            return done[0]
        src = cache_dir() / "debs" / f"{commit}.src"
        subprocess.run(["rm", "-rf", str(src)], check=True)
        src.mkdir(parents=True)
        archive = subprocess.run(["git", "-C", str(ROOT_DIR), "archive", commit], capture_output=True,
                                 timeout=120)
        assert archive.returncode == 0, f"commit {commit} is not in this clone: {archive.stderr.decode()[-500:]}"
        subprocess.run(["tar", "-C", str(src), "-xf", "-"], input=archive.stdout, check=True, timeout=120)
        partial = out.with_name(out.name + ".partial")
        subprocess.run(["rm", "-rf", str(partial)], check=True)
        try:
            built = build_deb(src, partial)
        finally:
            subprocess.run(["rm", "-rf", str(src)], check=True)
        partial.rename(out)  # only a whole package is ever in the cache
        return out / built.name


def sha256_of(ct: Container, inside: str) -> str:
    return hashlib.sha256(ct.path(inside).read_bytes()).hexdigest()


def wait_until(cond: Callable[[], Any], timeout: float, what: str, step: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        v = cond()
        if v:
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        time.sleep(step)


class InstalledAgent:
    """coopagent installed from a .deb in `ct`, registered at `centre`'s receiver."""

    def __init__(self, ct: Container, centre: Branch):
        self.ct = ct
        self.centre = centre
        self.api_port = free_port()
        self.token = ""

    def install(self, deb: Path, *extra: str) -> subprocess.CompletedProcess[str]:
        """apt installs the package with no network at all: everything comes from the .deb."""
        return self.ct.run("apt-get", "install", "-y", "-q", "-o", "Dpkg::Options::=--force-confold", *extra,
                           f"/debs/{deb.parent.name}/{deb.name}", offline=True, check=False)

    def configure(self) -> None:
        """What the technician does after the first install: the device's public key to the
        centre, the centre's key and the broker into the config."""
        pem = self.ct.run("coopagent", "keys", "show", "--pem", "--config", CONFIG).stdout
        (self.centre.root / "device.pub.pem").write_text(pem)
        self.ct.write("/etc/coopagent/central.pub.pem", (self.centre.root / "central.pub.pem").read_text())
        cfg = {
            "agent": {"device": self.centre.device, "data_dir": "/var/lib/coopagent"},
            "uplink": {"broker": self.centre.broker.url, "central_key": "/etc/coopagent/central.pub.pem",
                       "backoff_min_s": 0.2, "backoff_max_s": 2.0, "resend_after_s": 5.0},
            "api": {"listen": f"127.0.0.1:{self.api_port}", "token_file": "api.token"},
            "buffer": {"batch_max_age_s": 0.2},
        }
        self.ct.write(CONFIG, toml_dumps(cfg), mode=0o640)
        self.ct.run("chown", "root:coopagent", CONFIG)
        self.ct.run("coopagent", "config", "check", "--config", CONFIG)
        self.token = self.ct.path("/etc/coopagent/api.token").read_text().strip()

    def post_sales(self, start: int, n: int) -> list[str]:
        """n sales, one request each; returns the ids the agent answered 201 for."""
        ids: list[str] = []
        with httpx.Client(base_url=f"http://127.0.0.1:{self.api_port}", timeout=30,
                          headers={"Authorization": f"Bearer {self.token}"}) as c:
            for i in range(start, start + n):
                r = c.post("/v1/records", json={"records": [sale(i)]})
                assert r.status_code == 201, r.text
                ids += r.json()["ids"]
        return ids

    def api_up(self) -> bool:
        return port_open(self.api_port)

    def sale_ids_at_centre(self) -> list[str]:
        return [r["id"] for r in self.centre.rx_records() if r["kind"] == "sale"]

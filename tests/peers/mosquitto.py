"""A real Mosquitto broker on a free loopback port, with its own config, stoppable and restartable."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.net import free_port, port_open, wait_for


@dataclass
class TlsFiles:
    ca: Path
    cert: Path
    key: Path
    require_certificate: bool = True


@dataclass
class Mosquitto:
    workdir: Path
    port: int = field(default_factory=free_port)
    persistence: bool = False
    tls: TlsFiles | None = None
    max_queued: int = 1000
    passwords: dict[str, str] | None = None  # user -> password; anonymous refused when set
    extra: str = ""
    proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'mqtts' if self.tls else 'mqtt'}://127.0.0.1:{self.port}"

    def _write_conf(self) -> Path:
        self.workdir.mkdir(parents=True, exist_ok=True)
        lines = [
            f"listener {self.port} 127.0.0.1",
            f"allow_anonymous {'false' if self.passwords else 'true'}",
            f"persistence {'true' if self.persistence else 'false'}",
            f"persistence_location {self.workdir}/",
            f"max_queued_messages {self.max_queued}",
            "log_dest stderr",
            "log_type error",
            "log_type warning",
            "log_type notice",
        ]
        if os.geteuid() == 0:
            # Started as root, mosquitto drops to user 'mosquitto', which cannot read pytest's
            # 0700 tmp dirs (certificates, persistence): keep the test runner's user.
            lines.append("user root")
        if self.passwords:
            pw = self.workdir / "passwords"
            pw.write_text("")
            for user, password in self.passwords.items():
                subprocess.run(["mosquitto_passwd", "-b", str(pw), user, password], check=True)
            lines.append(f"password_file {pw}")
        if self.tls:
            lines += [f"cafile {self.tls.ca}", f"certfile {self.tls.cert}", f"keyfile {self.tls.key}",
                      f"require_certificate {'true' if self.tls.require_certificate else 'false'}"]
        conf = self.workdir / "mosquitto.conf"
        conf.write_text("\n".join(lines) + "\n" + self.extra)
        return conf

    def start(self) -> Mosquitto:
        exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
        conf = self._write_conf()
        log = open(self.workdir / "mosquitto.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen([exe, "-c", str(conf)], stdout=log, stderr=log)
        log.close()
        wait_for(lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None,
                 timeout=10, what="mosquitto to listen")
        if self.proc.poll() is not None:
            raise RuntimeError(f"mosquitto exited: {(self.workdir / 'mosquitto.log').read_text()[-2000:]}")
        return self

    def stop(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.terminate()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def restart(self) -> None:
        self.stop()
        self.start()

    def log_text(self) -> str:
        p = self.workdir / "mosquitto.log"
        return p.read_text(errors="replace") if p.exists() else ""

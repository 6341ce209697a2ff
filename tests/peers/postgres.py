"""A real PostgreSQL 15 (Debian's binaries) in a temporary folder, on a free loopback port.

initdb takes 1-2 s, so a test module shares one server and each test gets its own database
(`new_database`). PostgreSQL refuses to run as root: as root, the cluster belongs to an
unprivileged user (`postgres` from the Debian package, or a system user made here) and
every server program runs under `setpriv` as that user. Its folder is made with mkdtemp in
/tmp, not under pytest's tmp_path, because pytest's folders are 0700 root and the server's
user could not enter them.

Host connections need a password (scram-sha-256, set by initdb from a file), so the
receiver's `password_file` is exercised for real; the unix socket sits in the folder too.
"""

from __future__ import annotations

import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from tests.peers.net import free_port, port_open, wait_for

BIN = Path("/usr/lib/postgresql/15/bin")
SUPERUSER = "coop"
FALLBACK_USER = "coop-pgtest"


def available() -> bool:
    return (BIN / "initdb").exists() and (BIN / "postgres").exists()


def _server_user() -> pwd.struct_passwd | None:
    """The unprivileged user that runs the server when we are root; None when we are not root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", FALLBACK_USER):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    subprocess.run(
        ["useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", FALLBACK_USER],
        check=True,
        capture_output=True,
    )
    return pwd.getpwnam(FALLBACK_USER)


@dataclass
class Postgres:
    port: int = field(default_factory=free_port)
    password: str = field(default_factory=lambda: uuid.uuid4().hex)
    root: Path = field(default_factory=lambda: Path(tempfile.mkdtemp(prefix="coop-pg-")))
    proc: subprocess.Popen[bytes] | None = None
    durable: bool = False  # benchmarks: fsync on, as in production; tests spare the shared machine the fsyncs

    def __post_init__(self) -> None:
        self.user = _server_user()
        self.data = self.root / "data"
        self.sock = self.root / "sock"
        self.log = self.root / "postgres.log"

    def _as_user(self, argv: list[str]) -> list[str]:
        if self.user is None:
            return argv
        return ["setpriv", f"--reuid={self.user.pw_uid}", f"--regid={self.user.pw_gid}", "--clear-groups", *argv]

    def _own(self, path: Path) -> None:
        if self.user is not None:
            os.chown(path, self.user.pw_uid, self.user.pw_gid)

    def init(self) -> Postgres:
        self.sock.mkdir()
        pwfile = self.root / "pw"
        pwfile.write_text(self.password + "\n")
        for p in (self.root, self.sock, pwfile):
            self._own(p)
        subprocess.run(
            self._as_user(
                [
                    str(BIN / "initdb"),
                    "-D", str(self.data),
                    "-U", SUPERUSER,
                    f"--pwfile={pwfile}",
                    "--auth-local=trust",
                    "--auth-host=scram-sha-256",
                    "--encoding=UTF8",
                    "--locale=C",
                    "--no-sync",  # a throwaway cluster: initdb's own fsyncs cost seconds
                ]
            ),
            check=True,
            capture_output=True,
        )
        pwfile.unlink()
        return self

    def start(self) -> Postgres:
        """Start the server; on a first start whose free port was taken meanwhile, try another port.

        free_port() only finds a port that was free a moment ago: a busy machine (a fleet of 1,000
        MQTT clients takes ephemeral ports by the thousand) can take it before postgres binds it.
        A restart keeps its port: the clients hold the URL.
        """
        first = self.proc is None and not getattr(self, "_started", False)
        for _ in range(3 if first else 1):
            mark = self.log.stat().st_size if self.log.exists() else 0
            try:
                return self._start_once()
            except RuntimeError:
                tail = self.log.read_bytes()[mark:].decode(errors="replace") if self.log.exists() else ""
                if not first or "could not bind" not in tail:
                    raise
                self.port = free_port()
        return self._start_once()

    def _start_once(self) -> Postgres:
        if not self.data.exists():
            self.init()
        self._started = True
        log = open(self.log, "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(
            self._as_user(
                [
                    str(BIN / "postgres"),
                    "-D", str(self.data),
                    "-p", str(self.port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.sock}",
                    # The tests check ordering (commit before ack), not power-loss durability: the
                    # shared 2-core machine is spared the fsyncs.
                    *([] if self.durable else ["-c", "fsync=off", "-c", "full_page_writes=off"]),
                    "-c", "max_connections=60",
                    "-c", f"shared_buffers={'256MB' if self.durable else '32MB'}",
                ]
            ),
            stdout=log,
            stderr=log,
        )
        log.close()
        wait_for(
            lambda: port_open(self.port) or self.proc is None or self.proc.poll() is not None,
            timeout=20,
            what="postgres to listen",
        )
        if self.proc.poll() is not None:
            raise RuntimeError(f"postgres exited: {self.log_text()[-2000:]}")
        wait_for(self._accepts, timeout=20, what="postgres to accept connections")
        return self

    def _accepts(self) -> bool:
        import psycopg

        try:
            psycopg.connect(self.url(), connect_timeout=2).close()
        except psycopg.OperationalError:  # "the database system is starting up"
            return False
        return True

    def stop(self) -> None:
        """Fast shutdown (SIGINT): open transactions are rolled back, clients are disconnected."""
        if self.proc is None:
            return
        self.proc.send_signal(signal.SIGINT)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.proc = None

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def url(self, dbname: str = "postgres", *, with_password: bool = True) -> str:
        auth = f"{SUPERUSER}:{self.password}" if with_password else SUPERUSER
        return f"postgresql://{auth}@127.0.0.1:{self.port}/{dbname}"

    def new_database(self) -> str:
        """A fresh empty database; returns its name."""
        import psycopg

        name = "t_" + uuid.uuid4().hex[:12]
        with psycopg.connect(self.url(), autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return name

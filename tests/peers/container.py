"""A Debian 12 machine booted by systemd-nspawn, systemd as PID 1, for the packaging tests.

What is real: Debian's own packages (debootstrap), systemd 252 booting as PID 1 in its own
PID, mount, IPC and UTS namespaces, dpkg/apt installing the .deb, the unit with its
sandboxing, journald. The network namespace is the host's (no --private-network), so the
agent inside reaches the test's Mosquitto on 127.0.0.1 and the test reaches its API; an
install step can still be cut off from every network with `run(..., offline=True)`.

Two things of this machine are worked around, and only here:
- /run is not a tmpfs, and nspawn refuses to clean its propagation folder on a disk file
  system ("Attempted to remove disk file system under /run/systemd/nspawn/propagate"): the
  container is started from a private mount namespace with a tmpfs on /run/systemd/nspawn.
- There is no system bus and no machined, hence --register=no --keep-unit, and commands run
  in the container through nsenter instead of machinectl.

The root file system is made once by debootstrap (under a minute) and cached between test
runs in COOPAGENT_TEST_CACHE (default /var/cache/coopagent-tests); each container boots on an
overlay of it, so a test never changes the cache.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# systemd as init, and the .deb's Depends, so that `apt install ./coopagent_*.deb` needs no
# network at all (the test proves it by installing in a namespace with no network).
INCLUDE = ["systemd", "systemd-sysv", "dbus", "python3", "python3.11", "libcairo2", "ffmpeg",
           "passwd", "util-linux"]
ENV = ["env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", "LANG=C.UTF-8",
       "HOME=/root", "DEBIAN_FRONTEND=noninteractive", "SYSTEMD_PAGER=", "SYSTEMD_COLORS=0"]


def cache_dir() -> Path:
    d = Path(os.environ.get("COOPAGENT_TEST_CACHE", "/var/cache/coopagent-tests"))
    d.mkdir(parents=True, exist_ok=True)
    return d


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One builder at a time (two pytest runs may share the cache)."""
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def rootfs() -> Path:
    """The cached Debian 12 root file system, made by debootstrap the first time."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(INCLUDE)}".encode()).hexdigest()[:12]
    dest = cache_dir() / f"rootfs-{SUITE}-{key}"
    if (dest / ".complete").exists():
        return dest
    with locked(cache_dir() / ".rootfs.lock"):
        if (dest / ".complete").exists():
            return dest
        tmp = dest.with_name(dest.name + ".partial")
        shutil.rmtree(tmp, ignore_errors=True)
        r = subprocess.run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE,
                            str(tmp), MIRROR], capture_output=True, text=True, timeout=900)
        if r.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}")
        (tmp / ".complete").touch()
        tmp.rename(dest)
    return dest


class Container:
    """One boot of the cached root file system; changes go to an overlay under `work`."""

    def __init__(self, work: Path, binds: Mapping[Path, str] | None = None):
        self.base = rootfs()
        self.work = work
        self.binds = dict(binds or {})
        self.proc: subprocess.Popen[bytes] | None = None
        self.pid1 = 0

    # -- lifecycle ---------------------------------------------------------------------
    def boot(self, timeout: float = 60) -> Container:
        upper, wd, merged = (self.work / n for n in ("upper", "overlay-work", "merged"))
        for d in (upper, wd, merged):
            d.mkdir(parents=True, exist_ok=True)
        binds = " ".join(f"--bind-ro={host}:{inside}" for host, inside in self.binds.items())
        script = (
            "set -e; mkdir -p /run/systemd/nspawn; mount -t tmpfs tmpfs /run/systemd/nspawn; "
            f"mount -t overlay overlay -o lowerdir={self.base},upperdir={upper},workdir={wd} {merged}; "
            f"exec systemd-nspawn -q -b --register=no --keep-unit --console=pipe -D {merged} {binds}"
        )
        log = open(self.work / "console.log", "ab")  # noqa: SIM115 - handed to the child
        self.proc = subprocess.Popen(["unshare", "--mount", "--propagation", "private", "sh", "-c", script],
                                     stdout=log, stderr=log, stdin=subprocess.DEVNULL)
        log.close()
        deadline = time.monotonic() + timeout
        while not self.pid1:
            if self.proc.poll() is not None:
                raise RuntimeError(f"the container exited {self.proc.returncode}: {self.console()[-2000:]}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no PID 1 in the container: {self.console()[-2000:]}")
            self.pid1 = self._find_pid1()
            time.sleep(0.05)
        while True:
            state = self.run("systemctl", "is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                return self
            if time.monotonic() > deadline:
                raise TimeoutError(f"systemd in the container is {state!r}: {self.console()[-2000:]}")
            time.sleep(0.2)

    def _find_pid1(self) -> int:
        """The child of systemd-nspawn that is PID 1 in its own PID namespace."""
        assert self.proc is not None
        for st in Path("/proc").glob("[0-9]*/status"):
            with contextlib.suppress(OSError):
                fields = dict(line.split(":\t", 1) for line in st.read_text().splitlines() if ":\t" in line)
                if int(fields.get("PPid", "0")) == self.proc.pid and fields.get("NSpid", "").split()[-1:] == ["1"]:
                    return int(st.parent.name)
        return 0

    def poweroff(self, timeout: float = 60) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None and self.pid1:
            self.run("systemctl", "poweroff", "--no-block", check=False)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=30)
        self.proc = None

    def console(self) -> str:
        p = self.work / "console.log"
        return p.read_text(errors="replace") if p.exists() else ""

    # -- inside ------------------------------------------------------------------------
    def run(self, *cmd: str, check: bool = True, timeout: float = 300, offline: bool = False,
            input: str | None = None) -> subprocess.CompletedProcess[str]:
        """A command in the container, as root, with a clean environment; offline: no network at all."""
        enter = ["nsenter", "-t", str(self.pid1), "-m", "-u", "-i", "-p", "-r", "-w", "--"]
        full = [*enter, *(["unshare", "--net"] if offline else []), *ENV, *cmd]
        r = subprocess.run(full, capture_output=True, text=True, timeout=timeout, input=input)
        if check and r.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)} exited {r.returncode}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}")
        return r

    def path(self, inside: str) -> Path:
        """A file of the container as the host sees it (the overlay is mounted in the container's
        private mount namespace only, so the host goes through PID 1's root)."""
        return Path(f"/proc/{self.pid1}/root") / inside.lstrip("/")

    def write(self, inside: str, text: str, mode: int = 0o644) -> None:
        p = self.path(inside)
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        p.chmod(mode)

    def unit(self, name: str = "coopagent.service") -> dict[str, str]:
        """systemctl show, as a dict."""
        out = self.run("systemctl", "show", name).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def journal(self, unit: str = "coopagent.service") -> str:
        return self.run("journalctl", "-u", unit, "--no-pager", "-o", "cat", check=False).stdout

    def __enter__(self) -> Container:
        return self.boot()

    def __exit__(self, *exc: object) -> None:
        self.poweroff()

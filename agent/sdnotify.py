"""systemd's notify protocol (sd_notify(3)): READY=1, WATCHDOG=1, STOPPING=1, STATUS=...

Why our own ~60 lines instead of a library: the protocol is one datagram of
newline-separated KEY=VALUE lines to the unix socket named in $NOTIFY_SOCKET, and the
two packages that do it are worse deals. PyPI `sdnotify` was last released in 2017 and
swallows every error; `systemd-python` is a C extension that needs libsystemd-dev and a
compiler on every branch PC. Both would add a dependency for what a socket call does.

Outside systemd (tests, `coopagent run` in a terminal, the demo) $NOTIFY_SOCKET is unset
and every call is a cheap no-op that returns False, so callers never need to check.

The unit sets Type=notify, NotifyAccess=main and WatchdogSec; systemd then passes
WATCHDOG_USEC (and WATCHDOG_PID) and kills the agent if no WATCHDOG=1 arrives within
that time. We ping at half the interval, as sd_watchdog_enabled(3) recommends, and only
while the caller's health check passes, so a wedged agent is restarted, not kept alive
by a pinger thread that still runs.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Callable, Mapping

from core.interfaces import Component

log = logging.getLogger(__name__)


def _address(raw: str) -> str | bytes:
    """'@name' is an abstract socket (leading NUL byte); anything else is a filesystem path."""
    if raw.startswith("@"):
        return b"\0" + raw[1:].encode()
    return raw


class Notifier:
    """Sends notify messages to systemd; a no-op when not started by systemd with Type=notify."""

    def __init__(self, environ: Mapping[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get("NOTIFY_SOCKET", "")
        self._address: str | bytes | None = _address(raw) if raw else None
        self._watchdog_usec = self._parse_watchdog(env)
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None

    @staticmethod
    def _parse_watchdog(env: Mapping[str, str]) -> int | None:
        """WATCHDOG_USEC applies to us only if WATCHDOG_PID is unset or names this process."""
        usec, pid = env.get("WATCHDOG_USEC", ""), env.get("WATCHDOG_PID", "")
        if not usec.isdigit() or int(usec) == 0:
            return None
        if pid and (not pid.isdigit() or int(pid) != os.getpid()):
            return None
        return int(usec)

    @property
    def enabled(self) -> bool:
        return self._address is not None

    def watchdog_interval(self) -> float | None:
        """Seconds between WATCHDOG=1 pings (half of WatchdogSec), or None if no watchdog is set."""
        return None if self._watchdog_usec is None else self._watchdog_usec / 2e6

    def notify(self, *lines: str) -> bool:
        """Send one datagram; True if it was sent. Errors are logged, never raised: a lost
        notification must not crash the agent (systemd's watchdog catches a real hang)."""
        if self._address is None:
            return False
        payload = "\n".join(lines).encode()
        with self._lock:
            try:
                if self._sock is None:
                    self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
                self._sock.sendto(payload, self._address)
            except OSError as exc:
                log.warning("sd_notify to %r failed: %s", self._address, exc)
                self._close_locked()
                return False
        return True

    def ready(self, status: str | None = None) -> bool:
        return self.notify("READY=1", *([self._status_line(status)] if status else []))

    def watchdog(self) -> bool:
        return self.notify("WATCHDOG=1")

    def stopping(self, status: str | None = None) -> bool:
        return self.notify("STOPPING=1", *([self._status_line(status)] if status else []))

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for `seconds` more before TimeoutStartSec/TimeoutStopSec kills us (systemd >= 236):
        for a start that migrates or recovers a large buffer, or a stop that seals a big backlog.
        Send it again before it runs out; it does not add up."""
        return self.notify(f"EXTEND_TIMEOUT_USEC={max(0, int(seconds * 1e6))}")

    def status(self, text: str) -> bool:
        """Free text shown by `systemctl status coopagent`."""
        return self.notify(self._status_line(text))

    @staticmethod
    def _status_line(text: str) -> str:
        # A newline would start a new KEY=VALUE assignment, so flatten it.
        return "STATUS=" + " ".join(text.split())

    def close(self) -> None:
        with self._lock:
            self._close_locked()

    def _close_locked(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None


class WatchdogPinger(Component):
    """Sends WATCHDOG=1 every half WatchdogSec while healthy() is true.

    healthy() should prove the agent makes progress (e.g. the buffer's writer committed
    or was idle recently); when it returns False we stop pinging and let systemd restart
    us, which is the point of the watchdog.
    """

    name = "watchdog"

    def __init__(self, notifier: Notifier, healthy: Callable[[], bool] = lambda: True,
                 interval: float | None = None) -> None:
        self._notifier = notifier
        self._healthy = healthy
        self._interval = interval if interval is not None else notifier.watchdog_interval()

    def run(self, stop: threading.Event) -> None:
        if self._interval is None or not self._notifier.enabled:
            log.debug("no systemd watchdog configured; pinger idle")
            stop.wait()
            return
        try:
            self._ping()
            while not stop.wait(self._interval):
                self._ping()
        finally:
            self._notifier.close()

    def _ping(self) -> None:
        if self._healthy():
            self._notifier.watchdog()
        else:
            log.warning("health check failed; withholding the systemd watchdog ping")

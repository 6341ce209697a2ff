"""agent.sdnotify against a real unix datagram socket, as systemd's $NOTIFY_SOCKET is."""

from __future__ import annotations

import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from agent.sdnotify import Notifier, WatchdogPinger
from tests.peers.net import wait_for


@pytest.fixture
def listener(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    path = tmp_path / "notify.sock"
    sock.bind(str(path))
    sock.settimeout(5)
    try:
        yield sock, str(path)
    finally:
        sock.close()


def _recv(sock: socket.socket) -> list[str]:
    return sock.recv(4096).decode().split("\n")


def test_ready_status_watchdog_stopping_reach_the_socket(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    n = Notifier({"NOTIFY_SOCKET": path})
    assert n.enabled
    assert n.ready("buffer open, 3 batches unacked")
    assert _recv(sock) == ["READY=1", "STATUS=buffer open, 3 batches unacked"]
    assert n.watchdog()
    assert _recv(sock) == ["WATCHDOG=1"]
    assert n.status("uplink\nREADY=1 injected")  # a newline must not smuggle in a second assignment
    assert _recv(sock) == ["STATUS=uplink READY=1 injected"]
    assert n.stopping()
    assert _recv(sock) == ["STOPPING=1"]
    assert n.extend_timeout(90.5)
    assert _recv(sock) == ["EXTEND_TIMEOUT_USEC=90500000"]
    n.close()


def test_abstract_socket_name_with_at_sign() -> None:
    name = f"coopagent-test-{os.getpid()}-{threading.get_ident()}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.settimeout(5)
    try:
        n = Notifier({"NOTIFY_SOCKET": "@" + name})
        assert n.ready()
        assert _recv(sock) == ["READY=1"]
        n.close()
    finally:
        sock.close()


def test_without_notify_socket_everything_is_a_noop() -> None:
    n = Notifier({})
    assert not n.enabled
    assert not n.ready() and not n.watchdog() and not n.stopping() and not n.status("x")
    assert n.watchdog_interval() is None


def test_a_vanished_socket_is_logged_not_raised(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    n = Notifier({"NOTIFY_SOCKET": str(tmp_path / "gone.sock")})
    assert n.ready() is False
    assert "sd_notify" in caplog.text


@pytest.mark.parametrize(("env", "expected"), [
    ({"WATCHDOG_USEC": "30000000"}, 15.0),                       # ping at half WatchdogSec
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}, 15.0),
    ({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}, None),  # meant for another process
    ({"WATCHDOG_USEC": "0"}, None),
    ({"WATCHDOG_USEC": "soon"}, None),
])
def test_watchdog_interval_from_environment(env: dict[str, str], expected: float | None) -> None:
    assert Notifier({"NOTIFY_SOCKET": "/nonexistent", **env}).watchdog_interval() == expected


def test_pinger_pings_while_healthy_and_withholds_when_not(listener: tuple[socket.socket, str]) -> None:
    sock, path = listener
    sock.setblocking(False)
    healthy = threading.Event()
    healthy.set()
    refused = 0
    pings: list[str] = []

    def check() -> bool:
        nonlocal refused
        if healthy.is_set():
            return True
        refused += 1
        return False

    def drain() -> int:
        try:
            while True:
                pings.extend(sock.recv(4096).decode().split("\n"))
        except BlockingIOError:
            pass
        return len(pings)

    pinger = WatchdogPinger(Notifier({"NOTIFY_SOCKET": path, "WATCHDOG_USEC": "40000"}), check)
    assert pinger._interval == 0.02
    stop = threading.Event()
    t = threading.Thread(target=pinger.run, args=(stop,))
    t.start()
    try:
        wait_for(lambda: drain() >= 3, timeout=5, what="three watchdog pings")
        assert set(pings) == {"WATCHDOG=1"}
        healthy.clear()
        wait_for(lambda: refused >= 1, timeout=5, what="the first failed health check")
        settled = drain()  # unix datagrams are queued by sendto itself, so all earlier pings are here
        wait_for(lambda: refused >= 4, timeout=5, what="three more failed health checks")
        assert drain() == settled, "pinged although the health check failed"
    finally:
        stop.set()
        t.join(5)
    assert not t.is_alive()


def test_pinger_idles_without_watchdog_and_stops_promptly() -> None:
    stop = threading.Event()
    t = threading.Thread(target=WatchdogPinger(Notifier({})).run, args=(stop,))
    t.start()
    stop.set()
    t.join(5)
    assert not t.is_alive()

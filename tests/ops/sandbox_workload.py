"""What the agent does at run time, condensed; run under tests.ops.sandbox by test_sandbox.py.

Each step is one kind of system call traffic the unit's filter must allow: SQLite in WAL
mode with synchronous=FULL, the device key (O_EXCL, fsync, 0600), clock sync via
adjtimex, a serial line on a real pseudo-terminal with pyserial (termios and modem-line
ioctls), loopback TCP, a libffi callback, OpenCV on an image and the heavy imports.
Prints one "ok STEP" line per step; any failure raises and exits non-zero.

Usage: python tests/ops/sandbox_workload.py WORKDIR
"""

from __future__ import annotations

import ctypes
import os
import socket
import sqlite3
import sys
from pathlib import Path


def step(name: str) -> None:
    print(f"ok {name}", flush=True)


def sqlite_full(work: Path) -> None:
    db = sqlite3.connect(work / "buffer.sqlite3", isolation_level=None)
    assert db.execute("PRAGMA journal_mode=WAL").fetchone()[0] == "wal"
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE IF NOT EXISTS r (id INTEGER PRIMARY KEY, body BLOB)")
    db.execute("BEGIN")
    db.executemany("INSERT INTO r (body) VALUES (?)", [(os.urandom(64),) for _ in range(500)])
    db.execute("COMMIT")
    db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    assert db.execute("SELECT count(*) FROM r").fetchone()[0] >= 500
    db.close()
    step("sqlite")


def device_key(work: Path) -> None:
    from wire.cose import kid_for
    from wire.keys import generate_key_file, load_private_key

    path = work / "device_key.pem"
    key = generate_key_file(path, force=True)
    assert kid_for(load_private_key(path).public_key()) == kid_for(key.public_key())
    step("key")


def clock() -> None:
    from agent.clock import read_sync

    s = read_sync()
    assert s.synced is not None, s.reason
    step(f"clock synced={s.synced}")


def serial_pty() -> None:
    import serial

    master, slave = os.openpty()
    port = serial.Serial(os.ttyname(slave), baudrate=9600, timeout=2)
    try:
        os.write(master, b"ST,GS,+0001.250kg\r\n")
        assert port.readline() == b"ST,GS,+0001.250kg\r\n"
        port.baudrate = 19200  # tcsetattr again, as a driver reconfiguring the line does
        port.write(b"P\r\n")
        port.flush()
        assert os.read(master, 16).startswith(b"P")
        port.reset_input_buffer()  # TCFLSH ioctl
    finally:
        port.close()
        os.close(master)
        os.close(slave)
    step("serial")


def tcp_loopback() -> None:
    srv = socket.create_server(("127.0.0.1", 0))
    cli = socket.create_connection(srv.getsockname(), timeout=5)
    conn, _ = srv.accept()
    cli.sendall(b"ping")
    assert conn.recv(4) == b"ping"
    for s in (cli, conn, srv):
        s.close()
    socket.getaddrinfo("localhost", 1883)  # netlink/unix traffic of the resolver
    step("tcp")


def ffi_callback() -> None:
    callback = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_int)(lambda x: x + 1)
    assert callback(41) == 42
    step("ffi")


def vision() -> None:
    """OpenCV's SIMD code paths (precompiled and dispatched, no JIT) on a real image."""
    import cv2
    import numpy as np

    rng = np.random.default_rng(7)
    frame = rng.integers(0, 255, size=(180, 320, 3), dtype=np.uint8)
    ok, jpg = cv2.imencode(".jpg", frame)
    assert ok
    back = cv2.imdecode(jpg, cv2.IMREAD_COLOR)
    assert back is not None
    gray = cv2.cvtColor(cv2.GaussianBlur(back, (5, 5), 0), cv2.COLOR_BGR2GRAY)
    assert gray.shape == (180, 320) and cv2.Laplacian(gray, cv2.CV_64F).var() > 0
    step("vision")


def imports() -> None:
    import fastapi  # noqa: F401
    import paho.mqtt.client  # noqa: F401
    import uvicorn  # noqa: F401

    import agent.cli.main  # noqa: F401
    step("imports")


def main() -> None:
    work = Path(sys.argv[1])
    sqlite_full(work)
    device_key(work)
    clock()
    serial_pty()
    tcp_loopback()
    ffi_callback()
    vision()
    imports()


if __name__ == "__main__":
    main()

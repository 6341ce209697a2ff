"""Simulated dock scanner and scale for `make demo`: pty links the agent opens, and a script.

    python -m drivers.serial.sim --scanner-link /tmp/demo/tty-scanner --scale-link /tmp/demo/tty-scale \\
        --script both --print-config

The agent's config then names those links as ports (--print-config prints the TOML). The
script starts once the agent polls the scale (so no read is sent before the agent listens),
plays a receiving and/or a stock-take at human pace, and keeps the devices up until Ctrl-C.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

from biip.checksums import gs1_standard_check_digit

from drivers.serial.sim.devices import MtSicsSim, ScannerSim
from drivers.serial.sim.pty import PtyLink

ITEMS = ["5901234123457", "4006381333931", "9506000134352"]


def weight_label(item: str, grams: int) -> str:
    """An in-store EAN-13 under the default rule table: 20 IIIII WWWWW C."""
    first12 = f"20{item}{grams:05d}"
    return first12 + str(gs1_standard_check_digit(first12))


def receiving() -> list[tuple[str, object]]:
    return [
        ("scan", "CMD:MODE:RECEIVE"),
        ("scan", "INV-DEMO-1"),
        ("scan", "]E0" + ITEMS[0]),
        ("place", 2500),
        ("place", 0),
        ("scan", "CMD:QTY:6"),
        ("scan", "]E0" + ITEMS[1]),
        ("scan", weight_label("12345", 1234)),
    ]


def stocktake() -> list[tuple[str, object]]:
    return [
        ("scan", "CMD:COUNT:OPEN:A-12"),
        ("scan", ITEMS[0]),
        ("scan", ITEMS[0]),
        ("scan", "CMD:QTY:12"),
        ("scan", ITEMS[2]),
        ("scan", weight_label("12345", 480)),
        ("scan", "CMD:COUNT:CLOSE"),
    ]


def agent_config(scanner: Path, scale: Path) -> str:
    return (
        f'[[scanners]]\nname = "dock"\nport = "{scanner}"\nscale = "dock"\nlocation = "DOCK-1"\n\n'
        f'[[scales]]\nname = "dock"\nport = "{scale}"\nprotocol = "mt-sics"\npoll_interval_s = 0.2\n\n'
        "[workflow]\npair_window_s = 3\n"
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog="python -m drivers.serial.sim",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    ap.add_argument("--scanner-link", type=Path, required=True, help="path the agent opens for the scanner")
    ap.add_argument("--scale-link", type=Path, required=True, help="path the agent opens for the scale")
    ap.add_argument("--script", choices=["receiving", "stocktake", "both", "none"], default="both")
    ap.add_argument("--pace", type=float, default=0.8, help="seconds between steps")
    ap.add_argument(
        "--wait-agent", type=float, default=120.0, help="seconds to wait for the agent's first poll"
    )
    ap.add_argument(
        "--exit", action="store_true", help="exit when the script is done (default: run until Ctrl-C)"
    )
    ap.add_argument("--print-config", action="store_true", help="print the agent config for these devices")
    args = ap.parse_args(argv)

    for p in (args.scanner_link, args.scale_link):
        p.parent.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
    scan_link = PtyLink(
        args.scanner_link, args.scanner_link.with_name(args.scanner_link.name + ".sim")
    ).start()
    scale_link = PtyLink(args.scale_link, args.scale_link.with_name(args.scale_link.name + ".sim")).start()
    scanner = ScannerSim(scan_link.device_side).start()
    scale = MtSicsSim(scale_link.device_side).start()
    if args.print_config:
        print(agent_config(args.scanner_link, args.scale_link), flush=True)
    try:
        print(
            f"scanner on {args.scanner_link}, MT-SICS scale on {args.scale_link}; waiting for the agent",
            flush=True,
        )
        waited = 0.0
        while not scale.commands and waited < args.wait_agent:
            if stop.wait(0.1):
                return 0
            waited += 0.1
        if not scale.commands:
            print("the agent never polled the scale; is it running with these ports?", file=sys.stderr)
            return 1
        stop.wait(1.0)  # the scanner reader opens alongside the scale's
        steps = {
            "receiving": receiving(),
            "stocktake": stocktake(),
            "both": receiving() + stocktake(),
            "none": [],
        }[args.script]
        for what, arg in steps:
            if stop.wait(args.pace):
                return 0
            print(f"{what:>5} {arg}", flush=True)
            if what == "scan":
                scanner.scan(str(arg))
            else:
                scale.place(int(str(arg)))
        print("script done", flush=True)
        if not args.exit:
            stop.wait()
        return 0
    except KeyboardInterrupt:
        return 0
    finally:
        scanner.stop()
        scale.stop()
        scan_link.stop()
        scale_link.stop()


if __name__ == "__main__":
    sys.exit(main())

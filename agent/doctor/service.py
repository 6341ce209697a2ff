"""The systemd service: installed, running, watched by the watchdog; and the running agent's components."""

from __future__ import annotations

import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

from agent.doctor.context import Context
from core.doctor import Finding, error, ok, skipped, warning

UNIT = "coopagent.service"


def _systemctl(*args: str) -> str:
    exe = shutil.which("systemctl") or "systemctl"
    out = subprocess.run([exe, *args], capture_output=True, text=True, timeout=10, check=False)
    return out.stdout.strip()


def service_checks(c: Context) -> Iterator[Finding]:
    if not Path("/run/systemd/system").is_dir() or shutil.which("systemctl") is None:
        yield skipped("service.state", "systemd is not running on this machine")
        yield skipped("service.watchdog", "systemd is not running on this machine")
        return
    props = dict(line.split("=", 1) for line in
                 _systemctl("show", UNIT, "-p", "LoadState,ActiveState,SubState,WatchdogUSec,NRestarts").splitlines()
                 if "=" in line)
    if props.get("LoadState") != "loaded":
        yield skipped("service.state", "the service is not installed yet (fine before installing)")
        yield skipped("service.watchdog", "the service is not installed yet")
        return
    state = f"{props.get('ActiveState')} ({props.get('SubState')})"
    if props.get("ActiveState") == "active":
        yield ok("service.state", f"{UNIT} {state}")
    elif props.get("ActiveState") == "failed":
        yield error("service.state", f"{UNIT} {state}",
                    "read journalctl -u coopagent -b, fix the cause, then systemctl reset-failed coopagent; "
                    "systemctl start coopagent")
    else:
        yield warning("service.state", f"{UNIT} {state}", "systemctl enable --now coopagent")
    restarts = int(props.get("NRestarts") or 0)
    if props.get("WatchdogUSec") in (None, "", "0", "infinity"):
        yield warning("service.watchdog", "the unit has no watchdog (WatchdogSec=)",
                      "reinstall the unit (apt install the package again, or systemd/install.sh); "
                      "remove drop-ins that set WatchdogSec=0 (systemctl edit coopagent)")
    elif restarts:
        yield warning("service.watchdog", f"systemd restarted the agent {restarts} times since it was started",
                      "read journalctl -u coopagent -b for the reason (Watchdog timeout, crash)")
    else:
        yield ok("service.watchdog", f"watchdog {props.get('WatchdogUSec')}, no restarts")


def component_checks(c: Context) -> Iterator[Finding]:
    """The running agent's own view of its components (supervisor)."""
    if c.status is None:
        yield skipped("agent.components", c.status_reason)
        return
    comps = dict(c.status.get("components") or {})
    bad = {k: v for k, v in comps.items() if v != "ok"}
    if not bad:
        yield ok("agent.components", f"{len(comps)} components ok")
    else:
        yield warning("agent.components", ", ".join(f"{k} {v}" for k, v in sorted(bad.items())),
                      "see the family's checks below and journalctl -u coopagent -b")

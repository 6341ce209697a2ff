"""`coopagent doctor`: every check, one line each, a fix for each failure (like `iotedge check`).

The core's checks are here; each device family adds its own through agent/subsystems.py
(`drivers/*/doctor.py`), and the core never imports a family's internals.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from pathlib import Path

from agent.config import AgentConfig, ConfigError
from agent.doctor.broker import broker_checks
from agent.doctor.context import Context
from agent.doctor.identity import cert_checks, clock_checks, key_checks, registered
from agent.doctor.service import component_checks, service_checks
from agent.doctor.storage import buffer_checks, disk_checks
from agent.subsystems import doctor_checks
from core.config.base import read_secret
from core.doctor import Finding, Result, error, ok
from wire.keys import KeyError_, load_public_key

log = logging.getLogger(__name__)

# The order of issue 12's list: a technician reads top-down, causes before symptoms.
CoreCheck = Callable[[Context], Iterable[Finding]]
CORE_CHECKS: list[CoreCheck] = [key_checks, registered, clock_checks, cert_checks, broker_checks,
                            disk_checks, buffer_checks]
LATE_CHECKS: list[CoreCheck] = [service_checks, component_checks]

EXIT = {Result.OK: 0, Result.SKIPPED: 0, Result.WARNING: 1, Result.ERROR: 2}


def config_findings(cfg: AgentConfig) -> list[Finding]:
    """config.valid passed; the files it names that the agent needs at start."""
    out = [ok("config.valid", "the config is valid")]
    try:
        load_public_key(Path(cfg.uplink.central_key))
        out.append(ok("config.central-key", f"{cfg.uplink.central_key}"))
    except KeyError_ as exc:
        out.append(error("config.central-key", str(exc),
                         f"copy the centre's public key (a PEM file you received) to {cfg.uplink.central_key}"))
    try:
        read_secret(cfg.api.token_file)
        out.append(ok("config.api-token", f"{cfg.api.token_file} readable"))
    except ValueError as exc:
        out.append(error("config.api-token", str(exc),
                         "re-run systemd/install.sh (or apt install the package again): it recreates the token"))
    return out


def invalid_config(exc: ConfigError) -> Finding:
    return error("config.valid", str(exc).replace("\n", "; "),
                 "fix the named key in the config file (coopagent-svc config check shows every value)")


def run(cfg: AgentConfig) -> list[Finding]:
    """Every check after config.valid; a check that crashes is an error naming it, never a traceback."""
    ctx = Context.gather(cfg)
    findings: list[Finding] = config_findings(cfg)
    checks: list[CoreCheck] = [*CORE_CHECKS, *doctor_checks(), *LATE_CHECKS]
    for check in checks:
        name = getattr(check, "__name__", repr(check))
        try:
            findings.extend(check(ctx))
        except PermissionError as exc:  # e.g. a technician's own user, not the service's
            findings.append(error(f"doctor.{name}", f"permission denied: {exc}",
                                  "run it as the service's user: coopagent-svc doctor (or as root)"))
        except Exception as exc:
            log.debug("check %s crashed", name, exc_info=True)
            findings.append(error(f"doctor.{name}", f"the check itself failed: {type(exc).__name__}: {exc}",
                                  "make a support bundle (coopagent support-bundle) for the helpdesk"))
    return findings


def exit_code(findings: Iterable[Finding]) -> int:
    return max((EXIT[f.result] for f in findings), default=0)

"""Checks of the device's identity and time: key file, registration, clock, TLS certificates."""

from __future__ import annotations

import datetime as dt
import stat
import time
from collections.abc import Iterator
from pathlib import Path

from cryptography import x509

from agent.clock import read_sync
from agent.doctor.context import Context, buffer_ro
from core.doctor import Finding, error, ok, skipped, warning
from wire.keys import KeyError_, load_private_key

# A central ack older than this while batches wait means the centre does not ack us.
ACK_STALE_S = 15 * 60
# iotedge check: warn before a certificate expires; 30 days leaves time to order a new one.
CERT_WARN_DAYS = 30
# iotedge check errors at 10 s of drift; ours: a record's `at` should be right to seconds.
CLOCK_ERROR_S = 10.0


def key_checks(c: Context) -> Iterator[Finding]:
    path = c.cfg.agent.key_path
    chown = f"chown coopagent: {path}"
    if not path.exists():
        yield error("key.present", f"device key {path} does not exist",
                    "restore device_key.pem from the backup; if there is none: coopagent-svc keys init, "
                    "then register the new public key at the centre (section 3)")
        yield skipped("key.mode", "no key file")
        return
    try:
        load_private_key(path, check_mode=False)
        yield ok("key.present", f"device key {path} (Ed25519)")
    except KeyError_ as exc:
        yield error("key.present", str(exc), "restore device_key.pem from the backup; do not edit it")
    mode = stat.S_IMODE(path.stat().st_mode)
    if mode & 0o077:
        yield error("key.mode", f"device key {path} has mode {mode:04o}: readable by others; the agent refuses it",
                    f"chmod 600 {path}; {chown}")
    else:
        yield ok("key.mode", f"mode {mode:04o}")


def registered(c: Context) -> Iterator[Finding]:
    """Registered = the centre acks our batches (it verifies each with the registered key)."""
    fid = "key.registered"
    fix = ("compare `coopagent-svc keys show` with the centre's registration of this device; "
           "check [uplink] central_key is the centre's key; check the broker link (broker.* checks)")
    try:
        with buffer_ro(c.cfg) as conn:
            if conn is None:
                yield skipped(fid, "no buffer yet: the agent has not run")
                return
            last_ack, oldest_unacked = conn.execute(
                "SELECT (SELECT max(acked_ms) FROM batches), "
                "(SELECT min(sealed_ms) FROM batches WHERE acked_ms IS NULL)").fetchone()
            acked_seq = dict(conn.execute("SELECT key, value FROM meta").fetchall()).get("acked_seq", 0)
    except Exception as exc:  # a damaged buffer is buffer.integrity's to report
        yield skipped(fid, f"the buffer cannot be read ({exc})")
        return
    now_ms = time.time() * 1000
    if oldest_unacked is None:
        if last_ack is None and not acked_seq:
            yield skipped(fid, "nothing sent yet, so no central ack to look at")
        else:
            yield ok(fid, f"the centre acked everything (acked seq {acked_seq})")
        return
    waiting_s = (now_ms - oldest_unacked) / 1000
    if waiting_s < ACK_STALE_S:
        yield ok(fid, f"acked seq {acked_seq}; the oldest batch waits {waiting_s:.0f} s")
    elif last_ack is None and not acked_seq:
        yield error(fid, f"the centre never acked this device; batches wait for {waiting_s / 60:.0f} min",
                    "register the device at the centre: " + fix)
    else:
        since = "" if last_ack is None else f"; the last ack came {(now_ms - last_ack) / 60000:.0f} min ago"
        yield warning(fid, f"no central ack for {waiting_s / 60:.0f} min (acked seq {acked_seq}){since}", fix)


def clock_checks(c: Context) -> Iterator[Finding]:
    s = read_sync()
    ntp_fix = "timedatectl set-ntp true (systemd-timesyncd) or install chrony; allow UDP 123 out to the NTP server"
    if s.synced is None:
        yield skipped("clock.sync", f"cannot ask the kernel: {s.reason}")
    elif s.synced:
        yield ok("clock.sync", f"NTP-synchronised (max error {s.maxerror_ms:.0f} ms)")
    else:
        yield warning("clock.sync", "the system clock is NOT synchronised (NTP)", ntp_fix)
    clock = (c.status or {}).get("clock") or {}
    offset_ms = clock.get("centre_offset_ms")
    if offset_ms is None:
        # uplink-v1 acks are {v, dev, seq}: they carry no time. Signed commands carry `at`; the
        # running agent keeps the smallest (arrival - at) of recent ones (agent.clock.CentreClock).
        yield skipped("clock.centre", "no signed command from the centre yet (acks carry no time in uplink-v1); "
                      "a ping from the centre gives the offset" if c.status is not None else c.status_reason)
    elif abs(offset_ms) / 1000 >= CLOCK_ERROR_S:
        yield error("clock.centre", f"this PC's clock is {offset_ms / 1000:+.1f} s from the centre's "
                    f"(from {clock.get('centre_samples')} signed commands; + is ahead)", ntp_fix)
    else:
        yield ok("clock.centre", f"{offset_ms / 1000:+.1f} s from the centre's clock "
                 f"(from {clock.get('centre_samples')} signed commands, transit included)")


def _certs(path: Path) -> list[x509.Certificate]:
    return x509.load_pem_x509_certificates(path.read_bytes())


def cert_checks(c: Context) -> Iterator[Finding]:
    u = c.cfg.uplink
    for fid, path, what in (("tls.ca", u.ca_file, "CA file"), ("tls.client-cert", u.cert_file, "client certificate")):
        if not u.tls:
            yield skipped(fid, "the broker URL is mqtt:// (no TLS)")
            continue
        if path is None:
            yield skipped(fid, f"no {what} configured" + (" (the system's CAs are used)" if fid == "tls.ca" else ""))
            continue
        try:
            certs = _certs(path)
        except (OSError, ValueError) as exc:
            yield error(fid, f"{what} {path} cannot be read as PEM certificates: {exc}",
                        f"put the {what} you received from the centre in {path}")
            continue
        now = dt.datetime.now(dt.UTC)
        first_end = min(certs, key=lambda k: k.not_valid_after_utc)
        end = first_end.not_valid_after_utc
        subject = first_end.subject.rfc4514_string()
        days = (end - now).total_seconds() / 86400
        renew = f"ask the centre for a new {what} and replace {path}, then systemctl restart coopagent"
        if any(k.not_valid_before_utc > now for k in certs):
            yield error(fid, f"{what} {path} ({subject}) is not valid yet: this PC's clock may be wrong",
                        "check the clock (clock.sync); " + renew)
        elif days < 0:
            yield error(fid, f"{what} {path} ({subject}) expired on {end:%Y-%m-%d}", renew)
        elif days < CERT_WARN_DAYS:
            yield warning(fid, f"{what} {path} ({subject}) expires in {days:.0f} days ({end:%Y-%m-%d})", renew)
        else:
            yield ok(fid, f"{what} valid until {end:%Y-%m-%d} ({days:.0f} days)")

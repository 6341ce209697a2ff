"""ONVIF queries (onvif-zeep-async): identity, profiles, stream and snapshot URIs, clock drift.

Why onvif-zeep-async and not onvif-zeep: onvif-zeep's last release was in 2018 (zeep 3,
no fixes since); onvif-zeep-async is its maintained successor (same `onvif` import name,
so never both installed), used by Home Assistant's ONVIF integration, released through
2025, and it handles the digest clock offset (it reads GetSystemDateAndTime first, so a
camera whose clock is off still authenticates). Its API is asyncio; our components are
threads, so each query is one short asyncio.run() on the calling thread.

Errors follow Home Assistant's split: CameraAuthError (wrong user or password: permanent,
do not retry), CameraUnreachable (timeout, refused, no route: retry with backoff).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

from drivers.camera.secrets import scrub, strip_credentials

log = logging.getLogger(__name__)

STREAM_SETUP = {"Stream": "RTP-Unicast", "Transport": {"Protocol": "RTSP"}}


class CameraError(Exception):
    """A camera query failed; str() is scrubbed and fit for logs and the CLI."""

    retryable = True


class CameraAuthError(CameraError):
    retryable = False


class CameraUnreachable(CameraError):
    pass


@dataclass
class Profile:
    token: str
    name: str
    width: int | None
    height: int | None


@dataclass
class OnvifInfo:
    host: str
    port: int
    manufacturer: str
    model: str
    serial: str
    firmware: str
    profiles: list[Profile] = field(default_factory=list)
    main_uri: str | None = None
    sub_uri: str | None = None
    snapshot_uri: str | None = None
    clock_drift_s: float | None = None  # camera minus us; positive = camera ahead


_AUTH_WORDS = ("not authorized", "notauthorized", "unauthorized", "autherror", "authentication")
# an HTTP 401, but not the digits 401 inside a port or an address ("127.0.0.1:40123")
_HTTP_401 = re.compile(r"(?<![\d:.])401(?![\d:.])")


def _is_auth_failure(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(s in text for s in _AUTH_WORDS) or bool(_HTTP_401.search(text))


_UNREACHABLE_WORDS = ("timeout", "timed out", "connect", "refused", "unreachable", "no route", "reset by peer")


def _chain(exc: BaseException) -> list[BaseException]:
    """The exception and what it wraps: onvif-zeep-async wraps aiohttp's errors in ONVIFError."""
    seen: list[BaseException] = []
    cur: BaseException | None = exc
    while cur is not None and cur not in seen and len(seen) < 10:
        seen.append(cur)
        cur = cur.__cause__ or cur.__context__
    return seen


def classify(exc: BaseException, where: str, *secrets: str | None) -> CameraError:
    """Map library exceptions to our two kinds, with a message that names no secret."""
    text = scrub(str(exc) or type(exc).__name__, *secrets)
    chain = _chain(exc)
    if any(_is_auth_failure(e) for e in chain):
        return CameraAuthError(
            f"{where}: authentication failed (wrong username or password?); not retried until the config changes"
        )
    for e in chain:
        words = f"{type(e).__name__} {e}".lower()
        if isinstance(e, (OSError, asyncio.TimeoutError, TimeoutError)) or any(w in words for w in _UNREACHABLE_WORDS):
            return CameraUnreachable(f"{where}: camera unreachable: {text}")
    return CameraError(f"{where}: ONVIF error: {text}")


def _drift(reply: Any) -> float | None:
    try:
        u = reply.UTCDateTime
        cam = dt.datetime(
            u.Date.Year, u.Date.Month, u.Date.Day, u.Time.Hour, u.Time.Minute, u.Time.Second, tzinfo=dt.UTC
        )
    except (AttributeError, TypeError, ValueError):
        return None
    return cam.timestamp() - time.time()


async def _query(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    timeout_s: float,
    main_profile: int,
    sub_profile: int | None,
) -> OnvifInfo:
    from onvif import ONVIFCamera  # imported late: zeep's WSDL loading is slow and only needed here

    # no_cache: zeep would otherwise keep a SQLite cache in the home directory (WSDLs are local)
    cam = ONVIFCamera(host, port, user or "", password or "", no_cache=True, adjust_time=True)
    try:
        async with asyncio.timeout(timeout_s * 4):
            await cam.update_xaddrs()
            dev = await cam.create_devicemgmt_service()
            drift = _drift(await dev.GetSystemDateAndTime())
            di = await dev.GetDeviceInformation()
            info = OnvifInfo(
                host,
                port,
                str(di.Manufacturer),
                str(di.Model),
                str(di.SerialNumber),
                str(di.FirmwareVersion),
                clock_drift_s=drift,
            )
            media = await cam.create_media_service()
            for p in await media.GetProfiles():
                res = getattr(getattr(p, "VideoEncoderConfiguration", None), "Resolution", None)
                info.profiles.append(
                    Profile(
                        str(p.token),
                        str(getattr(p, "Name", "")),
                        getattr(res, "Width", None),
                        getattr(res, "Height", None),
                    )
                )
            if info.profiles:
                main = info.profiles[min(main_profile, len(info.profiles) - 1)]
                sub = info.profiles[-1 if sub_profile is None else min(sub_profile, len(info.profiles) - 1)]
                for attr, prof in (("main_uri", main), ("sub_uri", sub)):
                    r = await media.GetStreamUri({"StreamSetup": STREAM_SETUP, "ProfileToken": prof.token})
                    setattr(info, attr, strip_credentials(str(r.Uri)))
                try:
                    s = await media.GetSnapshotUri({"ProfileToken": main.token})
                    info.snapshot_uri = strip_credentials(str(s.Uri))
                except Exception as exc:  # snapshots are optional in ONVIF Profile S
                    log.debug("camera %s:%s has no snapshot URI: %s", host, port, exc)
            return info
    finally:
        await cam.close()


def query(
    host: str,
    port: int,
    user: str | None,
    password: str | None,
    timeout_s: float = 5.0,
    main_profile: int = 0,
    sub_profile: int | None = None,
) -> OnvifInfo:
    """GetDeviceInformation, GetSystemDateAndTime, GetProfiles, GetStreamUri x2, GetSnapshotUri."""
    where = f"ONVIF {host}:{port}"
    try:
        return asyncio.run(_query(host, port, user, password, timeout_s, main_profile, sub_profile))
    except CameraError:
        raise
    except Exception as exc:
        raise classify(exc, where, password) from None

"""Where a camera's streams are: fixed RTSP URLs, or asked of the camera over ONVIF.

An ONVIF camera is re-asked at most every REFRESH_S when a stream (re)connects, and by its
watch every onvif_poll_s. If its address stops answering and its serial is configured,
WS-Discovery finds it again by serial (DHCP moved it): the address is followed, an
`address_changed` device_event says so. Clock drift past the threshold is a `clock_drift`
event, once per crossing. A wrong password is a CameraAuthError: reported once, then the
camera is left alone until the config changes (retrying cannot fix it).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from core.interfaces import Component, Health
from drivers.camera import discovery
from drivers.camera.config import CameraConfig
from drivers.camera.onvif_client import CameraAuthError, CameraError, CameraUnreachable, OnvifInfo, query
from drivers.camera.secrets import read_password, with_credentials

log = logging.getLogger(__name__)

REFRESH_S = 30.0
EventFn = Callable[[str, dict[str, Any]], None]


class CameraSource:
    def __init__(self, cfg: CameraConfig, on_event: EventFn):
        self.cfg = cfg
        self.on_event = on_event
        self.password = read_password(cfg.password_file)
        self.info: OnvifInfo | None = None
        self.host = cfg.onvif.host if cfg.onvif else None
        self.port = cfg.onvif.port if cfg.onvif else None
        self.auth_failed: str | None = None
        self.drifting = False
        self._resolved_at = 0.0
        self._lock = threading.Lock()

    @property
    def secrets(self) -> tuple[str | None, ...]:
        return (self.password,)

    def main_url(self) -> str:
        return self._url("main")

    def sub_url(self) -> str:
        return self._url("sub")

    def _url(self, which: str) -> str:
        if self.cfg.onvif is None:
            bare = self.cfg.url if which == "main" else (self.cfg.sub_url or self.cfg.url)
        else:
            info = self.refresh(max_age_s=REFRESH_S)
            bare = info.main_uri if which == "main" else (info.sub_uri or info.main_uri)
            if not bare:
                raise CameraError(f"camera {self.cfg.name}: ONVIF gave no stream URI")
        assert bare is not None
        return with_credentials(bare, self.cfg.username, self.password)

    def refresh(self, max_age_s: float = 0.0) -> OnvifInfo:
        """Ask the camera (ONVIF) unless the last answer is younger than max_age_s."""
        onvif = self.cfg.onvif
        if onvif is None:
            raise CameraError(f"camera {self.cfg.name} has no [onvif] section")
        with self._lock:
            if self.auth_failed:
                raise CameraAuthError(self.auth_failed)
            if self.info is not None and time.monotonic() - self._resolved_at < max_age_s:
                return self.info
            assert self.host is not None and self.port is not None
            try:
                info = query(
                    self.host,
                    self.port,
                    self.cfg.username,
                    self.password,
                    onvif.timeout_s,
                    onvif.main_profile,
                    onvif.sub_profile,
                )
            except CameraUnreachable:
                info = self._follow_serial()
            except CameraAuthError as exc:
                self.auth_failed = f"camera {self.cfg.name}: {exc}"
                log.error("%s", self.auth_failed)
                self.on_event("error", {"camera": self.cfg.name, "reason": "onvif_auth", "detail": str(exc)})
                raise CameraAuthError(self.auth_failed) from None
            if onvif.serial and info.serial != onvif.serial:
                # DHCP gave our camera's old address to another camera: look for ours by serial
                log.warning(
                    "camera %s: %s:%s is serial %r, not %r; searching",
                    self.cfg.name,
                    self.host,
                    self.port,
                    info.serial,
                    onvif.serial,
                )
                info = self._follow_serial()
            self.info, self._resolved_at = info, time.monotonic()
        self._check_drift(info)
        return info

    def _follow_serial(self) -> OnvifInfo:
        onvif = self.cfg.onvif
        assert onvif is not None
        if not onvif.serial:
            raise CameraUnreachable(
                f"camera {self.cfg.name}: ONVIF {self.host}:{self.port} does not answer "
                "(set onvif.serial to follow an address change)"
            )
        found = discovery.find_by_serial(onvif.serial, self.cfg.username, self.password, onvif.timeout_s)
        if found is None or found.info is None:
            raise CameraUnreachable(f"camera {self.cfg.name}: serial {onvif.serial} not found on the network")
        old = f"{self.host}:{self.port}"
        self.host, self.port = found.host, found.port
        log.warning(
            "camera %s moved from %s to %s:%s (serial %s)",
            self.cfg.name,
            old,
            found.host,
            found.port,
            onvif.serial,
        )
        self.on_event(
            "address_changed",
            {
                "camera": self.cfg.name,
                "from": old,
                "to": f"{found.host}:{found.port}",
                "serial": onvif.serial,
            },
        )
        return found.info

    def _check_drift(self, info: OnvifInfo) -> None:
        drift = info.clock_drift_s
        if drift is None:
            return
        over = abs(drift) > self.cfg.clock_drift_s
        if over and not self.drifting:
            log.warning("camera %s clock is %+.1f s off", self.cfg.name, drift)
            self.on_event(
                "clock_drift",
                {"camera": self.cfg.name, "drift_s": round(drift, 1), "threshold_s": self.cfg.clock_drift_s},
            )
        self.drifting = over


class OnvifWatch(Component):
    """Re-asks an ONVIF camera every onvif_poll_s: identity, address, clock."""

    def __init__(self, source: CameraSource):
        self.name = f"camera:{source.cfg.name}:onvif"
        self.source = source
        self.ok = False

    def health(self) -> Health:
        return "down" if self.source.auth_failed else ("ok" if self.ok else "degraded")

    def run(self, stop: threading.Event) -> None:
        interval = 0.0
        while not stop.wait(interval):
            interval = self.source.cfg.onvif_poll_s
            try:
                self.source.refresh()
                self.ok = True
            except CameraAuthError:
                self.ok = False
                interval = 3600.0  # permanent until the config changes; the error was recorded once
            except CameraError as exc:
                self.ok = False
                log.warning("%s", exc)
                interval = min(interval, 60.0)

"""An ONVIF camera for the tests: PyPI ipycam's ONVIF service, HTTP handler and WS-Discovery.

Run by the ipycam venv's Python (.venv-ipycam; ipycam pulls in full opencv, which must not
meet opencv-python-headless in the project venv). Only ipycam's ONVIF side is started: its
streaming needs go2rtc, which is not installable here, so GetStreamUri points at our
GStreamer RTSP server (--rtsp-port, paths main/sub) instead. --clock-offset shifts the time
it reports (GetSystemDateAndTime), to test clock drift. Prints "ready" when listening.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import time

from ipycam.camera import ReusableThreadingTCPServer
from ipycam.config import CameraConfig
from ipycam.discovery import WSDiscoveryServer
from ipycam.http import IPCameraHTTPHandler
from ipycam.onvif import ONVIFService


class SkewedONVIF(ONVIFService):
    offset_s = 0.0

    def get_system_date_time(self) -> str:
        now = time.gmtime(time.time() + self.offset_s)
        body = self._render(
            "get_system_date_time",
            hour=now.tm_hour,
            minute=now.tm_min,
            second=now.tm_sec,
            year=now.tm_year,
            month=now.tm_mon,
            day=now.tm_mday,
        )
        return self._wrap_envelope(body)

    def create_probe_match(self, relates_to: str) -> str:
        """ipycam 1.3.0 answers a Probe with Action .../ProbeMatch and a bare <d:ProbeMatch>;
        WS-Discovery (2005/04) defines Action .../ProbeMatches with <d:ProbeMatches> around the
        matches, and conforming clients (PyPI wsdiscovery, Home Assistant's) drop ipycam's reply.
        Real cameras send the conforming form, so the peer is corrected here, nothing else."""
        xml = super().create_probe_match(relates_to)
        return (
            xml.replace("/discovery/ProbeMatch</wsa:Action>", "/discovery/ProbeMatches</wsa:Action>")
            .replace("<d:ProbeMatch>", "<d:ProbeMatches><d:ProbeMatch>")
            .replace("</d:ProbeMatch>", "</d:ProbeMatch></d:ProbeMatches>")
        )


class Shell:
    """What ipycam's HTTP handler needs of an IPCamera for /onvif/ requests."""

    def __init__(self, config: CameraConfig, onvif: ONVIFService):
        self.config = config
        self.onvif = onvif


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--rtsp-port", type=int, default=8554)
    p.add_argument("--serial", default="PY-000001")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    p.add_argument("--clock-offset", type=float, default=0.0)
    p.add_argument("--discovery", action="store_true", help="answer WS-Discovery probes (use in a netns)")
    p.add_argument("--until-signal", action="store_true", help="run until SIGTERM instead of stdin EOF")
    a = p.parse_args()
    cfg = CameraConfig(
        name="Dock-Camera",
        manufacturer="PythonCam",
        model="VirtualCam-1",
        serial_number=a.serial,
        local_ip=a.host,
        onvif_port=a.port,
        rtsp_port=a.rtsp_port,
        main_stream_name="main",
        sub_stream_name="sub",
        main_width=640,
        main_height=360,
        sub_width=320,
        sub_height=180,
    )
    if a.user:
        cfg.username, cfg.password = a.user, a.password
    onvif = SkewedONVIF(cfg, None)
    onvif.offset_s = a.clock_offset
    IPCameraHTTPHandler.camera = Shell(cfg, onvif)  # type: ignore[assignment]
    server = ReusableThreadingTCPServer((a.host, a.port), IPCameraHTTPHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    discovery = None
    if a.discovery:
        discovery = WSDiscoveryServer(onvif)
        discovery.start()
    if a.until_signal:
        signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})
    print("ready", flush=True)
    if a.until_signal:
        signal.sigwait({signal.SIGTERM, signal.SIGINT})
    else:
        sys.stdin.read()  # until the test closes our stdin
    if discovery:
        discovery.stop()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())

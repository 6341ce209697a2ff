"""GStreamer RTSP server that serves H.264 files in a loop, without encoding (run by Debian's /usr/bin/python3).

For benchmarks that must not pay for the cameras: tests/peers/rtsp_gst.py encodes its test
pattern live (one x264 per path, a large share of a core at 720p), which on a 2-core
machine would compete with the agent being measured. Here each path reads one raw H.264
Annex B file (encode it once, e.g. with `ffmpeg -f lavfi -i testsrc2 ... -f h264`), loops it
forever (multifilesrc loop=true), and h264parse stamps the frames from the --fps given, so
the sink sends them at the camera's pace. Each client gets its own pipeline (not shared):
eight clients joining one shared media at once break gst-rtsp-server 1.22, and a file
pipeline costs only parsing and packetising.

Paths: every `--path NAME=FILE` is served as rtsp://HOST:PORT/NAME. Prints "ready URL" when
listening; "quit" on stdin (or its end) stops it.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch(path: str, fps: int) -> str:
    caps = f"video/x-h264,stream-format=byte-stream,alignment=au,framerate={fps}/1"
    return (
        f"( multifilesrc location={path} loop=true caps=\"video/x-h264,stream-format=byte-stream\" "
        f"! h264parse ! {caps} ! identity name=stamp "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


def _pts_from_dts(_pad: Gst.Pad, info: Gst.PadProbeInfo) -> Gst.PadProbeReturn:
    """h264parse stamps only the decoding time of a raw stream (it cannot know the reordering);
    the files have no B-frames (encode with -bf 0), so presentation time = decoding time."""
    buf = info.get_buffer()
    if buf is not None and buf.pts == Gst.CLOCK_TIME_NONE:
        buf.pts = buf.dts
    return Gst.PadProbeReturn.OK


def _configured(_factory: GstRtspServer.RTSPMediaFactory, media: GstRtspServer.RTSPMedia) -> None:
    stamp = media.get_element().get_by_name("stamp")
    stamp.get_static_pad("src").add_probe(Gst.PadProbeType.BUFFER, _pts_from_dts)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--path", action="append", required=True, help="NAME=FILE (raw H.264 byte stream)")
    a = p.parse_args()
    Gst.init(None)
    server = GstRtspServer.RTSPServer()
    server.set_address(a.host)
    server.set_service(str(a.port))
    mounts = server.get_mount_points()
    for item in a.path:
        name, _, file = item.partition("=")
        factory = GstRtspServer.RTSPMediaFactory()
        factory.set_launch(launch(file, a.fps))
        factory.set_shared(False)
        factory.connect("media-configure", _configured)
        mounts.add_factory(f"/{name}", factory)
    loop = GLib.MainLoop()
    if server.attach(None) == 0:
        print(f"error cannot listen on {a.host}:{a.port}", flush=True)
        return 1

    def read_stdin() -> None:
        for line in sys.stdin:
            if line.strip() == "quit":
                break
        GLib.idle_add(loop.quit)

    threading.Thread(target=read_stdin, daemon=True).start()
    print(f"ready rtsp://{a.host}:{a.port}/", flush=True)
    loop.run()
    return 0


if __name__ == "__main__":
    sys.exit(main())

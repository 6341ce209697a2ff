"""GStreamer RTSP server serving a generated H.264 test pattern (run by Debian's /usr/bin/python3).

Not imported by the tests: tests/peers/rtsp_server.py starts it as a child process, because
python3-gi exists only for the system Python. It serves /main and /sub (two encoders, two
resolutions) and obeys one-line commands on stdin, answering each with "ok ..." on stdout:

  pattern NAME     switch the videotestsrc pattern live (e.g. black = covered lens, ball = moved scene)
  blur SIGMA       gaussian blur of the picture (out of focus); 0 = sharp
  quit             stop the main loop and exit

A frozen camera (connection open, nothing sent) is this process under SIGSTOP: the kernel keeps
the TCP sessions and accepts new ones, nobody answers. (A valve in the pipeline was tried first:
a client that connects while it drops wedges gst-rtsp-server 1.22's PLAY seek for good.)

Optional basic auth (--user/--password) protects both paths, as on a real camera.
"""

from __future__ import annotations

import argparse
import sys
import threading

import gi

gi.require_version("Gst", "1.0")
gi.require_version("GstRtspServer", "1.0")
from gi.repository import GLib, Gst, GstRtspServer  # noqa: E402


def launch(width: int, height: int, fps: int, gop: int, kbps: int, tag: str) -> str:
    """One pipeline per path (per client unless --shared); videotestsrc/gaussianblur change the scene."""
    # The blur runs only on the sub stream (where tamper is judged): on 1080p it would cost a core.
    blur = f"! videoconvert ! gaussianblur name=blur{tag} sigma=0 ! videoconvert " if tag == "sub" else ""
    return (
        f"( videotestsrc name=src{tag} is-live=true pattern=smpte "
        f"! video/x-raw,width={width},height={height},framerate={fps}/1 {blur}"
        f"! clockoverlay halignment=right valignment=bottom "
        f"! x264enc tune=zerolatency speed-preset=ultrafast bitrate={kbps} key-int-max={gop} "
        f"! video/x-h264,profile=baseline "
        f"! rtph264pay name=pay0 pt=96 config-interval=1 )"
    )


class Server:
    def __init__(self, args: argparse.Namespace) -> None:
        self.media: list[GstRtspServer.RTSPMedia] = []
        self.server = GstRtspServer.RTSPServer()
        self.server.set_address(args.host)
        self.server.set_service(str(args.port))
        mounts = self.server.get_mount_points()
        streams = {
            "main": (args.width, args.height, args.kbps),
            "sub": (args.sub_width, args.sub_height, max(200, args.kbps // 6)),
        }
        for tag, (w, h, kbps) in streams.items():
            factory = GstRtspServer.RTSPMediaFactory()
            factory.set_launch(launch(w, h, args.fps, args.gop, kbps, tag))
            factory.set_shared(args.shared)
            factory.connect("media-configure", self._configured)
            if args.user:
                perms = GstRtspServer.RTSPPermissions()
                perms.add_role_from_structure(
                    Gst.Structure.new_from_string(
                        "user, media.factory.access=(boolean)true, media.factory.construct=(boolean)true"
                    )
                )
                factory.set_permissions(perms)
            mounts.add_factory(f"/{tag}", factory)
        if args.user:
            auth = GstRtspServer.RTSPAuth()
            token = GstRtspServer.RTSPToken()
            token.set_string("media.factory.role", "user")
            auth.add_basic(GstRtspServer.RTSPAuth.make_basic(args.user, args.password), token)
            self.server.set_auth(auth)
        self.state: dict[str, object] = {"pattern": "smpte", "sigma": 0.0}

    def _configured(self, _factory: object, media: GstRtspServer.RTSPMedia) -> None:
        media.set_reusable(True)
        self.media.append(media)
        self._apply(media)
        media.connect("unprepared", lambda m: self.media.remove(m) if m in self.media else None)

    def _apply(self, media: GstRtspServer.RTSPMedia) -> None:
        bin_ = media.get_element()
        for tag in ("main", "sub"):
            src = bin_.get_by_name(f"src{tag}")
            if src is None:
                continue
            src.set_property("pattern", self.state["pattern"])
            blur = bin_.get_by_name(f"blur{tag}")
            if blur is not None:
                blur.set_property("sigma", self.state["sigma"])

    def command(self, line: str) -> bool:
        """Runs on the GLib main loop (idle_add), so the pipelines are touched from one thread."""
        word, _, arg = line.strip().partition(" ")
        if word == "pattern":
            self.state["pattern"] = arg
        elif word == "blur":
            self.state["sigma"] = float(arg)
        elif word == "quit":
            loop.quit()
            return False
        elif not word:
            return False
        else:
            print(f"error unknown command {word}", flush=True)
            return False
        for media in self.media:
            self._apply(media)
        print(f"ok {word}", flush=True)
        return False


def read_stdin(server: Server) -> None:
    for line in sys.stdin:
        GLib.idle_add(server.command, line)
    GLib.idle_add(server.command, "quit")


def parse() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8554)
    p.add_argument("--width", type=int, default=1920)
    p.add_argument("--height", type=int, default=1080)
    p.add_argument("--sub-width", type=int, default=640)
    p.add_argument("--sub-height", type=int, default=360)
    p.add_argument("--fps", type=int, default=15)
    p.add_argument("--gop", type=int, default=15, help="key-int-max: frames between keyframes")
    p.add_argument("--kbps", type=int, default=2000)
    p.add_argument("--shared", action="store_true", help="one encoder for all clients of a path (benchmarks)")
    p.add_argument("--user", default="")
    p.add_argument("--password", default="")
    return p.parse_args()


if __name__ == "__main__":
    Gst.init(None)
    opts = parse()
    srv = Server(opts)
    loop = GLib.MainLoop()
    if srv.server.attach(None) == 0:
        print(f"error cannot listen on {opts.host}:{opts.port}", flush=True)
        sys.exit(1)
    threading.Thread(target=read_stdin, args=(srv,), daemon=True).start()
    print(f"ready rtsp://{opts.host}:{opts.port}/main", flush=True)
    loop.run()

#!/usr/bin/env bash
# Preflight for `make test` and `make demo`: checks, in a few seconds, that every program,
# GStreamer element and build need the tests and the demo use is really on this machine,
# and names the Debian package that provides each missing one. It runs right after
# scripts/install-system-deps.sh, so a package missing from that script's list fails here
# with its name, not 20-40 s later as a camera test's timeout (this happened once:
# clockoverlay, from gstreamer1.0-x, was missing on a fresh machine and every RTSP DESCRIBE
# answered 503).
#
# Usage: scripts/preflight.sh [test|demo|deb]   (default: test; demo and deb need less)
# Exit 0 when everything is there; 1 with one line per missing thing otherwise.
set -uo pipefail
what=${1:-test}
case "$what" in test|demo|deb) ;; *) echo "usage: $0 [test|demo|deb]" >&2; exit 2 ;; esac

missing=()
need_prog() {   # need_prog PROGRAM PACKAGE [PURPOSE]
  # sbin is searched too: mosquitto and useradd live there and a user's PATH may not have it.
  PATH="$PATH:/usr/sbin:/sbin" command -v "$1" >/dev/null 2>&1 \
    || missing+=("program '$1' (Debian package $2)${3:+: $3}")
}
need_elem() {   # need_elem ELEMENT PACKAGE
  if ! command -v gst-inspect-1.0 >/dev/null 2>&1; then return; fi   # reported as a program
  gst-inspect-1.0 --exists "$1" 2>/dev/null || missing+=("GStreamer element '$1' (Debian package $2)")
}
need_py() {     # need_py 'python statement' PACKAGE WHAT  (Debian's own Python: python3-gi lives there)
  /usr/bin/python3 -c "$1" >/dev/null 2>&1 || missing+=("$3 (Debian package $2)")
}

# --- what every target needs -------------------------------------------------------------
need_prog python3 python3
need_py 'import venv, ensurepip' python3-venv "Debian Python's venv/ensurepip"

if [ "$what" = test ] || [ "$what" = demo ]; then
  need_prog mosquitto mosquitto "the MQTT broker the tests and the demo start"
  need_prog ffmpeg ffmpeg "stream-copy recording and clip cutting"
  need_prog ffprobe ffmpeg
  need_prog socat socat "pseudo-terminal pairs for the simulated scanner and scale"
  need_prog gst-inspect-1.0 gstreamer1.0-tools
  # The simulated camera (tests/peers/rtsp_gst.py): every element of its pipeline.
  need_py 'import gi; gi.require_version("GstRtspServer", "1.0"); from gi.repository import GstRtspServer' \
    gir1.2-gst-rtsp-server-1.0 "GStreamer's RTSP server for Python (python3-gi)"
  need_elem videotestsrc gstreamer1.0-plugins-base
  need_elem videoconvert gstreamer1.0-plugins-base
  need_elem clockoverlay gstreamer1.0-x
  need_elem x264enc gstreamer1.0-plugins-ugly
  need_elem rtph264pay gstreamer1.0-plugins-good
  need_elem gaussianblur gstreamer1.0-plugins-bad
  need_elem rtspsrc gstreamer1.0-plugins-good
fi

if [ "$what" = test ]; then
  need_prog mosquitto_pub mosquitto-clients
  need_prog sqlite3 sqlite3
  # The receiver's PostgreSQL tests (tests/peers/postgres.py) run Debian's own 15 binaries, off PATH.
  for b in initdb postgres; do
    [ -x "/usr/lib/postgresql/15/bin/$b" ] \
      || missing+=("program '/usr/lib/postgresql/15/bin/$b' from postgresql-15 (Debian package postgresql): the receiver's PostgreSQL tests")
  done
  need_prog promtool prometheus "checks and unit-tests the receiver's alert rules (receiver/alerts.rules.yml)"
  need_prog openssl openssl "the tests' own certificate authority"
  need_prog wrk wrk "HTTP load in the API tests"
  need_prog shellcheck shellcheck "lint of the shell scripts"
  need_prog chromium chromium "the status page's browser tests (headless)"
  need_prog chromedriver chromium-driver "Selenium drives chromium through it"
  need_prog ip iproute2 "private network namespaces (ONVIF discovery tests)"
  need_prog unshare util-linux
  need_prog setpriv util-linux
  need_prog useradd passwd
  need_prog systemd-analyze systemd "unit verification and the exposure score"
  need_prog debootstrap debootstrap "the Debian 12 root file system of the packaging tests"
  need_prog systemd-nspawn systemd-container "boots that root file system with systemd as PID 1"
fi

if [ "$what" = test ] || [ "$what" = deb ]; then
  # pycairo (reportlab's PNG backend) builds from source: a compiler, headers and cairo's.
  need_prog gcc gcc "C extensions that build from source (pycairo)"
  need_prog pkg-config pkg-config
  [ -f /usr/include/stdio.h ] || missing+=("C library headers (Debian package libc6-dev)")
  [ -n "$(find /usr/include -maxdepth 2 -path '*python3.11*' -name Python.h 2>/dev/null | head -1)" ] \
    || missing+=("Python 3.11 headers (Debian package python3-dev)")
  pkg-config --exists cairo 2>/dev/null || missing+=("cairo's headers (Debian package libcairo2-dev)")
  need_prog dpkg-deb dpkg "builds the .deb"
  need_prog dpkg-architecture dpkg-dev
fi

if [ "${#missing[@]}" -gt 0 ]; then
  echo "preflight ($what): missing on this machine:" >&2
  printf '  - %s\n' "${missing[@]}" >&2
  echo "Install them with: sudo bash scripts/install-system-deps.sh (and add any not listed there to it)." >&2
  exit 1
fi
echo "preflight ($what): every program, GStreamer element and build need is here."

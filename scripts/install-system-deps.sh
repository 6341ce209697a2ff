#!/usr/bin/env bash
# Installs every Debian package the agent, its tests and the demo need. Idempotent: a
# package already present is not fetched again, and apt's lists are refreshed only when
# something is missing. Run as root (CI and the demo machine are root; otherwise via sudo).
set -euo pipefail
PKGS=(
  mosquitto mosquitto-clients          # the MQTT broker the tests and the demo start
  ffmpeg                               # stream-copy recording and clip cutting, ffprobe
  socat sqlite3 openssl wrk            # pty pairs, buffer inspection, test CA, HTTP load
  postgresql                           # PostgreSQL 15: the centre's store; tests run initdb in a temp folder
  prometheus                           # promtool: checks and unit-tests the receiver's alert rules
  python3-venv shellcheck              # venvs for install.sh (Debian splits ensurepip out); script lint
  python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-rtsp   # GStreamer RTSP test server
  gstreamer1.0-plugins-base gstreamer1.0-plugins-good gstreamer1.0-plugins-ugly gstreamer1.0-tools
  gstreamer1.0-plugins-bad             # the blur element of the tamper tests
  gstreamer1.0-x                       # clockoverlay/textoverlay: the simulated camera's moving picture
  iproute2 util-linux                  # ip and unshare: ONVIF discovery tests in a private network namespace
  systemd                              # systemd-analyze verify for the unit
  gcc libc6-dev python3-dev            # C extensions that build from source (pycairo) need a compiler and headers
  libcairo2-dev pkg-config             # pycairo (reportlab's PNG backend for barcode sheets) builds from source
  dpkg-dev                             # make deb: dpkg-deb and dpkg-architecture
  debootstrap systemd-container        # the .deb tested in a Debian 12 booted by systemd-nspawn (systemd as PID 1)
  chromium chromium-driver             # the status page's tests in a real headless browser (Selenium)
)
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ "${#missing[@]}" -gt 0 ]; then
  SUDO=""; [ "$(id -u)" = 0 ] || SUDO="sudo"
  echo "installing Debian packages: ${missing[*]}"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian mosquitto package starts a system broker on 1883 where systemd runs; the
# tests start their own brokers on free ports, so nothing here depends on it.

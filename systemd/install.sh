#!/usr/bin/env bash
# Install or upgrade coopagent on a Debian 12 branch PC that cannot take the Debian package
# (`make deb`; docs/operations.md). Run as root from the source tree:
#   sudo systemd/install.sh
# The user, directory, config, token and key steps are systemd/setup-steps.sh, which the
# Debian package runs too.
# Idempotent: re-running upgrades the code and the unit and keeps the config, the API
# token and the device key (a key is never replaced; see `coopagent keys init --force`).
#
# What it does, in order: Debian packages (scripts/install-system-deps.sh), the system
# user `coopagent` (groups dialout, video), a venv in /opt/coopagent/venv with the project,
# /etc/coopagent/agent.toml from config/agent.example.toml if missing, a random API token
# (0600), the device key made by `coopagent keys init` as the service user (0600), the
# systemd unit (enabled, restarted only if it was running), /usr/local/sbin/coopagent-svc
# (run a coopagent command as the service would), and finally it prints the public key
# PEM to register at the centre.
#
# Options (the test suite uses them to install into a temporary root):
#   --root DIR         install below DIR instead of / (implies --no-systemctl; the user is
#                      created with useradd --root, so DIR/etc/passwd and group must exist)
#   --src DIR          project source tree (default: the tree this script is in)
#   --python PATH      interpreter for the venv (default /usr/bin/python3)
#   --config-template FILE   default: SRC/config/agent.example.toml
#   --wheelhouse DIR   install Python packages offline from this folder of wheels
#   --pip-args "ARGS"  extra arguments for pip install (e.g. --no-build-isolation)
#   --no-deps          skip apt (Debian packages already installed)
#   --no-systemctl     install the unit file but do not call systemctl
#   --start            start (or restart) the service at the end
set -euo pipefail

ROOT=/ SRC="" PYTHON=/usr/bin/python3 TEMPLATE="" WHEELHOUSE="" PIP_ARGS=""
DEPS=1 SYSTEMCTL=1 START=0
die() { echo "install.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "$2"); shift 2 ;;
    --src) SRC=$(realpath "$2"); shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --config-template) TEMPLATE=$(realpath "$2"); shift 2 ;;
    --wheelhouse) WHEELHOUSE=$(realpath "$2"); shift 2 ;;
    --pip-args) PIP_ARGS=$2; shift 2 ;;
    --no-deps) DEPS=0; shift ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --start) START=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done

[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
SRC=${SRC:-$(cd "$(dirname "$0")/.." && pwd)}
TEMPLATE=${TEMPLATE:-$SRC/config/agent.example.toml}
[ -f "$SRC/setup.py" ] || die "$SRC is not the coopagent source tree (no setup.py)"
[ -f "$TEMPLATE" ] || die "config template $TEMPLATE not found"
R=${ROOT%/}                      # "" for a real install, so "$R/etc" is /etc
[ "$R" = "" ] || SYSTEMCTL=0     # never touch this machine's systemd for a --root install

OPT=$R/opt/coopagent VENV=$R/opt/coopagent/venv
ETC=$R/etc/coopagent CONFIG=$ETC/agent.toml

# --- Debian packages ---------------------------------------------------------------------
if [ "$DEPS" = 1 ]; then
  say "Debian packages"
  bash "$SRC/scripts/install-system-deps.sh"
  # Debian splits venv support (ensurepip) out of python3.
  if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
fi

# The steps the Debian package runs too (systemd/setup-steps.sh): user, directories,
# config, token, key.
# shellcheck source=systemd/setup-steps.sh
. "$SRC/systemd/setup-steps.sh"
cs_user "$R"
cs_dirs "$R"

# --- venv and the project ----------------------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
  say "creating venv $VENV"
  "$PYTHON" -m venv "$VENV"
fi
say "installing coopagent from $SRC into $VENV"
PIP=("$VENV/bin/python" -m pip install --disable-pip-version-check --no-input --quiet --upgrade)
[ -z "$WHEELHOUSE" ] || PIP+=(--no-index --find-links "$WHEELHOUSE")
# shellcheck disable=SC2206  # PIP_ARGS is a list of words on purpose
[ -z "$PIP_ARGS" ] || PIP+=($PIP_ARGS)
BUILD=$(mktemp -d); trap 'rm -rf "$BUILD"' EXIT
cs_copy_source "$SRC" "$BUILD/src"
"${PIP[@]}" "$BUILD/src"
rm -rf "$OPT/docs" && cp -r "$SRC/docs" "$OPT/docs"   # the unit's Documentation=
# The technician's wrapper: coopagent commands as the service user, with its credentials.
install -d -m 0755 "$R/usr/local/sbin"
install -m 0755 -o root -g root "$SRC/systemd/coopagent-svc" "$R/usr/local/sbin/coopagent-svc"
COOPAGENT=$VENV/bin/coopagent
[ -x "$COOPAGENT" ] || die "$COOPAGENT was not installed"

# --- config, secrets, the device key -----------------------------------------------------
cs_config "$R" "$TEMPLATE"
cs_token "$R" "$VENV/bin/python"
cs_key "$R" "$COOPAGENT" "$CONFIG"

# --- kernel modules and the unit ---------------------------------------------------------
# DeviceAllow=char-ttyUSB/char-ttyACM are resolved at service start from /proc/devices;
# loading the serial drivers at boot makes sure they are listed even before a scale is
# plugged in.
install -d -m 0755 "$R/etc/modules-load.d"
install -m 0644 "$SRC/systemd/modules-load.conf" "$R/etc/modules-load.d/coopagent.conf"
install -d -m 0755 "$R/etc/systemd/system"
install -m 0644 -o root -g root "$SRC/systemd/coopagent.service" "$R/etc/systemd/system/coopagent.service"
say "installed $R/etc/systemd/system/coopagent.service"

if [ "$SYSTEMCTL" = 1 ]; then
  systemctl daemon-reload
  systemctl enable coopagent.service
  if [ "$START" = 1 ]; then
    systemctl restart coopagent.service
  else
    systemctl try-restart coopagent.service   # an upgrade restarts a running agent only
  fi
fi

# --- what the technician does next -------------------------------------------------------
echo
cs_show_key "$R" "$COOPAGENT" "$CONFIG"
[ -f "$ETC/central.pub.pem" ] || echo "NOTE: $ETC/central.pub.pem is missing: copy the centre's public key there."
echo "Next: edit $CONFIG, then: $COOPAGENT config check --config $CONFIG"
[ "$SYSTEMCTL" = 1 ] && [ "$START" = 0 ] && echo "Then: systemctl start coopagent && journalctl -u coopagent -f"
exit 0

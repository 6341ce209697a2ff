#!/usr/bin/env bash
# Install or upgrade coopagent on a Debian 12 branch PC. Run as root from the source tree:
#   sudo systemd/install.sh
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
USER_NAME=coopagent
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
ETC=$R/etc/coopagent STATE=$R/var/lib/coopagent
CONFIG=$ETC/agent.toml

# --- Debian packages ---------------------------------------------------------------------
if [ "$DEPS" = 1 ]; then
  say "Debian packages"
  bash "$SRC/scripts/install-system-deps.sh"
  # Debian splits venv support (ensurepip) out of python3.
  if ! "$PYTHON" -c 'import ensurepip' 2>/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends python3-venv >/dev/null
  fi
fi

# --- the service user --------------------------------------------------------------------
# A real, persistent system user (not DynamicUser): it owns the device key across reinstalls.
# useradd/usermod --root work on DIR/etc/{passwd,group,shadow,gshadow}; ids are then read
# from those files, because this machine's own user database does not know the user.
ROOTOPT=(); [ "$R" = "" ] || ROOTOPT=(--root "$ROOT")
if ! grep -q "^$USER_NAME:" "$R/etc/passwd"; then
  say "creating system user $USER_NAME (groups dialout, video)"
  useradd "${ROOTOPT[@]}" --system --user-group --groups dialout,video \
    --home-dir /var/lib/coopagent --no-create-home --shell /usr/sbin/nologin \
    --comment "coop branch edge agent" "$USER_NAME" 2> >(grep -v "missing or non-executable shell" >&2)
else
  usermod "${ROOTOPT[@]}" --append --groups dialout,video "$USER_NAME"
fi
UID_N=$(awk -F: -v u="$USER_NAME" '$1 == u {print $3}' "$R/etc/passwd")
GID_N=$(awk -F: -v u="$USER_NAME" '$1 == u {print $4}' "$R/etc/passwd")
if [ -z "$UID_N" ] || [ -z "$GID_N" ]; then die "user $USER_NAME not found in $R/etc/passwd"; fi

# --- directories -------------------------------------------------------------------------
install -d -m 0755 -o root -g root "$OPT"
install -d -m 0750 -o root -g "$GID_N" "$ETC"           # config readable by the service group
install -d -m 0700 -o root -g root "$ETC/credentials"   # LoadCredential=secret: source
install -d -m 0700 -o "$UID_N" -g "$GID_N" "$STATE"     # StateDirectory=, the key lives here

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
# Build from a copy: pip writes build/ and *.egg-info into the tree it builds. From a git
# checkout the copy is what git sees (tracked and new files, nothing ignored: no venvs,
# caches or build output); from a plain copy (a USB stick) the same by name.
BUILD=$(mktemp -d); trap 'rm -rf "$BUILD" "$BUILD.tar"' EXIT
rc=0
if command -v git >/dev/null && git -C "$SRC" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
  git -C "$SRC" ls-files -z --cached --others --exclude-standard |
    tar -C "$SRC" --null --ignore-failed-read -T - -cf "$BUILD.tar" || rc=$?
else
  tar -C "$SRC" --exclude-vcs --exclude='.venv*' --exclude='.*_cache' --exclude='*.egg-info' \
    --exclude=build --exclude=dist --exclude=__pycache__ --exclude=.hypothesis -cf "$BUILD.tar" . || rc=$?
fi
# tar's status 1 means a file changed while it was read (someone is editing the tree):
# the copy is still complete, so say so and go on; 2 is a real failure.
[ "$rc" -le 1 ] || die "could not copy $SRC (tar status $rc)"
[ "$rc" = 0 ] || echo "install.sh: warning: files changed while copying $SRC" >&2
tar -C "$BUILD" -xf "$BUILD.tar"
"${PIP[@]}" "$BUILD"
rm -rf "$OPT/docs" && cp -r "$SRC/docs" "$OPT/docs"   # the unit's Documentation=
# The technician's wrapper: coopagent commands as the service user, with its credentials.
install -d -m 0755 "$R/usr/local/sbin"
install -m 0755 -o root -g root "$SRC/systemd/coopagent-svc" "$R/usr/local/sbin/coopagent-svc"
COOPAGENT=$VENV/bin/coopagent
[ -x "$COOPAGENT" ] || die "$COOPAGENT was not installed"

# --- config and secrets ------------------------------------------------------------------
if [ ! -f "$CONFIG" ]; then
  say "writing $CONFIG from $(basename "$TEMPLATE") (edit device, broker, central_key)"
  install -m 0640 -o root -g "$GID_N" "$TEMPLATE" "$CONFIG"
else
  say "keeping existing $CONFIG"
fi
if [ ! -s "$ETC/api.token" ]; then
  say "generating the API token $ETC/api.token (0600)"
  ( umask 077; "$VENV/bin/python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$ETC/api.token.tmp" )
  chown "$UID_N:$GID_N" "$ETC/api.token.tmp"
  mv -f "$ETC/api.token.tmp" "$ETC/api.token"
fi

# --- the device key ----------------------------------------------------------------------
# Made by the service user itself, so it is its file, mode 0600, from the first byte.
# A --root install lives under the caller's private temp folders, which the service uid
# cannot enter; there the key is made by root and handed over with chown.
KEYS=("$COOPAGENT" keys)
if [ "$R" = "" ]; then
  AS_USER=(setpriv --reuid="$UID_N" --regid="$GID_N" --init-groups --reset-env --)
  KEYS=("${AS_USER[@]}" "$COOPAGENT" keys)
fi
if "${KEYS[@]}" show --config "$CONFIG" >/dev/null 2>&1; then
  say "keeping the existing device key"
else
  say "creating the device key"
  ( umask 077; "${KEYS[@]}" init --config "$CONFIG" )
  if [ "$R" != "" ]; then
    KEY=$("$VENV/bin/python" -c 'import sys; from agent.config import load_config; from pathlib import Path
print(load_config(Path(sys.argv[1])).agent.key_path)' "$CONFIG")
    chown "$UID_N:$GID_N" "$KEY"
  fi
fi

# --- kernel modules and the unit ---------------------------------------------------------
# DeviceAllow=char-ttyUSB/char-ttyACM are resolved at service start from /proc/devices;
# loading the serial drivers at boot makes sure they are listed even before a scale is
# plugged in.
install -d -m 0755 "$R/etc/modules-load.d"
printf '# coopagent: serial scanners and scales (DeviceAllow in coopagent.service)\nusbserial\ncdc_acm\n' \
  > "$R/etc/modules-load.d/coopagent.conf"
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
echo "Device public key (send it to the centre for registration):"
"${KEYS[@]}" show --pem --config "$CONFIG"
[ -f "$ETC/central.pub.pem" ] || echo "NOTE: $ETC/central.pub.pem is missing: copy the centre's public key there."
echo "Next: edit $CONFIG, then: $COOPAGENT config check --config $CONFIG"
[ "$SYSTEMCTL" = 1 ] && [ "$START" = 0 ] && echo "Then: systemctl start coopagent && journalctl -u coopagent -f"
exit 0

#!/usr/bin/env bash
# Remove coopagent from a branch PC. Run as root:
#   sudo systemd/uninstall.sh            # the program and the unit; data, config, key stay
#   sudo systemd/uninstall.sh --purge    # also the data, the config, the key and the user
# --purge refuses while the buffer holds anything the centre has not acknowledged
# (records, batches or media), because those exist nowhere else; --force overrides that,
# for a PC whose records are knowingly written off.
#
# Options (for tests): --root DIR (implies --no-systemctl), --no-systemctl.
set -euo pipefail

ROOT=/ SYSTEMCTL=1 PURGE=0 FORCE=0
USER_NAME=coopagent
die() { echo "uninstall.sh: error: $*" >&2; exit 1; }
say() { echo "==> $*"; }

while [ $# -gt 0 ]; do
  case "$1" in
    --root) ROOT=$(realpath -m "$2"); shift 2 ;;
    --no-systemctl) SYSTEMCTL=0; shift ;;
    --purge) PURGE=1; shift ;;
    --force) FORCE=1; shift ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
[ "$(id -u)" = 0 ] || die "run as root (sudo $0)"
R=${ROOT%/}
[ "$R" = "" ] || SYSTEMCTL=0
OPT=$R/opt/coopagent ETC=$R/etc/coopagent STATE=$R/var/lib/coopagent
COOPAGENT=$OPT/venv/bin/coopagent

if [ "$SYSTEMCTL" = 1 ]; then
  systemctl disable --now coopagent.service 2>/dev/null || true
fi

# The backlog check needs the program, so it comes before the program is removed. With
# the agent stopped, `status` reads the buffer file itself (read-only).
if [ "$PURGE" = 1 ] && [ "$FORCE" = 0 ] && [ -d "$STATE" ]; then
  if [ ! -x "$COOPAGENT" ] || [ ! -f "$ETC/agent.toml" ]; then
    die "cannot check the buffer for unacknowledged data without $COOPAGENT and $ETC/agent.toml;" \
        "reinstall and drain it, or add --force to destroy it"
  fi
  DOC=$("$COOPAGENT" status --json --config "$ETC/agent.toml")
  LEFT=$(printf '%s' "$DOC" | "$OPT/venv/bin/python" -c '
import json, sys
b = json.load(sys.stdin).get("backlog") or {}
print(sum(int(b.get(k) or 0) for k in ("records", "batches", "media_bytes")))')
  if [ "$LEFT" != 0 ]; then
    echo "$DOC" >&2
    die "the buffer still holds data the centre has not acknowledged (backlog above); start the agent" \
        "and let it drain (coopagent-svc status), or add --force to destroy it"
  fi
fi

say "removing the unit, the program and the helper"
rm -f "$R/etc/systemd/system/coopagent.service" "$R/etc/modules-load.d/coopagent.conf" \
      "$R/usr/local/sbin/coopagent-svc"
rm -rf "$R/etc/systemd/system/coopagent.service.d" "$OPT"
[ "$SYSTEMCTL" = 0 ] || systemctl daemon-reload

if [ "$PURGE" = 1 ]; then
  say "purging $STATE (device key, buffer, media) and $ETC"
  rm -rf "$STATE" "$ETC"
  if grep -q "^$USER_NAME:" "$R/etc/passwd"; then
    ROOTOPT=(); [ "$R" = "" ] || ROOTOPT=(--root "$ROOT")
    userdel "${ROOTOPT[@]}" "$USER_NAME"
  fi
  echo "Tell the centre to deregister this device: its key is gone."
else
  echo "Kept: $ETC (config, token, secrets) and $STATE (device key, buffer). --purge removes them."
fi

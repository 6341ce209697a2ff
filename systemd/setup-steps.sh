# shellcheck shell=bash
# The install steps that systemd/install.sh and the Debian package's maintainer scripts
# share, so that a branch PC ends up the same whichever way it was installed. Sourced, not
# run: each step is a function of the install root R ("" for a real install, so "$R/etc" is
# /etc), and none of them asks apt or systemctl for anything (the callers do that).
#
#   cs_user R                  the system user coopagent (groups dialout, video); sets CS_UID, CS_GID
#   cs_dirs R                  /opt/coopagent, /etc/coopagent(/credentials), /var/lib/coopagent
#   cs_config R TEMPLATE       /etc/coopagent/agent.toml from TEMPLATE if missing; its owner and mode
#   cs_token R PYTHON          a random API token (0600, the service user's) if missing
#   cs_key R COOPAGENT CONFIG  the device key, made by the service user (0600) if missing
#   cs_show_key R COOPAGENT CONFIG   the public key PEM, for registration at the centre
#   cs_copy_source SRC DEST    what git tracks in SRC (or a plain copy's files), for pip to build

CS_USER=coopagent

cs_say() { echo "==> $*"; }
cs_die() { echo "coopagent setup: error: $*" >&2; exit 1; }

cs_user() {
  local R=$1 rootopt=()
  [ "$R" = "" ] || rootopt=(--root "$R")
  # A real, persistent system user (not DynamicUser): it owns the device key across
  # reinstalls. useradd/usermod --root work on R/etc/{passwd,group,shadow,gshadow}; ids are
  # then read from those files, because this machine's user database does not know the user.
  if ! grep -q "^$CS_USER:" "$R/etc/passwd"; then
    cs_say "creating system user $CS_USER (groups dialout, video)"
    useradd "${rootopt[@]}" --system --user-group --groups dialout,video \
      --home-dir /var/lib/coopagent --no-create-home --shell /usr/sbin/nologin \
      --comment "coop branch edge agent" "$CS_USER" 2> >(grep -v "missing or non-executable shell" >&2)
  else
    usermod "${rootopt[@]}" --append --groups dialout,video "$CS_USER"
  fi
  CS_UID=$(awk -F: -v u="$CS_USER" '$1 == u {print $3}' "$R/etc/passwd")
  CS_GID=$(awk -F: -v u="$CS_USER" '$1 == u {print $4}' "$R/etc/passwd")
  if [ -z "$CS_UID" ] || [ -z "$CS_GID" ]; then cs_die "user $CS_USER not found in $R/etc/passwd"; fi
}

cs_dirs() {
  local R=$1
  install -d -m 0755 -o root -g root "$R/opt/coopagent"
  install -d -m 0750 -o root -g "$CS_GID" "$R/etc/coopagent"           # config readable by the service group
  install -d -m 0700 -o root -g root "$R/etc/coopagent/credentials"   # LoadCredential=secret: source
  install -d -m 0700 -o "$CS_UID" -g "$CS_GID" "$R/var/lib/coopagent" # StateDirectory=, the key lives here
}

cs_config() {
  local R=$1 template=$2 config="$1/etc/coopagent/agent.toml"
  if [ ! -f "$config" ]; then
    cs_say "writing $config from $(basename "$template") (edit device, broker, central_key)"
    install -m 0640 -o root -g "$CS_GID" "$template" "$config"
  else
    cs_say "keeping existing $config"
    # The Debian package ships the file as a conffile (root:root 0644 when dpkg writes it):
    # the agent's group reads it, nobody else does.
    chown root:"$CS_GID" "$config"
    chmod 0640 "$config"
  fi
}

cs_token() {
  local R=$1 python=$2 etc="$1/etc/coopagent"
  if [ ! -s "$etc/api.token" ]; then
    cs_say "generating the API token $etc/api.token (0600)"
    ( umask 077; "$python" -c 'import secrets; print(secrets.token_urlsafe(32))' > "$etc/api.token.tmp" )
    chown "$CS_UID:$CS_GID" "$etc/api.token.tmp"
    mv -f "$etc/api.token.tmp" "$etc/api.token"
  fi
}

# The command that runs `coopagent keys` as the service user, so the key is its file, mode
# 0600, from the first byte. An install into a temporary root (tests) lives under the
# caller's private temp folders, which the service uid cannot enter: there root makes it.
_cs_keys() {
  local R=$1 coopagent=$2
  if [ "$R" = "" ]; then
    echo setpriv --reuid="$CS_UID" --regid="$CS_GID" --init-groups --reset-env -- "$coopagent" keys
  else
    echo "$coopagent" keys
  fi
}

cs_key() {
  local R=$1 coopagent=$2 config=$3 keys
  read -r -a keys <<<"$(_cs_keys "$R" "$coopagent")"
  if "${keys[@]}" show --config "$config" >/dev/null 2>&1; then
    cs_say "keeping the existing device key"
    return
  fi
  cs_say "creating the device key"
  ( umask 077; "${keys[@]}" init --config "$config" )
  if [ "$R" != "" ]; then
    local key
    key=$("$(dirname "$coopagent")/python" -c 'import sys; from agent.config import load_config; from pathlib import Path
print(load_config(Path(sys.argv[1])).agent.key_path)' "$config")
    chown "$CS_UID:$CS_GID" "$key"
  fi
}

cs_show_key() {
  local R=$1 coopagent=$2 config=$3 keys
  read -r -a keys <<<"$(_cs_keys "$R" "$coopagent")"
  echo "Device public key (send it to the centre for registration):"
  "${keys[@]}" show --pem --config "$config"
}

cs_copy_source() {
  local src=$1 dest=$2 rc=0
  # pip writes build/ and *.egg-info into the tree it builds: build from a copy. From a git
  # checkout the copy is what git sees (tracked and new files, nothing ignored: no venvs,
  # caches or build output); from a plain copy (a USB stick) the same by name.
  mkdir -p "$dest"
  if command -v git >/dev/null && git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$src" ls-files -z --cached --others --exclude-standard |
      tar -C "$src" --null --ignore-failed-read -T - -cf "$dest.tar" || rc=$?
  else
    tar -C "$src" --exclude-vcs --exclude='.venv*' --exclude='.*_cache' --exclude='*.egg-info' \
      --exclude=build --exclude=dist --exclude=__pycache__ --exclude=.hypothesis -cf "$dest.tar" . || rc=$?
  fi
  # tar's status 1 means a file changed while it was read (someone is editing the tree):
  # the copy is still complete, so say so and go on; 2 is a real failure.
  [ "$rc" -le 1 ] || cs_die "could not copy $src (tar status $rc)"
  [ "$rc" = 0 ] || echo "coopagent setup: warning: files changed while copying $src" >&2
  tar -C "$dest" -xf "$dest.tar"
  rm -f "$dest.tar"
}

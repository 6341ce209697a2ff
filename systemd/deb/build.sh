#!/usr/bin/env bash
# Builds coopagent_VERSION_ARCH.deb: the agent with its own Python environment, for Debian 12
# branch PCs that are installed and upgraded with apt and often cannot reach PyPI.
#   bash systemd/deb/build.sh [--out DIR] [--src DIR] [--python /usr/bin/python3] [--wheelhouse DIR]
# (`make deb` runs it with --out dist.)
#
# What is in the package (docs/decisions.md, "The Debian package"):
#   /opt/coopagent/venv        a venv of Debian's python3.11 with coopagent and every Python
#                              dependency, built here (PyPI or --wheelhouse), byte-compiled
#   /opt/coopagent/docs        the docs (the unit's Documentation=)
#   /lib/systemd/system/coopagent.service        the hardened unit
#   /usr/lib/modules-load.d/coopagent.conf       serial drivers at boot (DeviceAllow=)
#   /usr/lib/coopagent/setup-steps.sh            the steps shared with systemd/install.sh
#   /usr/bin/coopagent, /usr/bin/coop-receiver   links into the venv; /usr/sbin/coopagent-svc
#   /etc/coopagent/agent.toml  the example config, a conffile (dpkg keeps local edits)
# The maintainer scripts (systemd/deb/maintscripts) create the user, directories, API token
# and device key, stop the service for an upgrade and start it again, and refuse a downgrade
# that the buffer's schema cannot take.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
OUT="" PYTHON=/usr/bin/python3 WHEELHOUSE=""
die() { echo "build.sh: error: $*" >&2; exit 1; }
while [ $# -gt 0 ]; do
  case "$1" in
    --out) OUT=$2; shift 2 ;;
    --src) SRC=$(realpath "$2"); shift 2 ;;
    --python) PYTHON=$2; shift 2 ;;
    --wheelhouse) WHEELHOUSE=$(realpath "$2"); shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) die "unknown option $1 (see --help)" ;;
  esac
done
OUT=$(realpath -m "${OUT:-$SRC/dist}")
[ -f "$SRC/setup.py" ] || die "$SRC is not the coopagent source tree"
HERE=$SRC/systemd/deb
# shellcheck source=systemd/setup-steps.sh
. "$SRC/systemd/setup-steps.sh"

VERSION=$(sed -n 's/^__version__ = "\(.*\)"$/\1/p' "$SRC/agent/__init__.py")
[ -n "$VERSION" ] || die "no __version__ in $SRC/agent/__init__.py"
# The buffer schema this version writes: a downgrade to a version that knows less is refused.
SCHEMA=$(cd "$SRC" && "$PYTHON" -c 'from buffer.schema import MIGRATIONS; print(len(MIGRATIONS))')
ARCH=$(dpkg --print-architecture)
PYV=$("$PYTHON" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
[ "$PYV" = 3.11 ] || die "$PYTHON is Python $PYV; Debian 12's python3.11 builds the package"

WORK=$(mktemp -d /tmp/coopdeb.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
STAGE=$WORK/root V=/opt/coopagent/venv
echo "==> coopagent $VERSION (buffer schema $SCHEMA) for $ARCH, Python $PYV"

# --- the Python environment ----------------------------------------------------------------
"$PYTHON" -m venv "$STAGE$V"
cs_copy_source "$SRC" "$WORK/src"
PIP=("$STAGE$V/bin/python" -m pip install --disable-pip-version-check --no-input --quiet --no-compile)
[ -z "$WHEELHOUSE" ] || PIP+=(--no-index --find-links "$WHEELHOUSE")
echo "==> installing coopagent and its dependencies into the package's venv"
"${PIP[@]}" "$WORK/src"
"$STAGE$V/bin/python" -m pip uninstall --quiet --yes pip   # nothing installs into it at the branch
rm -f "$STAGE$V"/lib/python*/site-packages/coopagent-*.dist-info/direct_url.json
# The venv was made at the staging path: scripts' #! lines and activate name it. Point them at
# the installed path (what dh-virtualenv does), then make sure no file still names the stage.
grep -rlI --null "$STAGE$V" "$STAGE$V/bin" "$STAGE$V/pyvenv.cfg" | xargs -0 -r sed -i "s|$STAGE$V|$V|g"
left=$(grep -rlI "$WORK" "$STAGE" || true)
[ -z "$left" ] || die "files still name the build folder: $left"
# Byte-compile as installed (the unit sets PYTHONDONTWRITEBYTECODE and /opt is read-only);
# dpkg keeps the files' mtimes, so the timestamp-checked .pyc stay valid.
"$STAGE$V/bin/python" -m compileall -q -j0 -s "$STAGE" -p / "$STAGE$V/lib" >/dev/null \
  || echo "build.sh: warning: some bundled files did not byte-compile (they run from source)" >&2

# --- files ---------------------------------------------------------------------------------
install -d "$STAGE/opt/coopagent" "$STAGE/usr/bin" "$STAGE/usr/sbin" "$STAGE/lib/systemd/system" \
  "$STAGE/usr/lib/modules-load.d" "$STAGE/usr/lib/coopagent" "$STAGE/etc/coopagent" \
  "$STAGE/usr/share/doc/coopagent" "$STAGE/DEBIAN"
cp -r "$SRC/docs" "$STAGE/opt/coopagent/docs"
install -m 0644 "$SRC/systemd/coopagent.service" "$STAGE/lib/systemd/system/coopagent.service"
install -m 0644 "$SRC/systemd/modules-load.conf" "$STAGE/usr/lib/modules-load.d/coopagent.conf"
install -m 0644 "$SRC/systemd/setup-steps.sh" "$STAGE/usr/lib/coopagent/setup-steps.sh"
install -m 0755 "$SRC/systemd/coopagent-svc" "$STAGE/usr/sbin/coopagent-svc"
install -m 0644 "$SRC/config/agent.example.toml" "$STAGE/etc/coopagent/agent.toml"
install -m 0644 "$SRC/README.md" "$STAGE/usr/share/doc/coopagent/README.md"
ln -s "$V/bin/coopagent" "$STAGE/usr/bin/coopagent"
ln -s "$V/bin/coop-receiver" "$STAGE/usr/bin/coop-receiver"
echo /etc/coopagent/agent.toml > "$STAGE/DEBIAN/conffiles"
for s in preinst postinst prerm postrm; do
  sed -e "s/@VERSION@/$VERSION/g" -e "s/@SCHEMA@/$SCHEMA/g" "$HERE/maintscripts/$s" > "$STAGE/DEBIAN/$s"
  chmod 0755 "$STAGE/DEBIAN/$s"
done
SIZE=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" -e "s/@SIZE@/$SIZE/" "$HERE/control" > "$STAGE/DEBIAN/control"
( cd "$STAGE" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' \
    | sort -z | xargs -0 md5sum > DEBIAN/md5sums )

mkdir -p "$OUT"
DEB=$OUT/coopagent_${VERSION}_${ARCH}.deb
# gzip, not xz: a third of the build time for a package that is 10% larger.
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$DEB" >/dev/null
echo "==> $DEB ($(du -h "$DEB" | cut -f1))"

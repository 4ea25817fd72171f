#!/usr/bin/env bash
# Build narwhal_<version>_amd64.deb with dpkg-deb (see docs/install.md).
#
#   packaging/build-deb.sh [OUT_DIR]        (make deb)
#
# The project and its Python dependencies go into a venv at /opt/narwhal made by Debian's
# /usr/bin/python3.11 (so the package needs only Debian's python3.11 at run time), with the containerd
# stubs generated into it.  Dependencies come from PyPI as wheels, cached in $WHEELS (default
# OUT_DIR/wheels): a rebuild with a full cache needs no network.  The venv is built in a staging dir
# and moved into place by fixing its scripts' #! lines and compiling the .pyc files for /opt/narwhal.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
OUT=$(realpath -m "${1:-build}")
WHEELS=$(realpath -m "${WHEELS:-$OUT/wheels}")
PY=/usr/bin/python3.11            # Debian bookworm's python3: what the installed package runs on
DEV_PY=$REPO/.venv/bin/python     # pip and grpcio-tools for the build (make setup)
PREFIX=/opt/narwhal
VERSION=${VERSION:-$($DEV_PY -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')}
ARCH=amd64
NAME=narwhal_${VERSION}_${ARCH}

step() { echo "build-deb: [${SECONDS}s] $*" >&2; }

for tool in "$PY" "$DEV_PY" dpkg-deb; do
  command -v "$tool" >/dev/null || { echo "build-deb: $tool not found (make setup)" >&2; exit 1; }
done

WORK=$OUT/deb-work
STAGE=$WORK/$NAME
SRC=$WORK/src
rm -rf "$WORK"
mkdir -p "$STAGE/DEBIAN" "$SRC" "$WORK/dist" "$WHEELS"

step "sources and containerd stubs"
# 1. The tracked sources (no .venv, no build output) plus the generated containerd stubs.
git ls-files -z --cached --others --exclude-standard -- pyproject.toml README.md narwhal pkg cri dockerapi \
  | tar --null -T - -cf - | tar -xf - -C "$SRC"
"$DEV_PY" hack/gen_containerd_api.py --out "$SRC" >/dev/null

step "wheels and the venv"
# 2. Wheels: the project's own, and its dependencies (from the cache, else from PyPI into the cache).
"$DEV_PY" -m pip wheel -q --no-deps --no-build-isolation -w "$WORK/dist" "$SRC"
project_wheel=$(ls "$WORK/dist"/narwhal-*.whl)
"$PY" -m venv --without-pip "$STAGE$PREFIX"
pip_into_stage=("$DEV_PY" -m pip --python "$STAGE$PREFIX/bin/python" install -q --no-compile --no-warn-script-location)
if ! "${pip_into_stage[@]}" --no-index --find-links "$WHEELS" "$project_wheel" 2>/dev/null; then
  echo "build-deb: fetching dependency wheels from PyPI into $WHEELS"
  "$DEV_PY" -m pip --python "$STAGE$PREFIX/bin/python" download -q --only-binary=:all: -d "$WHEELS" \
    "$project_wheel"
  rm -f "$WHEELS"/narwhal-*.whl
  "${pip_into_stage[@]}" --no-index --find-links "$WHEELS" "$project_wheel"
fi

step "relocating the venv to $PREFIX, compiling"
# 3. Relocate the venv: scripts run /opt/narwhal/bin/python; no activate scripts or build paths.
venv=$STAGE$PREFIX
rm -f "$venv"/bin/activate* "$venv"/bin/Activate.ps1
for script in "$venv"/bin/*; do
  [ -f "$script" ] && [ ! -L "$script" ] && sed -i "1s|^#!$venv/|#!$PREFIX/|" "$script"
done
find "$venv" -name direct_url.json -path '*.dist-info/*' -delete
sed -i "s|$venv|$PREFIX|g" "$venv/pyvenv.cfg"
if grep -rIl --exclude-dir=__pycache__ "$STAGE" "$venv" >/dev/null; then
  echo "build-deb: staging paths left in:" >&2; grep -rIl "$STAGE" "$venv" >&2; exit 1
fi
"$PY" -m compileall -q -j0 -s "$STAGE" -p / "$venv/lib" >/dev/null

# 4. The rest of the tree: command, unit, conffile, docs.
install -d "$STAGE/usr/bin" "$STAGE/lib/systemd/system" "$STAGE/etc/narwhal" "$STAGE/usr/share/doc/narwhal"
ln -s "$PREFIX/bin/narwhald" "$STAGE/usr/bin/narwhald"
install -m 644 packaging/systemd/narwhald.service "$STAGE/lib/systemd/system/"
install -m 644 packaging/narwhald.yaml "$STAGE/etc/narwhal/narwhald.yaml"
install -m 644 docs/install.md README.md "$STAGE/usr/share/doc/narwhal/"

step "dpkg-deb"
# 5. Control files and the archive.
install -m 644 packaging/debian/conffiles "$STAGE/DEBIAN/"
install -m 755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$STAGE/DEBIAN/"
size=$(du -sk --exclude=DEBIAN "$STAGE" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$size/" packaging/debian/control.in > "$STAGE/DEBIAN/control"
(cd "$STAGE" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) \
  > "$STAGE/DEBIAN/md5sums"
dpkg-deb --root-owner-group -Zgzip --build "$STAGE" "$OUT/$NAME.deb" >/dev/null
rm -rf "$WORK"
step "built"
echo "$OUT/$NAME.deb"

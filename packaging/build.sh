#!/usr/bin/env bash
# Build the Linux desktop bundle: PyInstaller one-folder build (packaging/memory_r1.spec), then
# a tarball with a launcher, .desktop file, icon and AppStream metadata, and a size report.
#
#   bash packaging/build.sh            (run from anywhere; `make package` runs it, then the smoke check)
#
# Env: PY (default .venv/bin/python, with the `package` extra installed), SKIP_PYINSTALLER=1 to
# re-pack an existing dist/memory-r1 without rebuilding it.
# Output: dist/memory-r1/ (the one-folder build) and dist/memory-r1-<version>-linux-<arch>.tar.gz.
# Why a tarball and not an AppImage: see packaging/README.md (no AppImage runtime offline here).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
PY=${PY:-$ROOT/.venv/bin/python}
VERSION=$("$PY" -c 'import tomllib; print(tomllib.load(open("pyproject.toml", "rb"))["project"]["version"])')
ARCH=$(uname -m)
NAME=memory-r1-$VERSION-linux-$ARCH
STAGE=$ROOT/build/stage/$NAME
TARBALL=$ROOT/dist/$NAME.tar.gz

if [ "${SKIP_PYINSTALLER:-0}" != 1 ] || [ ! -x dist/memory-r1/memory-r1 ]; then
  echo "== PyInstaller (log: build/pyinstaller.log)"
  mkdir -p build
  start=$(date +%s)
  if ! "$PY" -m PyInstaller --noconfirm --clean --log-level WARN --distpath dist \
      --workpath build/pyinstaller packaging/memory_r1.spec >build/pyinstaller.log 2>&1; then
    tail -40 build/pyinstaller.log >&2
    echo "PyInstaller failed; the full log is build/pyinstaller.log" >&2
    exit 1
  fi
  echo "   built dist/memory-r1 in $(( $(date +%s) - start )) s"
fi

echo "== staging $NAME"
rm -rf "$STAGE"
mkdir -p "$STAGE/share/applications" "$STAGE/share/icons/hicolor/scalable/apps" "$STAGE/share/metainfo"
cp -a dist/memory-r1 "$STAGE/bundle"
install -m 755 packaging/memory-r1.sh "$STAGE/memory-r1"
install -m 755 packaging/install.sh "$STAGE/install.sh"
install -m 644 packaging/memory-r1.desktop "$STAGE/share/applications/memory-r1.desktop"
install -m 644 assets/icons/memory-r1.svg "$STAGE/share/icons/hicolor/scalable/apps/memory-r1.svg"
install -m 644 packaging/io.github.memory_r1.MemoryR1.metainfo.xml "$STAGE/share/metainfo/"

echo "== tarball"
rm -f "$TARBALL"
tar -C "$(dirname "$STAGE")" -cf - "$NAME" | gzip -6 >"$TARBALL"

echo "== size"
set +o pipefail  # `sort | head` ends early by design (SIGPIPE is not a failure here)
echo "   tarball:        $(du -h "$TARBALL" | cut -f1)  $TARBALL"
echo "   unpacked:       $(du -sh "$STAGE" | cut -f1)"
echo "   largest parts of bundle/_internal (du -sh, top 15):"
du -sh "$STAGE"/bundle/_internal/* | sort -rh | head -15 | sed "s|$STAGE/bundle/_internal/|      |"
echo "   largest files (top 8):"
find "$STAGE/bundle" -type f -printf '%s %P\n' | sort -rn | head -8 \
  | awk '{printf "      %7.1f MB  %s\n", $1 / 1048576, $2}'
echo "BUNDLE $TARBALL"

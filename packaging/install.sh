#!/bin/sh
# Add (or with --uninstall remove) Memory-R1 to the desktop menu of the current user.
# Run it from the unpacked tarball; the app stays where it was unpacked. Nothing needs root.
#   ./install.sh              menu entry, icon, AppStream metadata, ~/.local/bin/memory-r1
#   ./install.sh --uninstall  removes those again (your memories and chats are kept)
set -eu
here=$(cd "$(dirname "$0")" && pwd)
data=${XDG_DATA_HOME:-$HOME/.local/share}
bin=$HOME/.local/bin
desktop=$data/applications/memory-r1.desktop
icon=$data/icons/hicolor/scalable/apps/memory-r1.svg
meta=$data/metainfo/io.github.memory_r1.MemoryR1.metainfo.xml
if [ "${1:-}" = "--uninstall" ]; then
  rm -f "$desktop" "$icon" "$meta" "$bin/memory-r1"
  echo "Memory-R1 removed from the menu (the unpacked folder and your data were left alone)."
  exit 0
fi
mkdir -p "$(dirname "$desktop")" "$(dirname "$icon")" "$(dirname "$meta")" "$bin"
# the menu entry names the launcher by absolute path, so ~/.local/bin need not be on PATH
sed -e "s|^Exec=memory-r1|Exec=\"$here/memory-r1\"|" -e "s|^TryExec=memory-r1|TryExec=$here/memory-r1|" \
  "$here/share/applications/memory-r1.desktop" > "$desktop"
cp "$here/share/icons/hicolor/scalable/apps/memory-r1.svg" "$icon"
cp "$here/share/metainfo/io.github.memory_r1.MemoryR1.metainfo.xml" "$meta"
printf '#!/bin/sh\nexec "%s/memory-r1" "$@"\n' "$here" > "$bin/memory-r1"
chmod +x "$bin/memory-r1"
command -v update-desktop-database >/dev/null 2>&1 && update-desktop-database "$data/applications" || true
echo "Memory-R1 is in your applications menu; 'memory-r1' in a terminal starts it too."

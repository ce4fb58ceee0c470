"""Render assets/icons/memory-r1.svg into the icon files Windows and macOS builds need.

    python packaging/make_icons.py [OUT_DIR]     (default build/icons)

Writes memory-r1.ico (16-256 px, for the Windows .exe and installer), memory-r1.icns (16-1024
px, for the macOS .app) and png/memory-r1-<N>.png. The SVG is drawn with Qt's SVG renderer
(PySide6, already a dependency) and the containers are written by Pillow, so the same command
works on any OS; packaging/memory_r1.spec picks the files up from build/icons. Generated files
are build outputs, never committed (the SVG is the source).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SVG = ROOT / "assets" / "icons" / "memory-r1.svg"
ICO_SIZES = (16, 24, 32, 48, 64, 128, 256)
ICNS_SIZES = (16, 32, 64, 128, 256, 512, 1024)


def render_png(svg: Path, size: int, out: Path) -> Path:
    """Draw the SVG at size x size (transparent background) into a PNG file."""
    from PySide6.QtCore import Qt
    from PySide6.QtGui import QImage, QPainter
    from PySide6.QtSvg import QSvgRenderer

    renderer = QSvgRenderer(str(svg))
    if not renderer.isValid():
        raise SystemExit(f"{svg} is not a valid SVG")
    image = QImage(size, size, QImage.Format.Format_ARGB32)
    image.fill(Qt.GlobalColor.transparent)
    painter = QPainter(image)
    renderer.render(painter)
    painter.end()
    if not image.save(str(out)):
        raise SystemExit(f"could not write {out}")
    return out


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    out_dir = Path(args[0]) if args else ROOT / "build" / "icons"
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    from PIL import Image
    from PySide6.QtGui import QGuiApplication

    app = QGuiApplication.instance() or QGuiApplication(sys.argv[:1])  # noqa: F841 - Qt needs one
    png_dir = out_dir / "png"
    png_dir.mkdir(parents=True, exist_ok=True)
    pngs = {n: render_png(SVG, n, png_dir / f"memory-r1-{n}.png") for n in sorted(set(ICO_SIZES + ICNS_SIZES))}
    Image.open(pngs[256]).save(out_dir / "memory-r1.ico", sizes=[(n, n) for n in ICO_SIZES])
    Image.open(pngs[1024]).save(out_dir / "memory-r1.icns")
    for name in ("memory-r1.ico", "memory-r1.icns"):
        print(out_dir / name)
    return 0


if __name__ == "__main__":
    sys.exit(main())

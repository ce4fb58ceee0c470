"""The main window's size, splitter and panel visibility: the first size, and saving/restoring.

The first window (no saved layout) takes at most `SCREEN_FRACTION` of the available geometry
of the screen it opens on (never more than `PREFERRED`), centred on it, so the status bar is
on screen even on a 1280x800 display. The layout is saved, when the window closes, to
`window.json` next to `settings.json` in the data dir (not the user's global QSettings, so
tests and several data dirs stay independent): the Qt geometry (base64), the splitter sizes
and whether the chat list and the memory panel are shown. A missing, unreadable or
hand-broken file means the first-run layout; a saved geometry that no longer fits the screen
is clamped to it. GUI thread only; saving logs an OSError and never raises.
"""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from PySide6.QtCore import QByteArray, QRect, QSize
from PySide6.QtGui import QGuiApplication

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow

log = logging.getLogger(__name__)

LAYOUT_FILE = "window.json"
SCREEN_FRACTION = 0.9
PREFERRED = QSize(1280, 800)
PANELS = ("chats", "memory")


def layout_path(settings_file: Path) -> Path:
    return Path(settings_file).with_name(LAYOUT_FILE)


def first_size(available: QRect) -> QSize:
    """`PREFERRED`, shrunk to fit `SCREEN_FRACTION` of `available` in each direction.

    >>> first_size(QRect(0, 0, 1280, 800)).toTuple()
    (1152, 720)
    >>> first_size(QRect(0, 0, 2560, 1440)).toTuple()
    (1280, 800)
    """
    return QSize(min(PREFERRED.width(), int(available.width() * SCREEN_FRACTION)),
                 min(PREFERRED.height(), int(available.height() * SCREEN_FRACTION)))


def _available(window) -> QRect:
    screen = window.screen() or QGuiApplication.primaryScreen()
    return screen.availableGeometry()


def splitter_sizes(width: int) -> list[int]:
    """Chat list, chat, memory panel for a window `width` wide: the chat gets the most."""
    side = max(150, min(220, width // 6))
    memory = max(220, min(540, width * 2 // 5))  # the panel needs ~360 px to show unscrolled
    return [side, max(width - side - memory, 280), memory]


def place_first(window: MainWindow) -> None:
    """The first-run layout: sized to the screen, centred, both panels shown."""
    available = _available(window)
    size = first_size(available)
    window.resize(size)
    frame = QRect(0, 0, size.width(), size.height())
    frame.moveCenter(available.center())
    window.move(frame.topLeft())
    window.splitter.setSizes(splitter_sizes(size.width()))


def save_layout(window: MainWindow, path: Path) -> None:
    data = {"geometry": base64.b64encode(bytes(window.saveGeometry().data())).decode("ascii"),
            "splitter": [int(s) for s in window.splitter.sizes()],
            "panels": {name: window.panel_shown(name) for name in PANELS}}
    try:
        from core.fileio import atomic_write_json

        atomic_write_json(path, data, indent=2)
    except OSError as exc:
        log.warning("the window layout could not be saved to %s: %s", path, exc)


def read_layout(path: Path) -> dict | None:
    """The saved layout, or None when there is none or it is unreadable (logged)."""
    if not path.exists():
        return None
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            raise ValueError("not an object")
        return data
    except (OSError, ValueError) as exc:
        log.warning("window layout %s unreadable (%s); using the default layout", path, exc)
        return None


def restore_layout(window: MainWindow, path: Path) -> bool:
    """Apply the saved layout (True), or the first-run one (False) when none is usable."""
    data = read_layout(path)
    restored = False
    if data is not None:
        try:
            raw = base64.b64decode(str(data.get("geometry", "")), validate=True)
            restored = bool(raw) and window.restoreGeometry(QByteArray(raw))
        except ValueError:
            restored = False
    if not restored:
        place_first(window)
    else:
        _clamp_to_screen(window)
        sizes = data.get("splitter") if data else None
        if isinstance(sizes, list) and len(sizes) == 3 and all(isinstance(s, int) and s >= 0 for s in sizes):
            window.splitter.setSizes(sizes)
    panels = data.get("panels") if data else None
    for name in PANELS:
        shown = panels.get(name, True) if isinstance(panels, dict) else True
        window.set_panel_shown(name, shown is not False)
    return restored


def _clamp_to_screen(window) -> None:
    """A geometry saved on a bigger screen is shrunk and moved onto this one."""
    available = _available(window)
    if window.width() <= available.width() and window.height() <= available.height():
        return
    size = window.size().boundedTo(first_size(available))
    window.resize(size)
    frame = QRect(0, 0, size.width(), size.height())
    frame.moveCenter(available.center())
    window.move(frame.topLeft())

"""Theme (system / light / dark) and font size, applied to the whole application.

`apply_appearance(theme, font_size)`: "light" and "dark" set an explicit Fusion palette (the
bubbles paint from the current palette, so a switch shows at once), "system" puts back the
palette the application started with; `font_size` 0 puts back the starting font, else its
point size. GUI thread only.
"""

from __future__ import annotations

from PySide6.QtGui import QColor, QFont, QPalette
from PySide6.QtWidgets import QApplication

THEMES = ("system", "light", "dark")
_start: dict = {}  # the application's own palette and font, before any change


def dark_palette() -> QPalette:
    p = QPalette()
    role, group = QPalette.ColorRole, QPalette.ColorGroup
    for r, c in ((role.Window, "#2b2b2b"), (role.WindowText, "#e6e6e6"), (role.Base, "#1f1f1f"),
                 (role.AlternateBase, "#333842"), (role.ToolTipBase, "#3a3a3a"), (role.ToolTipText, "#e6e6e6"),
                 (role.Text, "#e6e6e6"), (role.Button, "#353535"), (role.ButtonText, "#e6e6e6"),
                 (role.BrightText, "#ff6b6b"), (role.Link, "#6ea8ff"), (role.Highlight, "#3d6fb6"),
                 (role.HighlightedText, "#ffffff"), (role.PlaceholderText, "#9a9a9a"), (role.Mid, "#4a4a4a"),
                 (role.Light, "#505050"), (role.Dark, "#202020"), (role.Shadow, "#101010")):
        p.setColor(r, QColor(c))
    for r in (role.Text, role.WindowText, role.ButtonText):
        p.setColor(group.Disabled, r, QColor("#7a7a7a"))
    return p


def apply_appearance(theme: str, font_size: int = 0) -> None:
    """Apply a theme of THEMES and a font size in points (0: the system's)."""
    app = QApplication.instance()
    if not isinstance(app, QApplication):
        return
    if not _start:
        _start["palette"], _start["font"] = QPalette(app.palette()), QFont(app.font())
    if theme == "dark":
        palette = dark_palette()
    elif theme == "light":
        palette = app.style().standardPalette()
    else:
        palette = _start["palette"]
    if palette != app.palette():
        app.setPalette(palette)
    font = QFont(_start["font"])
    if font_size:
        font.setPointSize(int(font_size))
    if font != app.font():
        app.setFont(font)

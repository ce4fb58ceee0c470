"""Theme and font size from Settings, applied to the running window (real widgets)."""

from __future__ import annotations

import copy

from PySide6.QtGui import QPalette
from PySide6.QtWidgets import QApplication

from core.config import Settings
from core.errors import InvalidInputError

from app.gui.appearance import apply_appearance
from app.gui.settings_dialog import SettingsDialog


def test_theme_and_font_size_apply_and_go_back(qtbot, make_window, answer_backend, manager_backend, tmp_path):
    app = QApplication.instance()
    start_font = app.font().pointSize()
    start_window = app.palette().color(QPalette.ColorRole.Window).lightness()
    window = make_window(answer_backend, manager_backend)
    try:
        new = copy.deepcopy(window.settings)
        new.theme, new.font_size = "dark", start_font + 4
        window.apply_settings(new)
        assert app.palette().color(QPalette.ColorRole.Window).lightness() < 80
        assert app.palette().color(QPalette.ColorRole.Text).lightness() > 180
        assert app.font().pointSize() == start_font + 4
        qtbot.waitUntil(lambda: window.chat.input.font().pointSize() == start_font + 4)
        assert Settings.load(window.settings_file).theme == "dark"
        light = copy.deepcopy(window.settings)
        light.theme, light.font_size = "light", 0
        window.apply_settings(light)
        assert app.palette().color(QPalette.ColorRole.Window).lightness() > 180
        assert app.font().pointSize() == start_font
    finally:
        apply_appearance("system", 0)
    assert app.palette().color(QPalette.ColorRole.Window).lightness() == start_window
    dialog = SettingsDialog(Settings(theme="dark", font_size=12), tmp_path)
    qtbot.addWidget(dialog)
    assert dialog.result_settings().theme == "dark" and dialog.result_settings().font_size == 12


def test_bad_theme_or_font_size_is_refused():
    for bad in (Settings(theme="neon"), Settings(font_size=3), Settings(font_size=True)):
        try:
            bad.validate()
        except InvalidInputError:
            continue
        raise AssertionError(f"accepted {bad}")

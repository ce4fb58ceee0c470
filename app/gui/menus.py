"""The main window's menus and keyboard shortcuts (File, Edit, View, Help).

`build_menus(window)` adds them to a `MainWindow` and keeps the actions other code enables or
triggers as `window.new_action`, `window.settings_action`, `window.stop_action` and
`window.panel_actions` ({"chats", "memory"}: the checkable View toggles, which call
`window.set_panel_shown(name, shown)`). Main
thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import QMessageBox

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow

SHORTCUTS = ("Ctrl+N  new chat\nCtrl+Shift+N  new temporary chat\nCtrl+F  search memories\n"
             "Ctrl+Shift+F  search chats\nCtrl+Shift+L  show/hide the chat list\n"
             "Ctrl+Shift+M  show/hide the memory panel\nEsc  stop the reply\nCtrl+,  settings\n"
             "Enter  send · Shift+Enter  new line")


def add_action(window: MainWindow, menu, text: str, slot: Callable, shortcut=None) -> QAction:
    """A menu action whose shortcut works anywhere in the window."""
    action = QAction(text, window)
    if shortcut is not None:
        action.setShortcut(QKeySequence(shortcut))
        action.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    action.triggered.connect(slot)
    menu.addAction(action)
    return action


def build_menus(window: MainWindow) -> None:
    menu = window.menuBar()
    file = menu.addMenu("&File")
    window.new_action = add_action(window, file, "New chat", window.new_chat, QKeySequence.StandardKey.New)
    add_action(window, file, "New temporary chat", lambda: window.new_chat(temporary=True), "Ctrl+Shift+N")
    file.addSeparator()
    add_action(window, file, "Export memories…", window.memory.ask_export)
    add_action(window, file, "Import memories…", window.memory.ask_import)
    file.addSeparator()
    add_action(window, file, "Models…", window.open_models)
    window.settings_action = add_action(window, file, "Settings…", window.open_settings, "Ctrl+,")
    file.addSeparator()
    add_action(window, file, "Quit", window.close, QKeySequence.StandardKey.Quit)
    edit = menu.addMenu("&Edit")
    add_action(window, edit, "Search memories", window.focus_memory_search, QKeySequence.StandardKey.Find)
    add_action(window, edit, "Search chats", window.conversations.search.setFocus, "Ctrl+Shift+F")
    add_action(window, edit, "Memory history…", lambda: window.memory.show_history(every_change=True))
    window.stop_action = add_action(window, edit, "Stop reply", window.stop_reply, "Esc")
    view = menu.addMenu("&View")
    window.panel_actions = {}
    for name, text, shortcut in (("chats", "Chat list", "Ctrl+Shift+L"), ("memory", "Memory panel", "Ctrl+Shift+M")):
        toggle = add_action(window, view, text, lambda checked, n=name: window.set_panel_shown(n, checked), shortcut)
        toggle.setCheckable(True)
        toggle.setChecked(True)
        window.panel_actions[name] = toggle
    help_menu = menu.addMenu("&Help")
    add_action(window, help_menu, "Keyboard shortcuts", lambda: show_shortcuts(window))
    add_action(window, help_menu, "Welcome", lambda: window.chat.show_welcome(True))


def show_shortcuts(parent) -> None:
    box = QMessageBox(QMessageBox.Icon.Information, "Keyboard shortcuts", SHORTCUTS, QMessageBox.StandardButton.Ok,
                      parent)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()

"""The main window's menus and keyboard shortcuts (File, Edit, View, Help).

`build_menus(window)` adds them to a `MainWindow` and keeps the actions other code enables or
triggers as `window.new_action`, `window.settings_action`, `window.stop_action`,
`window.undo_action` (Edit > Undo, Ctrl+Z: the bank's latest memory change, named by the memory
panel's `undo_tracker`; disabled when there is nothing to undo; in a text field Ctrl+Z is the
field's own undo, Qt gives an editable field the key first), `window.shortcuts_action` (F1)
and `window.panel_actions` ({"chats", "memory"}: the checkable View toggles, which call
`window.set_panel_shown(name, shown)`). Help > Keyboard shortcuts lists every action that has
a shortcut, read from the menus when it opens (`shortcut_rows`), plus the keys of the chat
box, which are no actions (`TYPING_KEYS`). Main thread only.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import Qt
from PySide6.QtGui import QAction, QKeySequence
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QDialogButtonBox, QHeaderView, QTableWidget,
                               QTableWidgetItem, QVBoxLayout)

if TYPE_CHECKING:
    from app.gui.main_window import MainWindow

HELP_TEXT = "help_text"  # an action's dynamic property: its name in the shortcut list, when its text varies
UNDO_HELP = "Undo the last memory change"
TYPING_KEYS = (("Chat box", "Send the message", "Enter"), ("Chat box", "New line", "Shift+Enter"),
               ("Text fields", "Undo typing", QKeySequence.StandardKey.Undo))  # keys read when listed


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
    tracker = window.memory.undo_tracker
    window.undo_action = add_action(window, edit, UNDO_HELP, lambda: tracker.undo(), QKeySequence.StandardKey.Undo)
    window.undo_action.setProperty(HELP_TEXT, UNDO_HELP)
    tracker.changed.connect(lambda: sync_undo(window.undo_action, tracker.next))
    sync_undo(window.undo_action, None)
    edit.addSeparator()
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
    window.shortcuts_action = add_action(window, help_menu, "Keyboard shortcuts", lambda: show_shortcuts(window),
                                         "F1")
    add_action(window, help_menu, "Welcome", lambda: window.chat.show_welcome(True))


def sync_undo(action: QAction, target) -> None:
    """Edit > Undo says what it reverts (`target`: a `NextUndo`, or None: nothing, disabled)."""
    action.setEnabled(target is not None)
    action.setText(target.text.replace("&", "&&") if target is not None else "Undo")  # no mnemonic
    action.setToolTip(target.detail or target.text if target is not None else "Nothing to undo")


def _plain(text: str) -> str:
    return text.replace("&&", "\0").replace("&", "").replace("\0", "&").rstrip("…").strip()


def shortcut_rows(window) -> list[tuple[str, str, str]]:
    """(menu, action, keys) for every menu action with a shortcut, in menu order, then
    TYPING_KEYS. Read from the actions themselves: a shortcut added or changed is listed."""
    rows: list[tuple[str, str, str]] = []

    def walk(menu, title: str) -> None:
        for action in menu.actions():
            if action.menu() is not None:
                walk(action.menu(), f"{title} > {_plain(action.text())}")
                continue
            keys = [k.toString(QKeySequence.SequenceFormat.NativeText) for k in action.shortcuts() if not k.isEmpty()]
            if keys and not action.isSeparator():
                rows.append((title, _plain(str(action.property(HELP_TEXT) or action.text())), ", ".join(keys)))

    for top in window.menuBar().actions():
        if top.menu() is not None:
            walk(top.menu(), _plain(top.text()))
    for where, what, keys in TYPING_KEYS:
        shown = QKeySequence(keys).toString(QKeySequence.SequenceFormat.NativeText) \
            if isinstance(keys, QKeySequence.StandardKey) else keys
        rows.append((where, what, shown))
    return rows


def show_shortcuts(window) -> QDialog:
    """The "Keyboard shortcuts" dialog (non-modal, deleted on close)."""
    dialog = QDialog(window)
    dialog.setObjectName("shortcutsDialog")
    dialog.setWindowTitle("Keyboard shortcuts")
    dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    rows = shortcut_rows(window)
    table = QTableWidget(len(rows), 3, dialog)
    table.setObjectName("shortcutsTable")
    table.setHorizontalHeaderLabels(["Menu", "Action", "Keys"])
    table.verticalHeader().hide()
    table.setEditTriggers(QAbstractItemView.EditTrigger.NoEditTriggers)
    table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
    for r, row in enumerate(rows):
        for c, value in enumerate(row):
            table.setItem(r, c, QTableWidgetItem(value))
    header = table.horizontalHeader()
    header.setSectionResizeMode(QHeaderView.ResizeMode.ResizeToContents)
    header.setSectionResizeMode(1, QHeaderView.ResizeMode.Stretch)
    buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Close)
    buttons.rejected.connect(dialog.reject)
    box = QVBoxLayout(dialog)
    box.addWidget(table)
    box.addWidget(buttons)
    dialog.resize(460, min(640, 80 + 26 * len(rows)))
    dialog.open()
    return dialog

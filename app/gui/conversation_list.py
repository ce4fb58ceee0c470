"""The conversation list: new, rename, search, delete (with confirmation and undo), and the
trash ("Deleted chats": restore, or "Delete forever" with a confirmation).

`ConversationPanel` never touches the chat store itself: it emits requests, the main window
runs them in the background and calls `set_conversations` with the result. GUI thread only.
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QHBoxLayout, QInputDialog, QLabel, QLineEdit, QListView, QMenu, QPushButton,
                               QVBoxLayout, QWidget)

from app.gui.dialogs import confirm
from app.gui.memory_model import local_time
from app.gui.rows_model import Index, RowsMixin

ConversationRole = Qt.ItemDataRole.UserRole + 2


class ConversationListModel(RowsMixin, QAbstractListModel):
    """Conversations (core.memory `Conversation` objects), most recently updated first."""

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self._rows: list = []

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        conv = self.value(index)
        if conv is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            return (conv.title or "Untitled") + (" (temporary)" if conv.temporary else "")
        if role == Qt.ItemDataRole.ToolTipRole:
            kind = "temporary chat (not remembered)\n" if conv.temporary else ""
            deleted = f"\ndeleted: {local_time(conv.deleted_at)}" if conv.deleted_at else ""
            return f"{kind}{conv.title}\nlast message: {local_time(conv.updated_at)}{deleted}"
        if role == ConversationRole:
            return conv
        return None

    def set_conversations(self, conversations: Sequence) -> None:
        self.reset_rows(conversations)

    def conversation_at(self, row: int):
        return self.value_at(row)


class ConversationPanel(QWidget):
    """Search field, list, "New chat" and "Deleted chats" buttons.

    Signals: `selected(id)`, `newRequested()`, `renameRequested(id, title)`,
    `deleteRequested(id)` (after the user confirmed), `searchChanged(text)` (debounced),
    `trashToggled(shown)` (the list should now show the trash, or the chats again),
    `restoreRequested(id)`, `purgeRequested(id)` (from the trash, after the user confirmed),
    `systemPromptRequested(id)` (edit the chat's own system prompt), `exportRequested(id, fmt)`
    ("markdown" | "json").
    In the trash, choosing a chat selects it for "Restore"/"Delete forever" without opening it.
    """

    selected = Signal(int)
    newRequested = Signal()
    renameRequested = Signal(int, str)
    deleteRequested = Signal(int)
    searchChanged = Signal(str)
    trashToggled = Signal(bool)
    restoreRequested = Signal(int)
    purgeRequested = Signal(int)
    systemPromptRequested = Signal(int)
    exportRequested = Signal(int, str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = ConversationListModel(self)
        self.search = QLineEdit(placeholderText="Search chats", clearButtonEnabled=True)
        self.search.setObjectName("chatSearch")
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new chat (Ctrl+N)")
        self.trash_button = QPushButton("Deleted chats", checkable=True)
        self.trash_button.setObjectName("trashButton")
        self.trash_button.setToolTip("Deleted chats stay here until purged (Settings: days in the trash)")
        self.trash_label = QLabel("Deleted chats are purged for good after the days set in Settings.",
                                  wordWrap=True)
        self.trash_label.hide()
        self.restore_button = QPushButton("Restore")
        self.purge_button = QPushButton("Delete forever…")
        self.purge_button.setObjectName("purgeButton")
        self.view = QListView()
        self.view.setModel(self.model)
        self.view.setUniformItemSizes(True)
        self.view.setHorizontalScrollBarPolicy(Qt.ScrollBarPolicy.ScrollBarAlwaysOff)
        self.view.setTextElideMode(Qt.TextElideMode.ElideRight)
        self.view.setContextMenuPolicy(Qt.ContextMenuPolicy.CustomContextMenu)
        self._current: int | None = None
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._layout()
        self._connect()

    def _layout(self) -> None:
        top = QHBoxLayout()
        top.addWidget(self.new_button)
        top.addWidget(self.trash_button)
        trash_row = QHBoxLayout()
        trash_row.addWidget(self.restore_button)
        trash_row.addWidget(self.purge_button)
        box = QVBoxLayout(self)
        box.setContentsMargins(4, 4, 4, 4)
        box.addLayout(top)
        box.addWidget(self.search)
        box.addWidget(self.trash_label)
        box.addWidget(self.view, 1)
        box.addLayout(trash_row)
        self._show_trash_controls(False)

    def _connect(self) -> None:
        self.new_button.clicked.connect(self.newRequested)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.search.textChanged.connect(lambda _t: self._debounce.start())
        self._debounce.timeout.connect(lambda: self.searchChanged.emit(self.search.text().strip()))
        self.trash_button.toggled.connect(self._trash_toggled)
        self.restore_button.clicked.connect(lambda: self._on_trash_item(self.restoreRequested.emit))
        self.purge_button.clicked.connect(lambda: self._on_trash_item(self.ask_purge))

    # --- the trash ----------------------------------------------------------------------------
    def in_trash(self) -> bool:
        return self.trash_button.isChecked()

    def _show_trash_controls(self, shown: bool) -> None:
        for widget in (self.trash_label, self.restore_button, self.purge_button):
            widget.setVisible(shown)
        self.new_button.setEnabled(not shown)

    def _trash_toggled(self, shown: bool) -> None:
        self._show_trash_controls(shown)
        self.trashToggled.emit(shown)

    def _on_trash_item(self, action) -> None:
        index = self.view.currentIndex()
        conv = self.model.conversation_at(index.row()) if index.isValid() else None
        if conv is not None and self.in_trash():
            action(conv.id)

    def ask_purge(self, conversation_id: int) -> None:
        """Confirm, then `purgeRequested(id)`: the chat and its messages go for good."""
        row = self.model.row_of(conversation_id)
        if row is None:
            return
        conv = self.model.conversation_at(row)
        confirm(self, "Delete chat forever",
                f"Delete the chat “{conv.title}” and all its messages for good? This cannot be undone. "
                "Memories taken from it are kept.",
                lambda: self.purgeRequested.emit(conversation_id), yes_text="Delete forever",
                name="confirmPurgeChat", destructive=True)

    # --- updates ----------------------------------------------------------------------------
    def set_conversations(self, conversations: Sequence, current: int | None) -> None:
        """Show `conversations`, keeping `current` selected without re-emitting `selected`."""
        self._current = current
        self.view.selectionModel().blockSignals(True)
        self.model.set_conversations(conversations)
        row = self.model.row_of(current) if current is not None else None
        if row is not None:
            self.view.setCurrentIndex(self.model.index(row))
        self.view.selectionModel().blockSignals(False)

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        conv = self.model.conversation_at(current.row()) if current.isValid() else None
        if conv is not None and conv.id != self._current and not self.in_trash():
            self._current = conv.id
            self.selected.emit(conv.id)

    # --- rename / delete --------------------------------------------------------------------
    def _context_menu(self, pos) -> None:
        index = self.view.indexAt(pos)
        conv = self.model.conversation_at(index.row()) if index.isValid() else None
        if conv is None:
            return
        self.context_menu(conv).popup(self.view.viewport().mapToGlobal(pos))

    def context_menu(self, conv) -> QMenu:
        """The menu of one chat (in the trash: restore / delete forever)."""
        menu = QMenu(self)
        if self.in_trash():
            first, second = QAction("Restore", menu), QAction("Delete forever…", menu)
            first.triggered.connect(lambda: self.restoreRequested.emit(conv.id))
            second.triggered.connect(lambda: self.ask_purge(conv.id))
            menu.addActions([first, second])
            return menu
        first, second = QAction("Rename…", menu), QAction("Delete…", menu)
        first.triggered.connect(lambda: self.ask_rename(conv.id))
        second.triggered.connect(lambda: self.ask_delete(conv.id))
        system = QAction("System prompt…", menu)
        system.triggered.connect(lambda: self.systemPromptRequested.emit(conv.id))
        md, js = QAction("Export as Markdown…", menu), QAction("Export as JSON…", menu)
        md.triggered.connect(lambda: self.exportRequested.emit(conv.id, "markdown"))
        js.triggered.connect(lambda: self.exportRequested.emit(conv.id, "json"))
        menu.addActions([first, system])
        menu.addSeparator()
        menu.addActions([md, js])
        menu.addSeparator()
        menu.addAction(second)
        return menu

    def ask_rename(self, conversation_id: int) -> None:
        row = self.model.row_of(conversation_id)
        if row is None:
            return
        conv = self.model.conversation_at(row)
        dialog = QInputDialog(self)
        dialog.setWindowTitle("Rename chat")
        dialog.setLabelText("Title:")
        dialog.setTextValue(conv.title)
        dialog.textValueSelected.connect(
            lambda title: title.strip() and self.renameRequested.emit(conversation_id, title.strip()))
        dialog.open()

    def ask_delete(self, conversation_id: int) -> None:
        row = self.model.row_of(conversation_id)
        if row is None:
            return
        conv = self.model.conversation_at(row)
        confirm(self, "Delete chat", f"Delete the chat “{conv.title}”? You can undo this right after.",
                lambda: self.deleteRequested.emit(conversation_id), yes_text="Delete",
                name="confirmDeleteChat", destructive=True)

"""The conversation list: new, rename, search, delete (with confirmation and undo).

`ConversationPanel` never touches the chat store itself: it emits requests, the main window
runs them in the background and calls `set_conversations` with the result. GUI thread only.
"""

from __future__ import annotations

from typing import Sequence

from PySide6.QtCore import QAbstractListModel, QModelIndex, Qt, QTimer, Signal
from PySide6.QtGui import QAction
from PySide6.QtWidgets import (QHBoxLayout, QInputDialog, QLineEdit, QListView, QMenu, QPushButton,
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
            return f"{kind}{conv.title}\nlast message: {local_time(conv.updated_at)}"
        if role == ConversationRole:
            return conv
        return None

    def set_conversations(self, conversations: Sequence) -> None:
        self.reset_rows(conversations)

    def conversation_at(self, row: int):
        return self.value_at(row)


class ConversationPanel(QWidget):
    """Search field, list and "New chat" button.

    Signals: `selected(id)`, `newRequested()`, `renameRequested(id, title)`,
    `deleteRequested(id)` (after the user confirmed), `searchChanged(text)` (debounced).
    """

    selected = Signal(int)
    newRequested = Signal()
    renameRequested = Signal(int, str)
    deleteRequested = Signal(int)
    searchChanged = Signal(str)

    def __init__(self, parent=None) -> None:
        super().__init__(parent)
        self.model = ConversationListModel(self)
        self.search = QLineEdit(placeholderText="Search chats", clearButtonEnabled=True)
        self.search.setObjectName("chatSearch")
        self.new_button = QPushButton("New chat")
        self.new_button.setToolTip("Start a new chat (Ctrl+N)")
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
        box = QVBoxLayout(self)
        box.setContentsMargins(4, 4, 4, 4)
        box.addLayout(top)
        box.addWidget(self.search)
        box.addWidget(self.view, 1)

    def _connect(self) -> None:
        self.new_button.clicked.connect(self.newRequested)
        self.view.selectionModel().currentChanged.connect(self._on_current)
        self.view.customContextMenuRequested.connect(self._context_menu)
        self.search.textChanged.connect(lambda _t: self._debounce.start())
        self._debounce.timeout.connect(lambda: self.searchChanged.emit(self.search.text().strip()))

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

    def current_id(self) -> int | None:
        return self._current

    def _on_current(self, current: QModelIndex, _previous: QModelIndex) -> None:
        conv = self.model.conversation_at(current.row()) if current.isValid() else None
        if conv is not None and conv.id != self._current:
            self._current = conv.id
            self.selected.emit(conv.id)

    # --- rename / delete --------------------------------------------------------------------
    def _context_menu(self, pos) -> None:
        index = self.view.indexAt(pos)
        conv = self.model.conversation_at(index.row()) if index.isValid() else None
        if conv is None:
            return
        menu = QMenu(self)
        rename = QAction("Rename…", menu)
        delete = QAction("Delete…", menu)
        rename.triggered.connect(lambda: self.ask_rename(conv.id))
        delete.triggered.connect(lambda: self.ask_delete(conv.id))
        menu.addActions([rename, delete])
        menu.popup(self.view.viewport().mapToGlobal(pos))

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

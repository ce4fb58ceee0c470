"""History dialogs: one memory's events, or every recent change to the memory bank.

A memory's history also lists what was *not saved* from the turns that touched it: the REJECT
events of those turns (facts the grounding gate refused, each with its reason), greyed, never
undoable. The bank-wide history ("Memory history…", or History… with nothing selected) shows
every recent event, REJECT rows included, with the memory each one is about.
`fetch_history(bank, memory)` is what the panel runs on its db lane to fill either dialog.

GUI thread only, except `fetch_history`, which runs on the "db" worker and only reads the bank.
"""

from __future__ import annotations

from PySide6.QtCore import Signal
from PySide6.QtWidgets import (QAbstractItemView, QDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                               QTableView, QVBoxLayout)

from core.errors import NotFoundError
from core.types import Memory, MemoryEvent

from app.gui.memory_model import EventTableModel, undoable

HISTORY_LIMIT = 500
REJECTED_PER_TURN = 100


def fetch_history(bank, memory: Memory | None) -> tuple[list[MemoryEvent], dict[int, int]]:
    """(events newest first, memory id -> newer memory for its SUPERSEDE rows). For one
    memory: its events plus the REJECT events of every turn among them; else the bank's
    latest HISTORY_LIMIT events. Runs on the db worker."""
    if memory is not None:
        events = {e.id: e for e in bank.history(memory_id=memory.id, limit=HISTORY_LIMIT)}
        for turn in dict.fromkeys(e.turn for e in list(events.values()) if e.turn):
            for ev in bank.rejected(turn, limit=REJECTED_PER_TURN):
                events.setdefault(ev.id, ev)
        ordered = sorted(events.values(), key=lambda e: e.id, reverse=True)
        by = bank.get(memory.id).superseded_by  # as it is now, not as the table showed it
        return ordered, ({memory.id: by} if by is not None else {})
    ordered = bank.history(limit=HISTORY_LIMIT)
    newer: dict[int, int] = {}
    for mid in dict.fromkeys(e.memory_id for e in ordered if e.event == "SUPERSEDE" and e.memory_id is not None):
        try:
            by = bank.get(mid).superseded_by
        except NotFoundError:  # forgotten since
            continue
        if by is not None:
            newer[mid] = by
    return ordered, newer


class HistoryDialog(QDialog):
    """Events newest first, with "Undo this change" (enabled only on an undoable row).
    `memory` None: every recent change. Emits `undoRequested(event id)`."""

    undoRequested = Signal(int)  # event id

    def __init__(self, memory: Memory | None, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("historyDialog")
        self.memory = memory
        self.setWindowTitle(f"History of memory #{memory.id}" if memory is not None else "Memory history")
        self.resize(880 if memory is None else 820, 360 if memory is None else 320)
        self.model = EventTableModel(parent=self, with_memory=memory is None)
        self.view = QTableView()
        self.view.setObjectName("historyTable")
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        header = self.view.horizontalHeader()
        for col, name in enumerate(self.model.COLUMNS):
            stretch = name in ("Before", "After")
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Stretch if stretch
                                        else QHeaderView.ResizeMode.ResizeToContents)
        self.undo_button = QPushButton("Undo this change")
        self.undo_button.setEnabled(False)
        self.undo_button.clicked.connect(self._undo)
        self.view.selectionModel().currentRowChanged.connect(lambda *_: self._update_undo())
        close = QPushButton("Close")
        close.clicked.connect(self.accept)
        row = QHBoxLayout()
        row.addWidget(self.undo_button)
        row.addStretch(1)
        row.addWidget(close)
        box = QVBoxLayout(self)
        if memory is not None:
            box.addWidget(QLabel(f"“{memory.text}”", wordWrap=True))
            note = "Greyed “not saved” rows are facts from the same turns that were refused; they were never memories."
        else:
            note = "Every recent change; greyed “not saved” rows are facts that were refused and never written."
        hint = QLabel(note, wordWrap=True)
        hint.setObjectName("historyHint")
        hint.setEnabled(False)
        box.addWidget(hint)
        box.addWidget(self.view, 1)
        box.addLayout(row)

    def set_events(self, events: list[MemoryEvent], superseded_by: dict[int, int] | None = None) -> None:
        self.model.set_events(events, superseded_by)
        self._update_undo()

    def current_event(self) -> MemoryEvent | None:
        index = self.view.currentIndex()
        return self.model.event_at(index.row()) if index.isValid() else None

    def _update_undo(self) -> None:
        self.undo_button.setEnabled(undoable(self.current_event()))

    def _undo(self) -> None:
        event = self.current_event()
        if undoable(event):
            assert event is not None
            self.undoRequested.emit(event.id)

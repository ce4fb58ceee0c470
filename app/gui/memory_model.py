"""Item models over the memory bank: `MemoryTableModel` (the memory panel) and
`EventTableModel` (a memory's history).

Both hold plain value objects (`core.types.Memory` / `MemoryEvent`) fetched by a background
task; they never call the bank themselves (the GUI thread never waits on the database).
An inline edit is *optimistic*: `setData` shows the new text at once and emits
`editRequested`; the panel runs `bank.edit` in the background and calls `confirm_edit` or
`revert_edit` with the outcome. All methods run on the GUI thread.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Callable, Iterable, Sequence

from PySide6.QtCore import QModelIndex, Qt, Signal
from PySide6.QtGui import QFont, QPalette
from PySide6.QtWidgets import QApplication

from core.types import Memory, MemoryChanges, MemoryEvent

from app.gui.rows_model import Index, RowsTableModel

MemoryRole = Qt.ItemDataRole.UserRole + 1


def local_time(iso: str | None) -> str:
    """An ISO-8601 (UTC) stamp shown in local time, minutes precision; other text unchanged."""
    if not iso:
        return ""
    try:
        stamp = datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    if stamp.tzinfo is not None:
        stamp = stamp.astimezone()
    return stamp.strftime("%Y-%m-%d %H:%M")


def compact_time(text: str | None, now: datetime | None = None) -> str:
    """A short form for a table cell: ISO stamps in local time ("21 Nov 09:58" this year, else
    "21 Nov 2025"); LoCoMo-style stamps ("9:58 am on 21 November, 2026") as their date; other
    text unchanged."""
    if not text:
        return ""
    now = now or datetime.now()
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
        stamp = stamp.astimezone() if stamp.tzinfo is not None else stamp
        return stamp.strftime("%d %b %H:%M" if stamp.year == now.year else "%d %b %Y").lstrip("0")
    except ValueError:
        pass
    try:
        return datetime.strptime(text.strip(), "%I:%M %p on %d %B, %Y").strftime("%d %b %Y").lstrip("0")
    except ValueError:
        return text


def _muted_brush():
    app = QApplication.instance()
    palette = app.palette() if app is not None else QPalette()  # type: ignore[union-attr]
    return palette.brush(QPalette.ColorGroup.Disabled, QPalette.ColorRole.Text)


class MemoryTableModel(RowsTableModel):
    """Rows of memories: text, person, observed time, last change, status."""

    COLUMNS = ("Memory", "Person", "Observed", "Last change", "Status")
    TEXT, PERSON, OBSERVED, CHANGED, STATUS = range(5)

    editRequested = Signal(int, str, int)  # memory id, new text, the version it was edited from

    def __init__(self, parent=None) -> None:
        super().__init__(parent=parent)
        self._rows: list[Memory] = []
        self._scores: dict[int, float] = {}
        self._originals: dict[int, Memory] = {}  # id -> the row before an unconfirmed edit

    # --- Qt model interface -----------------------------------------------------------------
    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        mem = self.value(index)
        if mem is None:
            return None
        col = index.column()
        if role in (Qt.ItemDataRole.DisplayRole, Qt.ItemDataRole.EditRole):
            return self._cell(mem, col, role == Qt.ItemDataRole.EditRole)
        if role == Qt.ItemDataRole.ToolTipRole:
            return self._tooltip(mem)
        if role == MemoryRole:
            return mem
        if role == Qt.ItemDataRole.ForegroundRole and mem.status != "active":
            return _muted_brush()
        if role == Qt.ItemDataRole.FontRole and mem.id in self._originals:
            font = QFont()
            font.setItalic(True)
            return font
        return None

    def _cell(self, mem: Memory, col: int, edit: bool) -> str:
        if col == self.TEXT:
            return mem.text if edit else " ".join(mem.text.split())
        if col == self.PERSON:
            return mem.speaker or ""
        if col == self.OBSERVED:
            return (mem.observed_at or "") if edit else compact_time(mem.observed_at)
        if col == self.CHANGED:
            return compact_time(mem.updated_at or mem.created_at)
        if col == self.STATUS:
            return mem.status
        return ""

    def _tooltip(self, mem: Memory) -> str:
        parts = [mem.text, f"#{mem.id} · version {mem.version} · {mem.status}"]
        if mem.observed_at:
            parts.append(f"observed: {mem.observed_at}")
        parts.append(f"last change: {local_time(mem.updated_at or mem.created_at)}")
        if mem.source:
            parts.append(f"source: {mem.source}")
        if mem.id in self._scores:
            parts.append(f"search score: {self._scores[mem.id]:.3f}")
        if mem.id in self._originals:
            parts.append("saving…")
        return "\n".join(parts)

    def flags(self, index: Index) -> Qt.ItemFlag:
        flags = super().flags(index)
        mem = self.value(index)
        if mem is not None and index.column() == self.TEXT and mem.status == "active" \
                and mem.id not in self._originals:
            flags |= Qt.ItemFlag.ItemIsEditable
        return flags

    def setData(self, index: Index, value, role: int = Qt.ItemDataRole.EditRole) -> bool:
        """An inline edit of the text: shown at once, saved by the panel in the background."""
        if role != Qt.ItemDataRole.EditRole or not index.isValid() or index.column() != self.TEXT:
            return False
        if not self.flags(index) & Qt.ItemFlag.ItemIsEditable:
            return False
        text = str(value).strip()
        mem = self._rows[index.row()]
        if not text or text == mem.text:
            return False
        self._originals[mem.id] = mem
        self._rows[index.row()] = dataclasses.replace(mem, text=text)
        self._row_changed(index.row())
        self.editRequested.emit(mem.id, text, mem.version)
        return True

    # --- updates from the panel -------------------------------------------------------------
    def set_rows(self, memories: Sequence[Memory], scores: dict[int, float] | None = None) -> None:
        self.beginResetModel()
        self._rows = list(memories)
        self._scores = dict(scores or {})
        self._originals.clear()
        self.endResetModel()

    def memory_at(self, row: int) -> Memory | None:
        return self.value_at(row)

    def memories(self) -> list[Memory]:
        return list(self._rows)

    def confirm_edit(self, memory: Memory) -> None:
        self._originals.pop(memory.id, None)
        self.replace(memory)

    def revert_edit(self, memory_id: int) -> None:
        original = self._originals.pop(memory_id, None)
        if original is not None:
            self.replace(original)

    def replace(self, memory: Memory) -> bool:
        row = self.row_of(memory.id)
        if row is None:
            return False
        if memory.id not in self._originals:
            self._rows[row] = memory
        self._row_changed(row)
        return True

    def remove_ids(self, ids: Iterable[int]) -> None:
        for memory_id in set(ids):
            row = self.row_of(memory_id)
            if row is not None:
                self.beginRemoveRows(QModelIndex(), row, row)
                del self._rows[row]
                self._originals.pop(memory_id, None)
                self.endRemoveRows()

    def apply_changes(self, changes: MemoryChanges, accepts: Callable[[Memory], bool],
                      insert_added: bool = True) -> None:
        """Redraw only what changed: replace, drop (no longer matching or forgotten) or insert rows."""
        self.remove_ids(changes.forgotten)
        for mem in changes.updated + changes.deleted + changes.added:
            row = self.row_of(mem.id)
            if row is not None:
                if accepts(mem):
                    self.replace(mem)
                else:
                    self.remove_ids([mem.id])
            elif insert_added and accepts(mem):
                self.beginInsertRows(QModelIndex(), 0, 0)
                self._rows.insert(0, mem)
                self.endInsertRows()

    def _row_changed(self, row: int) -> None:
        self.dataChanged.emit(self.index(row, 0), self.index(row, self.columnCount() - 1))


class EventTableModel(RowsTableModel):
    """A memory's history (the `memory_events` rows), newest first."""

    COLUMNS = ("When", "Change", "By", "Before", "After", "Turn")

    def set_events(self, events: Sequence[MemoryEvent]) -> None:
        self.reset_rows(events)

    def event_at(self, row: int) -> MemoryEvent | None:
        return self.value_at(row)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        ev = self.value(index)
        if ev is None:
            return None
        if role == Qt.ItemDataRole.DisplayRole:
            values = (local_time(ev.at), ev.event + (" (undone)" if ev.undone else ""), ev.actor,
                      ev.old_text or "", ev.new_text or "", ev.turn or "")
            return values[index.column()] if 0 <= index.column() < len(values) else None
        if role == Qt.ItemDataRole.ToolTipRole and index.column() in (3, 4):
            return (ev.old_text if index.column() == 3 else ev.new_text) or None
        if role == Qt.ItemDataRole.ForegroundRole and ev.undone:
            return _muted_brush()
        if role == MemoryRole:
            return ev
        return None

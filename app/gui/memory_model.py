"""Item models over the memory bank: `MemoryTableModel` (the memory panel) and
`EventTableModel` (a memory's history, or every recent change).

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

from core.memory.history import UNDOABLE as UNDOABLE_EVENTS
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
        if mem.superseded_by is not None:
            parts.append(f"superseded by #{mem.superseded_by} (Restore makes it active again)")
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


def change_text(ev: MemoryEvent, superseded_by: int | None = None) -> str:
    """The "Change" cell: the event, "not saved: <reason>" for a fact the gate refused,
    "superseded by #N" when the newer memory is known, and "(undone)"."""
    if ev.event == "REJECT":
        return f"not saved: {ev.reason}" if ev.reason else "not saved"
    text = ev.event
    if ev.event == "SUPERSEDE":
        text = f"superseded by #{superseded_by}" if superseded_by is not None else "superseded"
    return text + (" (undone)" if ev.undone else "")


def undoable(ev: MemoryEvent | None) -> bool:
    """Whether "Undo this change" applies (REJECT, NOOP, UNDO, FORGET never do)."""
    return ev is not None and ev.event in UNDOABLE_EVENTS and not ev.undone


class EventTableModel(RowsTableModel):
    """Memory events (the `memory_events` rows), newest first: one memory's history, or with
    `with_memory` every recent change (a "Memory" column). A REJECT row (a fact that was not
    saved) is greyed and italic and cannot be undone."""

    COLUMNS = ("When", "Change", "By", "Before", "After", "Turn")

    def __init__(self, rows=(), parent=None, *, with_memory: bool = False) -> None:
        super().__init__(rows, parent)
        self.with_memory = with_memory
        self.COLUMNS = EventTableModel.COLUMNS + (("Memory",) if with_memory else ())
        self._superseded_by: dict[int, int] = {}

    def set_events(self, events: Sequence[MemoryEvent], superseded_by: dict[int, int] | None = None) -> None:
        """`superseded_by`: memory id -> the newer memory, for the SUPERSEDE rows' text."""
        self._superseded_by = dict(superseded_by or {})
        self.reset_rows(events)

    def event_at(self, row: int) -> MemoryEvent | None:
        return self.value_at(row)

    def data(self, index: Index, role: int = Qt.ItemDataRole.DisplayRole):
        ev = self.value(index)
        if ev is None:
            return None
        col = index.column()
        if role == Qt.ItemDataRole.DisplayRole:
            newer = self._superseded_by.get(ev.memory_id) if ev.memory_id is not None else None
            values = (local_time(ev.at), change_text(ev, newer), ev.actor,
                      ev.old_text or "", ev.new_text or "", ev.turn or "",
                      "" if ev.memory_id is None else f"#{ev.memory_id}")
            return values[col] if 0 <= col < len(self.COLUMNS) else None
        if role == Qt.ItemDataRole.ToolTipRole:
            if ev.event == "REJECT":
                return (f"Not saved: {ev.reason or 'refused by the grounding check'}\n“{ev.new_text or ''}”\n"
                        "Recorded so that nothing vanishes silently; it was never a memory and cannot be undone.")
            if col in (3, 4):
                return (ev.old_text if col == 3 else ev.new_text) or None
            return None
        if role == Qt.ItemDataRole.ForegroundRole and (ev.undone or ev.event == "REJECT"):
            return _muted_brush()
        if role == Qt.ItemDataRole.FontRole and ev.event == "REJECT":
            font = QFont()
            font.setItalic(True)
            return font
        if role == MemoryRole:
            return ev
        return None

"""What the item models over a Python list of value objects share (memories, their events,
conversations): the row count, read-only selectable flags, the value behind a row or index,
lookup by `.id`, and a whole reset. GUI thread only.

`RowsMixin` goes before the Qt model class (`class M(RowsMixin, QAbstractListModel)`);
`RowsTableModel` adds the columns and header of a table (`COLUMNS`).
"""

from __future__ import annotations

from typing import Iterable

from PySide6.QtCore import QAbstractTableModel, QModelIndex, QPersistentModelIndex, Qt

Index = QModelIndex | QPersistentModelIndex


class RowsMixin:
    """Item-model methods over `self._rows` (a list of objects with an `id`)."""

    _rows: list

    def rowCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt naming
        return 0 if parent.isValid() else len(self._rows)

    def flags(self, index: Index) -> Qt.ItemFlag:
        if not index.isValid():
            return Qt.ItemFlag.NoItemFlags
        return Qt.ItemFlag.ItemIsEnabled | Qt.ItemFlag.ItemIsSelectable | Qt.ItemFlag.ItemNeverHasChildren

    def value_at(self, row: int):
        """The object shown in `row`, or None."""
        return self._rows[row] if 0 <= row < len(self._rows) else None

    def value(self, index: Index):
        """The object behind a valid index, or None."""
        return self.value_at(index.row()) if index.isValid() else None

    def row_of(self, item_id: int) -> int | None:
        for row, item in enumerate(self._rows):
            if item.id == item_id:
                return row
        return None

    def reset_rows(self, rows: Iterable) -> None:
        self.beginResetModel()  # type: ignore[attr-defined]
        self._rows = list(rows)
        self.endResetModel()  # type: ignore[attr-defined]


class RowsTableModel(RowsMixin, QAbstractTableModel):
    """A table of `self._rows` with the column titles in `COLUMNS`."""

    COLUMNS: tuple[str, ...] = ()

    def __init__(self, rows: Iterable = (), parent=None) -> None:
        super().__init__(parent)
        self._rows = list(rows)

    def columnCount(self, parent: Index = QModelIndex()) -> int:  # noqa: N802 - Qt naming
        return 0 if parent.isValid() else len(self.COLUMNS)

    def headerData(self, section: int, orientation: Qt.Orientation,  # noqa: N802 - Qt naming
                   role: int = Qt.ItemDataRole.DisplayRole):
        if role == Qt.ItemDataRole.DisplayRole and orientation == Qt.Orientation.Horizontal:
            if 0 <= section < len(self.COLUMNS):
                return self.COLUMNS[section]
        return None

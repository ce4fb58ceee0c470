"""The memory panel: see, search and curate what the assistant remembers.

A table (`MemoryTableModel`) with search (only the matches: by keyword, by text or over a
similarity floor, see app/gui/memory_search.py; "No memory matches" when none), person/status
filters (active, deleted, superseded, all), add, inline edit, delete (soft, with undo),
restore, forget (permanent, confirmed; optionally with the source text), per-memory and
bank-wide history (with the facts that were not saved), "Where it came from" under the table
(`SourcesView`: the selected memory's source links), export/import and the "pause memory"
switch. `undo_tracker` (app/gui/memory_undo.py) names and reverts the bank's latest change for
the window's Edit > Undo. Every bank call runs in the runner's "db" lane; results come back on
the GUI thread. Changes made elsewhere (the manager, the CLI in the same process, an undo)
arrive through `apply_changes` and redraw only the affected rows. Changes another process
makes (`memory-r1 mcp`/`serve`, the CLI) are noticed by `external_poll`, a timer that checks
`bank.data_version()` every EXTERNAL_POLL_MS and reloads the table when it moved.

Threads: everything here runs on the GUI thread except the small `_fetch`/`_do` closures,
which run on the "db" worker and only call the bank.
"""

from __future__ import annotations

import logging
from datetime import datetime
from pathlib import Path
from typing import Callable

import shiboken6
from PySide6.QtCore import QItemSelectionModel, Qt, QTimer, Signal
from PySide6.QtWidgets import (QAbstractItemView, QCheckBox, QComboBox, QDialog, QDialogButtonBox,
                               QFileDialog, QFormLayout, QHBoxLayout, QHeaderView, QLabel, QLineEdit,
                               QPlainTextEdit, QPushButton, QTableView, QVBoxLayout, QWidget)

from core.errors import ConflictError, NotFoundError
from core.types import Memory, MemoryChanges

from app.gui.dialogs import confirm
from app.gui.history_view import HistoryDialog, fetch_history
from app.gui.memory_details import PLACEHOLDER, SourcesView
from app.gui.memory_model import MemoryTableModel
from app.gui.memory_search import matching, search_floor
from app.gui.memory_undo import MemoryUndo
from app.gui.tasks import TaskRunner

__all__ = ["AddMemoryDialog", "HistoryDialog", "MemoryPanel", "observed_now"]

log = logging.getLogger(__name__)

LIST_LIMIT = 2000
SEARCH_K = 100
EXTERNAL_POLL_MS = 2000
STATUSES = (("Active", "active"), ("Deleted", "deleted"), ("Superseded", "superseded"), ("All", None))


def observed_now() -> str:
    """The current time in the bank's conversation-time format: "1:56 pm on 8 May, 2023"."""
    from core.agents.prompts import format_time  # the agents' prompts: not on the window's start-up path

    return format_time(datetime.now())


def _count_text(total: int, shown: int) -> str:
    text = f"{total} memor{'y' if total == 1 else 'ies'}"
    return text + (f" · {shown} shown" if shown != total else "")


class AddMemoryDialog(QDialog):
    """Text and person of a new memory. Emits `submitted(text, person)`."""

    submitted = Signal(str, str)

    def __init__(self, speakers: list[str], parent=None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Add a memory")
        self.setObjectName("addMemoryDialog")
        self.text = QPlainTextEdit()
        self.text.setPlaceholderText("A short, self-contained fact, e.g. “Alex is allergic to peanuts.”")
        self.person = QComboBox(editable=True)
        self.person.addItems(speakers or ["User"])
        buttons = QDialogButtonBox(QDialogButtonBox.StandardButton.Ok | QDialogButtonBox.StandardButton.Cancel)
        buttons.accepted.connect(self._ok)
        buttons.rejected.connect(self.reject)
        form = QFormLayout(self)
        form.addRow("Memory:", self.text)
        form.addRow("About:", self.person)
        form.addRow(buttons)

    def _ok(self) -> None:
        text = self.text.toPlainText().strip()
        if text:
            self.submitted.emit(text, self.person.currentText().strip())
            self.accept()


class MemoryPanel(QWidget):
    """Signals: `error(exc)` for the window to report, `message(text)` for the status bar,
    `pauseToggled(bool)`, `loaded()` after each (re)load of the table, `sourcesRemoved()` after
    a forget that also removed what was said (a shown chat may quote it). `sources_view`
    emits `chatMessageRequested(conversation, message)` for a chat source's link."""

    error = Signal(object)
    message = Signal(str)
    pauseToggled = Signal(bool)
    loaded = Signal()
    externalChange = Signal()  # another process committed to the bank (memories or chats)
    sourcesRemoved = Signal()

    def __init__(self, bank, runner: TaskRunner, parent=None) -> None:
        super().__init__(parent)
        self.bank = bank
        self.runner = runner
        self.model = MemoryTableModel(self)
        self.vector_floor = search_floor(bank.embedder)  # None: search by keyword and text only
        self.undo_tracker = MemoryUndo(bank, runner, self)
        self._generation = 0
        self._details_generation = 0
        self._select_after_load: int | None = None
        self._undo_stack: list[tuple[str, int, frozenset[int]]] = []  # (what, batch id, memory ids) of actions here
        self._debounce = QTimer(self, singleShot=True, interval=250)
        self._seen_version: int | None = None
        self._polling = False
        self.external_poll = QTimer(self, interval=EXTERNAL_POLL_MS)
        self.external_poll.timeout.connect(self._poll_external)
        self._build()
        self._connect()
        self.external_poll.start()

    # --- construction -----------------------------------------------------------------------
    def _build(self) -> None:
        self.search = QLineEdit(placeholderText="Search memories (words or meaning)", clearButtonEnabled=True)
        self.search.setObjectName("memorySearch")
        self.person = QComboBox()
        self.person.addItem("Everyone", None)
        self.status = QComboBox()
        for label, value in STATUSES:
            self.status.addItem(label, value)
        self.pause = QCheckBox("Pause memory")
        self.pause.setToolTip("While paused, nothing new is remembered (replies still use what is remembered).")
        self.view = QTableView()
        self.view.setObjectName("memoryTable")
        self.view.setModel(self.model)
        self.view.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        self.view.setEditTriggers(QAbstractItemView.EditTrigger.DoubleClicked
                                  | QAbstractItemView.EditTrigger.EditKeyPressed)
        self.view.setWordWrap(False)
        self.view.verticalHeader().hide()
        header = self.view.horizontalHeader()
        header.setSectionResizeMode(MemoryTableModel.TEXT, QHeaderView.ResizeMode.Stretch)
        # fixed, font-based widths: sizing to contents would measure every row on each change
        metrics = self.view.fontMetrics()
        for col, sample in ((1, "Assistant"), (2, "28 Nov 2026"), (3, "28 Nov 23:59"), (4, "superseded")):
            header.setSectionResizeMode(col, QHeaderView.ResizeMode.Interactive)
            header.resizeSection(col, metrics.horizontalAdvance(sample) + 18)
        self.count_label = QLabel()
        self.no_match = QLabel(wordWrap=True)
        self.no_match.setObjectName("noMemoryMatches")
        self.no_match.setTextFormat(Qt.TextFormat.PlainText)  # the query is shown as typed
        self.no_match.setAlignment(Qt.AlignmentFlag.AlignCenter)
        self.no_match.hide()
        self.buttons = {name: QPushButton(name) for name in
                        ("Add…", "Delete", "Restore", "Forget…", "History…", "Undo", "Export…", "Import…")}
        self.buttons["Forget…"].setToolTip("Remove permanently, including from the history")
        self.buttons["Undo"].setToolTip("Undo the last change made here (or the latest change)")
        self.buttons["History…"].setToolTip("The selected memory's history, or every recent change when none "
                                            "is selected (with the facts that were not saved)")
        self.sources_view = SourcesView()
        filters = QHBoxLayout()
        filters.addWidget(self.person)
        filters.addWidget(self.status)
        filters.addStretch(1)
        filters.addWidget(self.pause)
        # two rows of four buttons, so the panel fits the 460 px a 1280x800 screen's first layout
        # gives it (layout.splitter_sizes) without scrolling sideways
        actions = QHBoxLayout()
        for name in ("Add…", "Delete", "Restore", "Forget…"):
            actions.addWidget(self.buttons[name])
        actions.addStretch(1)
        files = QHBoxLayout()
        files.addWidget(self.count_label, 1)
        for name in ("History…", "Undo", "Export…", "Import…"):
            files.addWidget(self.buttons[name])
        title = QLabel("<b>Memory</b>")
        box = QVBoxLayout(self)
        box.setContentsMargins(4, 4, 4, 4)
        for item in (title, self.search, filters, self.no_match, self.view, self.sources_view, actions, files):
            (box.addLayout if isinstance(item, QHBoxLayout) else box.addWidget)(item)
        box.setStretchFactor(self.view, 1)

    def _connect(self) -> None:
        self.search.textChanged.connect(lambda _t: self._debounce.start())
        self._debounce.timeout.connect(self.refresh)
        self.person.currentIndexChanged.connect(lambda _i: self.refresh())
        self.status.currentIndexChanged.connect(lambda _i: self.refresh())
        self.pause.toggled.connect(self.pauseToggled)
        self.model.editRequested.connect(self._edit)
        self.view.selectionModel().selectionChanged.connect(lambda *_: self._selection_changed())
        self.sources_view.memoryRequested.connect(self.select_memory)
        self.view.doubleClicked.connect(self._double_clicked)
        handlers = {"Add…": self.ask_add, "Delete": self.delete_selected, "Restore": self.restore_selected,
                    "Forget…": self.ask_forget, "History…": lambda: self.show_history(), "Undo": lambda: self.undo(),
                    "Export…": self.ask_export, "Import…": self.ask_import}
        for name, handler in handlers.items():
            self.buttons[name].clicked.connect(handler)
        self.undo_tracker.error.connect(self.error)
        self.undo_tracker.undone.connect(self.message)
        self._update_buttons()

    # --- loading ----------------------------------------------------------------------------
    def filters(self) -> tuple[str, str | None, str | None]:
        return self.search.text().strip(), self.person.currentData(), self.status.currentData()

    def refresh(self) -> None:
        """Reload the table for the current search and filters (in the background)."""
        self._generation += 1
        generation = self._generation
        query, person, status = self.filters()
        bank, floor = self.bank, self.vector_floor

        def fetch():  # db worker
            if query:
                rows, scores = matching(bank, query, speaker=person, status=status, floor=floor, k=SEARCH_K,
                                        limit=LIST_LIMIT)
            else:
                rows, scores = bank.list(status=status, speaker=person, limit=LIST_LIMIT), {}
            return rows, scores, bank.speakers(), bank.count(status), bank.data_version()

        self.runner.submit(fetch, name="load memories", on_done=lambda r: self._loaded(generation, *r),
                           on_error=self.error.emit)

    def _poll_external(self) -> None:
        """Reload when another process committed since the last check (db lane; GUI thread here)."""
        if self._polling:
            return
        self._polling = True

        def done(version: int) -> None:
            self._polling = False
            if self._seen_version is not None and version != self._seen_version:
                log.info("the memory bank changed in another process; reloading the table")
                self.refresh()
                self.externalChange.emit()
            self._seen_version = version

        def failed(exc: BaseException) -> None:  # a closed bank at exit: nothing to show
            self._polling = False
            log.debug("change check failed: %s", exc)

        try:
            self.runner.submit(self.bank.data_version, name="check for changes", on_done=done, on_error=failed)
        except RuntimeError:  # the runner is shut down: the window is closing
            self._polling = False
            self.external_poll.stop()

    def _loaded(self, generation: int, rows, scores, speakers, total, version: int | None = None) -> None:
        if generation != self._generation:
            return  # a newer search superseded this one
        if version is not None:
            self._seen_version = version  # the table shows the bank as of this version
        self.model.set_rows(rows, scores)
        self._set_speakers(speakers)
        self.count_label.setText(_count_text(total, len(rows)))
        query = self.filters()[0]
        self.no_match.setText(f"No memory matches “{query}”." if query and not rows else "")
        self.no_match.setVisible(bool(query) and not rows)
        self._update_buttons()
        self.undo_tracker.check()
        if self._select_after_load is not None:
            memory_id, self._select_after_load = self._select_after_load, None
            self._select_row(memory_id)
        self.loaded.emit()

    def _set_speakers(self, speakers) -> None:
        current = self.person.currentData()
        wanted = [None] + sorted(s for s in speakers if s)
        have = [self.person.itemData(i) for i in range(self.person.count())]
        if have == wanted:
            return
        self.person.blockSignals(True)
        self.person.clear()
        self.person.addItem("Everyone", None)
        for speaker in wanted[1:]:
            self.person.addItem(speaker, speaker)
        self.person.setCurrentIndex(max(0, self.person.findData(current)) if current else 0)
        self.person.blockSignals(False)

    def _accepts(self, mem: Memory) -> bool:
        _query, person, status = self.filters()
        return (status is None or mem.status == status) and (person is None or mem.speaker == person)

    def apply_changes(self, changes: MemoryChanges) -> None:
        """Changes made anywhere (GUI thread): redraw only those rows."""
        searching = bool(self.filters()[0])
        self.model.apply_changes(changes, self._accepts, insert_added=not searching)
        self._recount()
        if changes.added and any(m.speaker and self.person.findData(m.speaker) < 0 for m in changes.added):
            self._set_speakers([self.person.itemData(i) for i in range(1, self.person.count())]
                               + [m.speaker for m in changes.added])
        self._update_buttons()
        self.undo_tracker.note(changes)
        shown = self.sources_view.memory_id
        if shown is not None and (shown in changes.forgotten or any(m.id == shown for m in changes.memories)):
            self.show_sources()  # e.g. an UPDATE linked a new turn, or it was superseded

    def _recount(self) -> None:
        """Refresh "N memories" in the background (a count, not a reload)."""
        status = self.filters()[2]
        shown = self.model.rowCount()

        def done(total):
            self.count_label.setText(_count_text(total, shown))

        self.runner.submit(self.bank.count, status, name="count memories", on_done=done,
                           on_error=lambda exc: log.warning("memory count failed: %s", exc))

    def select_memory(self, memory_id: int) -> None:
        """Show and select a memory (from a "memory used" or "memory updated" link)."""
        if self._select_row(memory_id):
            return
        self._select_after_load = memory_id
        for widget in (self.search, self.person, self.status):
            widget.blockSignals(True)
        self.search.clear()
        self.person.setCurrentIndex(0)
        self.status.setCurrentIndex(len(STATUSES) - 1)  # All: it may have been deleted since
        for widget in (self.search, self.person, self.status):
            widget.blockSignals(False)
        self.refresh()

    def _select_row(self, memory_id: int) -> bool:
        row = self.model.row_of(memory_id)
        if row is None:
            return False
        index = self.model.index(row, MemoryTableModel.TEXT)
        self.view.selectionModel().setCurrentIndex(
            index, QItemSelectionModel.SelectionFlag.ClearAndSelect | QItemSelectionModel.SelectionFlag.Rows)
        self.view.scrollTo(index)
        return True

    # --- selection helpers ------------------------------------------------------------------
    def selected_memories(self) -> list[Memory]:
        rows = sorted({i.row() for i in self.view.selectionModel().selectedRows()})
        return [m for m in (self.model.memory_at(r) for r in rows) if m is not None]

    def _update_buttons(self) -> None:
        selected = self.selected_memories()
        self.buttons["Delete"].setEnabled(any(m.status == "active" for m in selected))
        self.buttons["Restore"].setEnabled(any(m.status != "active" for m in selected))
        self.buttons["Forget…"].setEnabled(bool(selected))
        self.buttons["History…"].setEnabled(len(selected) <= 1)

    def _selection_changed(self) -> None:
        self._update_buttons()
        self.show_sources()

    # --- where it came from -----------------------------------------------------------------
    def show_sources(self) -> None:
        """Fill "Where it came from" for the one selected memory (links read in the background)."""
        self._details_generation += 1
        generation = self._details_generation
        selected = self.selected_memories()
        if len(selected) != 1:
            self.sources_view.show_text(PLACEHOLDER if not selected else f"{len(selected)} memories selected.")
            return
        memory_id, bank = selected[0].id, self.bank

        def fetch():  # db worker: the row as it is now, and its links
            return bank.get(memory_id), bank.memory_sources(memory_id)

        def done(result) -> None:
            if generation == self._details_generation:
                self.sources_view.show_sources(*result)

        def failed(exc: BaseException) -> None:
            if generation != self._details_generation:
                return
            if isinstance(exc, NotFoundError):
                self.sources_view.show_text("This memory no longer exists.")
            else:
                self.error.emit(exc)

        self.runner.submit(fetch, name="memory sources", on_done=done, on_error=failed)

    def _double_clicked(self, index) -> None:
        if index.column() != MemoryTableModel.TEXT:
            self.show_history()

    # --- actions ----------------------------------------------------------------------------
    def _do(self, name: str, fn: Callable, on_done: Callable | None = None) -> None:
        """Run `fn()` on the db worker; errors go to the window's error dialog."""
        self.runner.submit(fn, name=name, on_done=on_done, on_error=self.error.emit)

    def add_memory(self, text: str, person: str | None = None) -> None:
        bank = self.bank
        self._do("add memory", lambda: bank.add(text, speaker=person or None, observed_at=observed_now(),
                                                source="gui", actor="user"),
                 lambda changes: self._after_action("Added", changes))

    def ask_add(self) -> None:
        dialog = AddMemoryDialog([self.person.itemData(i) for i in range(1, self.person.count())], self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.submitted.connect(self.add_memory)
        dialog.open()

    def _edit(self, memory_id: int, text: str, version: int) -> None:
        bank = self.bank

        def failed(exc):
            self.model.revert_edit(memory_id)
            self.error.emit(exc)
            if isinstance(exc, ConflictError):
                self.refresh()

        def done(changes: MemoryChanges):
            if changes.updated:
                self.model.confirm_edit(changes.memory)
                self._after_action("Edited", changes)
            else:  # the bank already had this text
                self.model.revert_edit(memory_id)

        self.runner.submit(lambda: bank.edit(memory_id, text, expected_version=version, actor="user"),
                           name="edit memory", on_done=done, on_error=failed)

    def delete_selected(self) -> None:
        """One soft delete of every selected active memory: one transaction, one undo step."""
        ids = [m.id for m in self.selected_memories() if m.status == "active"]
        if ids:
            self._do("delete", lambda: self.bank.delete(ids, actor="user"),
                     lambda changes: self._after_action("Deleted", changes))

    def restore_selected(self) -> None:
        ids = [m.id for m in self.selected_memories() if m.status != "active"]
        if ids:
            self._do("restore", lambda: self.bank.restore(ids, actor="user"),
                     lambda changes: self._after_action("Restored", changes))

    def _after_action(self, what: str, changes: MemoryChanges) -> None:
        """Redraw the rows an action here changed and remember its batch for Undo."""
        rows = changes.memories
        for mem in rows:
            self.model.replace(mem) if self._accepts(mem) else self.model.remove_ids([mem.id])
        if changes.batch_id is not None and rows:
            self._undo_stack.append((what, changes.batch_id, frozenset(m.id for m in rows)))
        if what in ("Deleted", "Restored"):
            self.message.emit(f"{what} {len(rows)} memor{'y' if len(rows) == 1 else 'ies'}."
                              + (" Undo with the Undo button." if what == "Deleted" else ""))
        elif rows:
            self.message.emit(f"{what} memory #{rows[0].id}.")
        self._update_buttons()

    def ask_forget(self) -> None:
        """Confirm, then forget the selected memories; the dialog's checkbox (unchecked by
        default) also removes the text they came from (`bank.forget(ids, sources=True)`)."""
        selected = self.selected_memories()
        if not selected:
            return
        ids = [m.id for m in selected]
        what = f"“{selected[0].text}”" if len(selected) == 1 else f"these {len(selected)} memories"
        also = QCheckBox("Also remove what was said (the source text)")
        also.setObjectName("forgetSources")
        also.setToolTip("The chat messages and ingested turns these memories came from are emptied too; "
                        "other memories from the same turns then read “source deleted”.")
        box = confirm(self, "Forget permanently",
                      f"Forget {what} permanently? It is removed from the memory and from its history; "
                      "this cannot be undone.", lambda: self.forget(ids, sources=also.isChecked()),
                      yes_text="Forget", name="confirmForget", destructive=True)
        box.setCheckBox(also)

    def forget(self, ids: list[int], *, sources: bool = False) -> None:
        def done(changes: MemoryChanges):
            gone = set(changes.forgotten)
            self.model.remove_ids(gone)
            self._undo_stack = [entry for entry in self._undo_stack if not entry[2] & gone]
            self.message.emit(f"Forgot {len(gone)} memor{'y' if len(gone) == 1 else 'ies'} permanently"
                              + (", and what was said." if sources else "."))
            self.refresh()
            if sources:
                self.sourcesRemoved.emit()

        self._do("forget", lambda: self.bank.forget(ids, sources=sources), done)

    def undo(self, event_id: int | None = None) -> None:
        """Undo `event_id`, else this panel's last action (its whole batch: a multi-delete comes
        back at once), else the bank's latest change."""
        what, batch = "change", None
        if event_id is None and self._undo_stack:
            what, batch, _ids = self._undo_stack.pop()
        bank = self.bank

        def done(changes):
            if isinstance(changes, MemoryChanges):
                self.apply_changes(changes)
            self.message.emit(f"Undid the last {what.lower() if what != 'change' else what}.")
            self.refresh()

        self._do("undo", lambda: bank.undo(event_id, batch=batch), done)

    def show_history(self, every_change: bool = False) -> None:
        """The one selected memory's history; with nothing selected (or `every_change`),
        every recent change, the facts that were not saved included."""
        selected = [] if every_change else self.selected_memories()
        if len(selected) > 1:
            return
        memory = selected[0] if selected else None
        dialog = HistoryDialog(memory, self)
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.undoRequested.connect(lambda eid: (self.undo(eid), dialog.accept()))
        bank = self.bank

        def show(result):
            if shiboken6.isValid(dialog):  # the user may have closed it already
                dialog.set_events(*result)

        self._do("history", lambda: fetch_history(bank, memory), show)
        dialog.open()

    # --- export / import --------------------------------------------------------------------
    def _file_dialog(self, title: str, save: bool, on_path: Callable[[str], None]) -> None:
        dialog = QFileDialog(self, title, str(Path.home()), "Memory files (*.jsonl);;All files (*)")
        dialog.setAcceptMode(QFileDialog.AcceptMode.AcceptSave if save else QFileDialog.AcceptMode.AcceptOpen)
        dialog.setFileMode(QFileDialog.FileMode.AnyFile if save else QFileDialog.FileMode.ExistingFile)
        dialog.setDefaultSuffix("jsonl")
        dialog.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        dialog.fileSelected.connect(on_path)
        dialog.open()

    def ask_export(self) -> None:
        self._file_dialog("Export memories", True, self.export_to)

    def ask_import(self) -> None:
        self._file_dialog("Import memories", False, self.import_from)

    def export_to(self, path: str) -> None:
        self._do("export", lambda: self.bank.export_jsonl(Path(path)),
                 lambda n: self.message.emit(f"Exported {n} memories to {path}."))

    def import_from(self, path: str) -> None:
        def done(report):
            self.message.emit(f"Imported {report.imported} memories from {path}"
                              f" ({report.skipped} already known, skipped).")
            self.refresh()

        self._do("import", lambda: self.bank.import_jsonl(Path(path)), done)

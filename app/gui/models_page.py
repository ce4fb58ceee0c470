"""The Models page: installed models with a fit estimate and their roles, the catalog to
download from (with progress, pause and cancel), import of a local .gguf, removal.

Self-contained: `ModelsPage(store, settings)` needs only a `core.catalog.ModelStore` and the
`Settings` whose roles it edits. After a role change it saves the settings (to
`settings.json` in the store's data dir) and emits `settings_changed(Settings)` so the window
can reload its model runtime. All disk and network work (listing with fit estimates,
downloads, imports, hashing) runs on plain worker threads; results come back through queued
signals, so the GUI thread never blocks. GUI-thread API only.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any, Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import (QAbstractItemView, QFileDialog, QGroupBox, QHBoxLayout,
                               QHeaderView, QLabel, QProgressBar, QPushButton, QTableWidget,
                               QTableWidgetItem, QVBoxLayout, QWidget)

from core.config import Settings, settings_path
from core.errors import Cancelled
from core.llm.gguf_info import human_size
from core.types import CancelToken

from app.gui.dialogs import confirm, report_error


class _Bridge(QObject):
    """Carries results and progress from worker threads to the GUI thread (queued)."""

    done = Signal(object, object, object)  # callback, result, exception
    progress = Signal(object)


def _item(text: Any, data: Any = None) -> QTableWidgetItem:
    item = QTableWidgetItem("" if text is None else str(text))
    item.setFlags(item.flags() & ~Qt.ItemFlag.ItemIsEditable)
    if data is not None:
        item.setData(Qt.ItemDataRole.UserRole, data)
    return item


class ModelsPage(QWidget):
    """Pick, download, import and remove models; choose one per role."""

    settings_changed = Signal(object)
    refreshed = Signal()  # the tables were redrawn (tests wait on it)
    download_finished = Signal(object)  # ModelRecord, or None when paused/cancelled/failed

    INSTALLED_COLS = ["Model", "Size", "Quant", "Context", "Fit", "Roles"]
    CATALOG_COLS = ["Model", "Size", "Licence", "Fit", "Checksum"]
    SIZE_COL = 1  # in both tables

    def __init__(self, store, settings: Settings | None = None, parent: QWidget | None = None):
        super().__init__(parent)
        self.setObjectName("modelsPage")
        self.store = store
        self.settings = settings or Settings.load(settings_path(store.base))
        self._bridge = _Bridge()  # no parent: a worker finishing after the page closed is harmless
        self._bridge.done.connect(self._deliver)
        self._bridge.progress.connect(self._on_progress)
        self._cancel: CancelToken | None = None
        self._discard_after_stop = False
        self._select_after_refresh: str | None = None  # a model id to select once redrawn
        self._build()
        self.refresh()

    # --- layout ----------------------------------------------------------------------------
    def _build(self) -> None:
        self.installed = self._table("installedTable", self.INSTALLED_COLS)
        self.catalog = self._table("catalogTable", self.CATALOG_COLS)
        self.use_answer = self._button("Use for answers", lambda: self.use_selected("answer"))
        self.use_manager = self._button("Use for memory", lambda: self.use_selected("manager"))
        self.import_btn = self._button("Import .gguf…", self._choose_file)
        self.remove_btn = self._button("Remove", self.remove_selected)
        self.download_btn = self._button("Download", self.download_selected)
        self.pause_btn = self._button("Pause", lambda: self.stop_download(discard=False))
        self.cancel_btn = self._button("Cancel", lambda: self.stop_download(discard=True))
        self.progress = QProgressBar(objectName="downloadProgress")
        self.status = QLabel("", objectName="modelsStatus")
        self.status.setWordWrap(True)
        top = QGroupBox("Your models")
        tl = QVBoxLayout(top)
        tl.addWidget(self.installed)
        tl.addLayout(self._row(self.use_answer, self.use_manager, self.import_btn, self.remove_btn))
        bottom = QGroupBox("Download a model")
        bl = QVBoxLayout(bottom)
        bl.addWidget(self.catalog)
        bl.addLayout(self._row(self.download_btn, self.pause_btn, self.cancel_btn, self.progress))
        layout = QVBoxLayout(self)
        layout.addWidget(top)
        layout.addWidget(bottom)
        layout.addWidget(self.status)
        self._set_downloading(False)
        self.installed.itemSelectionChanged.connect(self._update_remove_button)
        self._update_remove_button()

    def _table(self, name: str, cols: list[str]) -> QTableWidget:
        table = QTableWidget(0, len(cols), objectName=name)
        table.setHorizontalHeaderLabels(cols)
        table.setSelectionBehavior(QAbstractItemView.SelectionBehavior.SelectRows)
        table.setSelectionMode(QAbstractItemView.SelectionMode.SingleSelection)
        table.horizontalHeader().setSectionResizeMode(0, QHeaderView.ResizeMode.Stretch)
        table.verticalHeader().setVisible(False)
        return table

    def _button(self, text: str, slot: Callable[[], None]) -> QPushButton:
        button = QPushButton(text)
        button.clicked.connect(slot)
        return button

    @staticmethod
    def _row(*widgets: QWidget) -> QHBoxLayout:
        row = QHBoxLayout()
        for w in widgets:
            row.addWidget(w)
        return row

    # --- background work -------------------------------------------------------------------
    def _run(self, fn: Callable[[], Any], on_done: Callable[[Any], None]) -> None:
        bridge = self._bridge

        def work() -> None:
            try:
                result, error = fn(), None
            except BaseException as exc:  # noqa: BLE001 - shown on the GUI thread
                result, error = None, exc
            try:
                bridge.done.emit(on_done, result, error)
            except RuntimeError:  # the page was closed meanwhile: nobody to tell
                pass

        threading.Thread(target=work, name="models-page", daemon=True).start()

    def _deliver(self, on_done, result, error) -> None:
        if error is not None and not isinstance(error, Cancelled):
            self.status.setText(str(error))
            report_error(self, error, None)
        on_done(None if error is not None else result)

    # --- listing ---------------------------------------------------------------------------
    def refresh(self) -> None:
        """Re-read the models and fit estimates on a worker; redraw when they arrive."""
        self._run(self._collect, self._redraw)

    def _collect(self) -> dict:
        from core.catalog import fit_for_entry, fit_for_gguf

        rows = []
        for record in self.store.list_models():
            fit = fit_for_gguf(record.path) if record.available else None
            rows.append((record, fit))
        have = {r.catalog_id for r, _ in rows if r.catalog_id}
        paused = {p.filename: p.downloaded for p in self.store.pending_downloads()}
        entries = [(e, fit_for_entry(e), paused.get(e.filename))
                   for e in self.store.catalog if not e.embedded and e.id not in have]
        return {"installed": rows, "catalog": entries}

    def _roles_of(self, record) -> list[str]:
        import os

        roles = []
        for name, spec in (("answers", self.settings.answer_model), ("memory", self.settings.manager_model)):
            if (spec.path is None and record.source == "embedded") or (
                    spec.path and os.path.realpath(spec.path) == os.path.realpath(record.path)):
                roles.append(name)
        return roles

    def _redraw(self, data: dict | None) -> None:
        if data is None:
            return
        self.installed.setRowCount(0)
        for record, fit in data["installed"]:
            self._append(self.installed, record, [
                record.name, human_size(record.size_bytes), record.quantization,
                record.context_length, fit.verdict if fit else "file missing",
                ", ".join(self._roles_of(record))], fit.summary() if fit else record.path)
        self.catalog.setRowCount(0)
        for entry, fit, paused in data["catalog"]:
            size = human_size(entry.size_bytes) if entry.size_bytes else \
                "~" + human_size(entry.planning_size or 0)
            check = "verified sha256" if entry.verified else "unverified"
            name = entry.name + (f" (paused at {human_size(paused)})" if paused is not None else "")
            self._append(self.catalog, entry, [name, size, entry.license,
                                               fit.verdict if fit else "?", check],
                         (fit.summary() if fit else "") + f"\n{entry.description}")
        wanted, self._select_after_refresh = self._select_after_refresh, None
        for row in range(self.installed.rowCount()):
            if wanted is not None and self.installed.item(row, 0).data(Qt.ItemDataRole.UserRole).id == wanted:
                self.installed.selectRow(row)
        self._update_remove_button()
        self.refreshed.emit()

    EMBEDDED_TIP = "The embedded model ships with the app and cannot be removed."

    def _update_remove_button(self) -> None:
        """Remove is enabled only for a selected downloaded or imported model; on the embedded
        model it is disabled, and its tooltip says why."""
        record = self._selected(self.installed)
        embedded = record is not None and record.source == "embedded"
        self.remove_btn.setEnabled(record is not None and not embedded)
        self.remove_btn.setToolTip(self.EMBEDDED_TIP if embedded else
                                   "Select one of your models to remove it." if record is None else
                                   f"Remove {record.name}" + (" and delete its file." if record.managed
                                                              else " from the list (the file stays)."))

    def _append(self, table: QTableWidget, data: Any, cells: list, tooltip: str) -> None:
        row = table.rowCount()
        table.insertRow(row)
        for col, text in enumerate(cells):
            item = _item(text, data if col == 0 else None)
            if col == self.SIZE_COL:  # sizes right-aligned, so that their digits line up
                item.setTextAlignment(Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignVCenter)
            item.setToolTip(tooltip)
            table.setItem(row, col, item)

    def _selected(self, table: QTableWidget):
        rows = table.selectionModel().selectedRows()
        if not rows:
            return None
        return table.item(rows[0].row(), 0).data(Qt.ItemDataRole.UserRole)

    # --- roles -----------------------------------------------------------------------------
    def use_selected(self, role: str) -> None:
        record = self._selected(self.installed)
        if record is None:
            self.status.setText("Select one of your models first.")
            return
        from core.catalog import assign_role

        assign_role(self.settings, role, record.path, model_sha256=record.sha256,
                    embedded=record.source == "embedded")
        self.settings.save(settings_path(self.store.base))
        self.status.setText(f"{'Answers' if role == 'answer' else 'Memory'} now use {record.name}.")
        self.settings_changed.emit(self.settings)
        self.refresh()

    # --- import / remove -------------------------------------------------------------------
    def _choose_file(self) -> None:
        path, _ = QFileDialog.getOpenFileName(self, "Import a GGUF model", str(Path.home()),
                                              "GGUF models (*.gguf)")
        if path:
            self.import_path(path)

    def import_path(self, path: str | Path, copy: bool = True) -> None:
        """Validate and add a local .gguf on a worker (copying can take a while). A file that is
        already one of the models (same file, or same size and sha256, e.g. the embedded model)
        is not copied or listed again: the status line says which model it is, and that row
        is selected."""
        from core.catalog import AlreadyInstalledError

        def work():
            try:
                return self.store.import_gguf(path, copy=copy)
            except AlreadyInstalledError as exc:
                return exc

        self.status.setText(f"Importing {Path(path).name}…")
        self._run(work, self._imported)

    def _imported(self, result) -> None:
        from core.catalog import AlreadyInstalledError

        if isinstance(result, AlreadyInstalledError):
            self._select_after_refresh = result.record.id
            self.status.setText(str(result))
        elif result is not None:
            self.status.setText(f"Imported {result.name} ({result.architecture}, "
                                f"{result.quantization}, context {result.context_length}).")
        self.refresh()

    def remove_selected(self) -> None:
        record = self._selected(self.installed)
        if record is None:
            return
        if record.source == "embedded":
            self.status.setText(self.EMBEDDED_TIP)
            return
        text = (f"Delete {record.name} ({human_size(record.size_bytes)}) from your disk?"
                if record.managed else f"Forget {record.name}? The file stays where it is.")
        confirm(self, "Remove model", text, lambda: self.remove(record.id), yes_text="Remove",
                name="confirmRemoveModel", destructive=True)

    def remove(self, model_id: str) -> None:
        """Remove without asking (the confirmation is `remove_selected`'s)."""
        from core.catalog import release_model

        record = self.store.get(model_id)
        if release_model(self.settings, record.path):
            self.settings.save(settings_path(self.store.base))
            self.settings_changed.emit(self.settings)
        self._run(lambda: self.store.remove(model_id), lambda _: self.refresh())

    # --- download --------------------------------------------------------------------------
    def download_selected(self) -> None:
        entry = self._selected(self.catalog)
        if entry is None:
            self.status.setText("Select a model in the catalog first.")
            return
        self.download(entry.id)

    def download(self, catalog_id: str) -> None:
        if self._cancel is not None:
            return
        self._cancel, self._discard_after_stop = CancelToken(), False
        token = self._cancel
        self._set_downloading(True)
        self.status.setText("Connecting…")
        self._run(lambda: self.store.download(catalog_id, progress=self._bridge.progress.emit,
                                              cancel=token),
                  lambda record: self._downloaded(catalog_id, record))

    def stop_download(self, discard: bool) -> None:
        """Pause (keep the partial file for later) or cancel (delete it)."""
        if self._cancel is not None:
            self._discard_after_stop = discard
            self._cancel.cancel()

    def _on_progress(self, p) -> None:
        if p.total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * p.downloaded / p.total))
        eta = f", {int(p.eta_s) // 60} min {int(p.eta_s) % 60} s left" if p.eta_s is not None else ""
        total = f" of {human_size(p.total)}" if p.total else ""
        self.status.setText(f"{human_size(p.downloaded)}{total} at {human_size(p.speed_bps)}/s{eta}")

    def _downloaded(self, catalog_id: str, record) -> None:
        discard = self._cancel is not None and self._cancel.cancelled and self._discard_after_stop
        paused = self._cancel is not None and self._cancel.cancelled and not discard
        self._cancel = None
        self._set_downloading(False)
        if discard:
            self._run(lambda: self.store.discard_download(catalog_id), lambda _: self.refresh())
            self.status.setText("Download cancelled.")
        elif paused:
            self.status.setText("Download paused; press Download to resume.")
            self.refresh()
        elif record is not None:
            self.status.setText(f"Downloaded {record.name}"
                                + (" (sha256 verified)." if record.verified else "."))
            self.refresh()
        self.download_finished.emit(record)

    def _set_downloading(self, active: bool) -> None:
        self.download_btn.setEnabled(not active)
        self.pause_btn.setEnabled(active)
        self.cancel_btn.setEnabled(active)
        self.progress.setVisible(active)
        if active:
            self.progress.setRange(0, 0)

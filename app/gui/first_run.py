"""The first-run card: the user's name, what the embedded model is, and one better model.

`FirstRunDialog(settings, offer=..., download=...)` asks for the name memories are written
about ("Sam likes tea", not "User likes tea"), says plainly that the embedded model is a small
one for trying the app out, and offers the catalog model that fits this machine
(`recommended_entry`) with one button; while the models load behind it, a line says which
phase is running (`set_loading`, from the window's load progress). The download runs on its own thread through
`download(progress, cancel) -> ModelRecord` (the app passes `ModelStore.download`, which
verifies the file and resumes a partial one; tests pass a fake); Pause keeps the partial file
for a later resume (here or in Models…). Everything is optional: "Skip" (or Esc) keeps the
embedded model; a name typed is kept either way.

Signal `done(result)`: a `FirstRunResult(name, record)` when the card closes, `record` the
downloaded model or None. Opened with `open()` (window-modal, non-blocking). GUI thread,
except the download closure (its own thread; it reaches the GUI only through `_Bridge`).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable

from PySide6.QtCore import QObject, Qt, Signal, Slot
from PySide6.QtWidgets import (QDialog, QHBoxLayout, QLabel, QLineEdit, QProgressBar, QPushButton,
                               QVBoxLayout)

from core.config import Settings
from core.types import CancelToken

if TYPE_CHECKING:  # core.catalog pulls in urllib/http (the downloads): not on the start-up path
    from core.catalog.catalog import CatalogEntry

SIDE_MODEL_SHARE = 0.5  # the offered model may use at most this share of total RAM (the rest: the OS, apps)
CPU_MAX_NEED = 4 << 30  # bigger models (7B, 8B) answer slower than reading speed on a laptop CPU


@dataclass(frozen=True)
class FirstRunResult:
    name: str
    record: Any = None  # core.catalog.store.ModelRecord of a finished download, else None


def recommended_entry(entries: list[CatalogEntry], *, available_ram: int, total_ram: int,
                      ) -> tuple[CatalogEntry, Any] | None:
    """The largest downloadable catalog model whose estimate "fits" in the RAM free now, needs
    at most `SIDE_MODEL_SHARE` of the total and at most `CPU_MAX_NEED` (the app runs models on
    the CPU by default); with its `FitEstimate`. None when none does.
    Pure (no measurement): the caller passes the machine's figures (`core.catalog.fit.machine_memory`)."""
    from core.catalog.fit import FITS, fit_for_entry

    best = None
    for entry in entries:
        if entry.embedded or not entry.repo_id:
            continue
        fit = fit_for_entry(entry, available_ram=available_ram, total_ram=total_ram, gpu_offload=False)
        if fit is None or fit.verdict != FITS or fit.need_bytes > min(total_ram * SIDE_MODEL_SHARE, CPU_MAX_NEED):
            continue
        if best is None or fit.need_bytes > best[1].need_bytes:
            best = (entry, fit)
    return best


class _Bridge(QObject):
    progress = Signal(object)  # core.catalog.download.Progress
    finished = Signal(object, object)  # record, exception


class FirstRunDialog(QDialog):
    done = Signal(object)  # FirstRunResult

    INTRO = ("<h2>Welcome to Memory-R1</h2>"
             "<p>Memory-R1 remembers what you tell it, on this computer only.</p>")
    SMALL_MODEL = ("Memory-R1 comes with a small embedded model (SmolLM2-135M, about 100 MB) for "
                   "trying it out: it answers quickly, but simply, and often gets things wrong. "
                   "For everyday chats, use a bigger model.")

    def __init__(self, settings: Settings, *, offer: tuple[CatalogEntry, Any] | None = None,
                 download: Callable[[Callable, CancelToken], Any] | None = None, parent=None) -> None:
        super().__init__(parent)
        self.setObjectName("firstRunDialog")
        self.setWindowTitle("Welcome to Memory-R1")
        self.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
        self.offer = offer
        self._download = download
        self._cancel: CancelToken | None = None
        self.record = None
        self._bridge = _Bridge(self)
        self._bridge.progress.connect(self._on_progress, Qt.ConnectionType.QueuedConnection)
        self._bridge.finished.connect(self._on_finished, Qt.ConnectionType.QueuedConnection)
        self._build(settings)

    def _build(self, settings: Settings) -> None:
        intro = QLabel(self.INTRO, wordWrap=True)
        self.name = QLineEdit(settings.user_name, placeholderText="Your first name, e.g. Sam")
        self.name.setObjectName("firstRunName")
        self.name.setMaxLength(60)
        ask = QLabel("What should Memory-R1 call you? Memories are written about this name "
                     "(\u201cSam likes tea\u201d).", wordWrap=True)
        small = QLabel(self.SMALL_MODEL, wordWrap=True)
        small.setObjectName("firstRunSmallModel")
        self.offer_button = QPushButton()
        self.offer_button.setObjectName("firstRunDownload")
        self.pause_button = QPushButton("Pause")
        self.pause_button.setToolTip("Keep what was downloaded; it resumes from there next time")
        self.pause_button.hide()
        self.progress = QProgressBar(textVisible=False)
        self.progress.hide()
        self.status = QLabel(wordWrap=True)
        self.status.setObjectName("firstRunStatus")
        self.loading = QLabel(wordWrap=True)  # the start-up load, phase by phase (`set_loading`)
        self.loading.setObjectName("firstRunLoading")
        self.loading.hide()
        if self.offer is not None and self._download is not None:
            entry, fit = self.offer
            from core.llm.gguf_info import human_size

            size = human_size(entry.planning_size or 0)
            self.offer_button.setText(f"Download {entry.name} ({size})")
            self.status.setText(f"Fits this computer: needs about {human_size(fit.need_bytes)} of "
                                f"{human_size(fit.available_ram)} free memory. {entry.description}")
            self.offer_button.clicked.connect(self.start_download)
            self.pause_button.clicked.connect(self.pause_download)
        else:
            self.offer_button.hide()
            self.status.setText("No catalog model fits the memory free on this computer now; "
                                "the embedded model stays. File > Models… lists them all.")
        self.skip_button = QPushButton("Skip")
        self.skip_button.setToolTip("Keep the embedded model; File > Models… offers more later")
        self.start_button = QPushButton("Start chatting")
        self.start_button.setDefault(True)
        self.skip_button.clicked.connect(lambda: self._close(skip=True))
        self.start_button.clicked.connect(lambda: self._close(skip=False))
        box = QVBoxLayout(self)
        for widget in (intro, ask, self.name, small, self.loading):
            box.addWidget(widget)
        row = QHBoxLayout()
        row.addWidget(self.offer_button)
        row.addWidget(self.pause_button)
        row.addStretch(1)
        box.addLayout(row)
        box.addWidget(self.progress)
        box.addWidget(self.status)
        buttons = QHBoxLayout()
        buttons.addStretch(1)
        buttons.addWidget(self.skip_button)
        buttons.addWidget(self.start_button)
        box.addLayout(buttons)
        self.setMinimumWidth(420)

    # --- the models loading meanwhile -----------------------------------------------------------
    @Slot(str)
    def set_loading(self, text: str) -> None:
        """The start-up load's line ("Loading the models… answer model: done · …"); other
        progress lines (a fallback notice) are for the status bar."""
        if text.startswith("Loading"):
            self.loading.setText(text)
            self.loading.show()

    @Slot()
    def models_ready(self) -> None:
        self.loading.setText("The models are loaded: you can start chatting.")
        self.loading.show()

    @Slot(object)
    def models_failed(self, exc: BaseException) -> None:
        self.loading.setText(f"The models could not be loaded: {exc}")
        self.loading.show()

    # --- download -----------------------------------------------------------------------------
    def downloading(self) -> bool:
        return self._cancel is not None

    def start_download(self) -> None:
        """One click: the offered model, with progress; a paused download resumes."""
        if self._download is None or self.downloading() or self.record is not None:
            return
        self._cancel = CancelToken()
        cancel, bridge, download = self._cancel, self._bridge, self._download

        def work() -> None:  # its own thread
            try:
                record, error = download(bridge.progress.emit, cancel), None
            except BaseException as exc:  # noqa: BLE001 - shown in the card
                record, error = None, exc
            try:
                bridge.finished.emit(record, error)
            except RuntimeError:  # the card is gone
                pass

        self.offer_button.setEnabled(False)
        self.pause_button.show()
        self.progress.setRange(0, 0)
        self.progress.show()
        self.status.setText("Connecting…")
        threading.Thread(target=work, name="first-run-download", daemon=True).start()

    def pause_download(self) -> None:
        if self._cancel is not None:
            self._cancel.cancel()

    def _on_progress(self, p) -> None:
        from core.llm.gguf_info import human_size

        if p.total:
            self.progress.setRange(0, 1000)
            self.progress.setValue(int(1000 * p.downloaded / p.total))
        total = f" of {human_size(p.total)}" if p.total else ""
        self.status.setText(f"Downloading: {human_size(p.downloaded)}{total}")

    def _on_finished(self, record, error) -> None:
        paused = self._cancel is not None and self._cancel.cancelled
        self._cancel = None
        self.pause_button.hide()
        self.progress.hide()
        if record is not None and not paused:
            self.record = record
            self.offer_button.setText("Downloaded")
            self.status.setText(f"{record.name} is ready: it answers your chats from now on.")
            return
        self.offer_button.setEnabled(True)
        if paused or error is None:
            self.offer_button.setText("Resume download")
            self.status.setText("Paused: what was downloaded is kept; the download resumes from there.")
        else:
            self.offer_button.setText("Try again")
            self.status.setText(f"The download failed: {error}")

    # --- closing ------------------------------------------------------------------------------
    def _close(self, skip: bool) -> None:
        self.pause_download()  # a running download stops; its partial file stays for a resume
        name = " ".join(self.name.text().split())
        self.done.emit(FirstRunResult(name, None if skip else self.record))
        self.accept()

    def reject(self) -> None:  # Esc or the window's close button: like Skip, the name kept
        self.pause_download()
        self.done.emit(FirstRunResult(" ".join(self.name.text().split()), self.record))
        super().reject()


def open_first_run(window, *, store=None, machine: tuple[int, int] | None = None) -> FirstRunDialog:
    """Open the card over `window` (a MainWindow): the offer from `store`'s catalog (default:
    the data dir's `ModelStore`) for `machine` = (available, total) RAM bytes (default:
    measured); its `done` goes to `finish_first_run`. GUI thread."""
    from core.catalog.fit import machine_memory
    from core.catalog.store import ModelStore

    store = store if store is not None else ModelStore()
    available, total = machine if machine is not None else machine_memory()
    offer = recommended_entry(store.catalog, available_ram=available, total_ram=total)
    download = None
    if offer is not None:
        entry_id = offer[0].id

        def download(progress, cancel):  # the card's download thread
            return store.download(entry_id, progress=progress, cancel=cancel)

    dialog = FirstRunDialog(window.settings, offer=offer, download=download, parent=window)
    dialog.done.connect(lambda result: finish_first_run(window, result))
    if window.assistant is not None:
        dialog.models_ready()
    else:  # the models are loading in the background: the card says which phase is running
        dialog.set_loading(getattr(window, "load_status", "") or "Loading the models…")
        window.loadStatusChanged.connect(dialog.set_loading)  # lines the window has taken in
        window.assistantReady.connect(dialog.models_ready)
        window.models.loadFailed.connect(dialog.models_failed)
    dialog.open()
    return dialog


def finish_first_run(window, result: FirstRunResult) -> None:
    """The card closed: save the name (and stop asking); a downloaded model becomes the answer
    model, loaded in the background like a change in Settings (`window.apply_settings`)."""
    import copy

    from core.catalog.roles import assign_role

    new = copy.deepcopy(window.settings)
    new.user_name, new.welcome_shown = result.name[:60].strip(), True
    if result.record is not None:
        assign_role(new, "answer", result.record.path, model_sha256=result.record.sha256)
    window.apply_settings(new)

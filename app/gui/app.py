"""Wiring the real components into the main window (`run`), and the shared Qt set-up.

`run()` opens the bank (SQLite only; the embedder is loaded lazily), purges the chats that
were in the trash longer than `Settings.trash_days`, shows the window at once, and loads both
models and the embedder in the background, in parallel (`make_assistant_factory`), with the
phase each is in on the status bar, the input's placeholder and the first-run card
(`LoadProgress`); each start-up phase is timed (app/gui/timings.py, `memory-r1 gui --timings`).
Nothing heavy (torch, transformers, llama_cpp, numpy, Pygments, the catalog's downloader) is
imported before the window shows: they load on the worker threads or on first use
(tests/app/gui/test_startup_timings.py checks it). The assistant, once built, resumes the manager turns an earlier run
left pending (the window's status bar says how many). At exit: the window has already
stopped any reply and let the manager drain; here the runner is shut down, the assistant and
models closed, temporary chats (in memory only) purged and the bank closed. Called on the
main thread."""

from __future__ import annotations

import logging
import sys
import threading
from typing import Callable

from core.config import Settings, settings_path
from core.errors import UserError

log = logging.getLogger(__name__)

APP_NAME = "Memory-R1"
GIL_SWITCH_S = 0.001
MANAGER_NICE = 10


def init_qt_app(argv: list[str] | None = None):
    """The QApplication (created once): Fusion style, which follows the system's light/dark
    colour scheme in Qt 6, the app icon and names."""
    from PySide6.QtGui import QIcon
    from PySide6.QtWidgets import QApplication

    from core.paths import assets_dir

    app = QApplication.instance()
    if app is not None and app.property("memory_r1_ready"):
        return app  # configured once: setting the style again on a running app can crash Qt
    if app is None:
        app = QApplication(argv if argv is not None else sys.argv[:1])
    app.setApplicationName(APP_NAME)
    app.setApplicationDisplayName(APP_NAME)
    app.setOrganizationName("memory-r1")
    app.setDesktopFileName("memory-r1")
    app.setStyle("Fusion")
    icon = assets_dir() / "icons" / "memory-r1.svg"
    if icon.exists():
        app.setWindowIcon(QIcon(str(icon)))
    # Worker threads running Python (the manager, the embedder's pre-processing) hold the GIL
    # for up to the switch interval (5 ms by default) each time the GUI thread asks for it.
    sys.setswitchinterval(GIL_SWITCH_S)
    app.setProperty("memory_r1_ready", True)
    return app


def build_assistant(bank, models, settings: Settings):
    """The `Assistant` over `models` (a `core.llm.modelset.ModelSet` with the answer and
    manager roles), built on a short-lived thread of lower OS priority (Linux nice
    MANAGER_NICE) so that the memory-manager thread it starts inherits that priority: the
    background memory work then yields the CPU to the GUI thread and to the reply the user is
    waiting for. Replies keep normal priority. Any thread."""
    from core.assistant.pipeline import Assistant

    from app.gui.tasks import lower_thread_priority

    out: dict = {}

    def build() -> None:
        lower_thread_priority(MANAGER_NICE)
        try:
            out["assistant"] = Assistant(bank, models=models, settings=settings, user_name=settings.speaker())
        except BaseException as exc:  # re-raised on the caller's thread
            out["error"] = exc

    thread = threading.Thread(target=build, name="assistant-init")
    thread.start()
    thread.join()
    if "error" in out:
        raise out["error"]
    return out["assistant"]


EMBEDDER_LABEL = "embedder"


class LoadProgress:
    """What the start-up load is doing, as one line for the status bar, the input's placeholder
    and the first-run card: "Loading the models… answer model: done · memory manager model:
    loading · embedder: loading". `set(part, state)` (any thread) reports the new line through
    `progress` and records `<part>_loaded` in `app.gui.timings` when a part is done."""

    PARTS = {"answer": "answer model", "manager": "memory manager model", "embedder": EMBEDDER_LABEL}

    def __init__(self, progress: Callable[[str], None], parts: tuple[str, ...] = ("answer", "manager", "embedder")):
        self._progress = progress
        self._lock = threading.Lock()
        self.states = {part: "waiting" for part in parts}

    def text(self) -> str:
        return "Loading the models… " + " · ".join(f"{self.PARTS.get(p, p)}: {s}" for p, s in self.states.items())

    def set(self, part: str, state: str) -> None:
        from app.gui import timings

        with self._lock:  # reported under the lock: the lines arrive in the order of the states
            if self.states.get(part) in ("done", "failed") and state == "loading":
                return
            self.states[part] = state
            if state == "done":
                timings.mark("embedder_loaded" if part == "embedder" else f"{part}_model_loaded")
            self._progress(self.text())


class _Prefetch:
    """Each role's first model attempt started at once on its own thread (`start`), handed to
    the `ModelSet` when it asks its loader for that spec (`load`), so the roles load in
    parallel while the `ModelSet` keeps its order, fallbacks and ownership. Loads never asked
    for (an earlier role failed) are closed by `close_unused`."""

    def __init__(self, loader: Callable, status: LoadProgress) -> None:
        from app.gui.tasks import BackgroundCall

        self._call = BackgroundCall
        self._loader, self._status = loader, status
        self._lock = threading.Lock()
        self._pending: list[tuple[str, object, object]] = []  # (role, spec, BackgroundCall)

    def start(self, role: str, spec) -> None:
        def work():
            self._status.set(role, "loading")
            try:
                backend = self._loader(spec)
            except BaseException:
                self._status.set(role, "failed")
                raise
            self._status.set(role, "done")
            return backend

        self._pending.append((role, spec, self._call(work, name=f"load-{role}")))

    def load(self, spec):  # the ModelSet's loader (its lock held)
        with self._lock:
            match = next((p for p in self._pending if p[1] == spec), None)
            if match is not None:
                self._pending.remove(match)
        if match is None:  # a fallback attempt: loaded here, now
            return self._loader(spec)
        return match[2].result()

    def close_unused(self) -> None:
        with self._lock:
            unused, self._pending = self._pending, []
        for _role, _spec, call in unused:
            try:
                backend = call.result()
            except BaseException:  # noqa: BLE001 - its error is not the one reported
                continue
            try:
                backend.close()
            except Exception:  # noqa: BLE001 - best effort
                log.warning("closing an unused model failed", exc_info=True)


def make_assistant_factory(bank, loader: Callable | None = None) -> Callable:
    """`factory(settings, progress) -> Assistant`, run on the window's model worker thread.

    The answer model, the manager model and the embedder (the bank's: in the app
    `core.embeddings.default_embedder()`, whichever implementation it returns) load at the same
    time, each on its own thread (`app.gui.tasks.BackgroundCall`; llama.cpp's loading releases
    the GIL), with the phase each is in reported through `progress` (`LoadProgress`). The
    models are a `ModelSet.for_settings` (each role its own backend, the shipped adapter when
    the settings allow one, the fallbacks reported through `progress`), owned by the returned
    assistant's `models`. When anything fails, what was loaded is closed and the error raised.
    `loader(spec)` replaces `core.llm.runtime.load_backend` (tests). Made before the window is
    shown, it imports nothing: `core.llm` is imported by the factory, on the worker.
    """

    def factory(settings: Settings, progress: Callable[[str], None]):
        from core.llm.modelset import ModelSet, default_loader, role_attempts

        from app.gui.tasks import BackgroundCall

        status = LoadProgress(progress)
        prefetch = _Prefetch(loader or default_loader, status)

        def warm_embedder():
            status.set("embedder", "loading")
            try:
                bank.embed(["warm-up"])
            except BaseException:
                status.set("embedder", "failed")
                raise
            status.set("embedder", "done")

        embedder = BackgroundCall(warm_embedder, name="load-embedder")
        for role in ("answer", "manager"):
            prefetch.start(role, role_attempts(settings, role)[0])

        def model_progress(text: str) -> None:  # the ModelSet's own "Loading the … model…" lines are in `status`
            if not text.startswith("Loading the "):
                progress(text)

        models = ModelSet.for_settings(settings, loader=prefetch.load)
        try:
            try:
                models.load("answer", "manager", progress=model_progress)
            finally:
                prefetch.close_unused()
            for role in ("answer", "manager"):  # a fallback model: done now
                status.set(role, "done")
            embedder.result()
            progress("Ready.")
            return build_assistant(bank, models, settings)
        except BaseException:
            models.close()
            embedder.wait()
            raise

    return factory


def _fatal_dialog(text: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.critical(None, APP_NAME, text)


def run(verbose: bool = False, *, timings: str | None = None, exit_when_ready: bool = False) -> int:
    """Open the app and run the event loop; returns the process exit code.

    `timings`: "-" prints the start-up phases (app/gui/timings.py) on stderr once the window is
    usable (or the load failed), a path writes them there as JSON. `exit_when_ready` closes the
    window as soon as it is usable (exit code 0) or the load failed (1): the start-up benchmark."""
    from app.gui import timings as phase_timings

    phase_timings.RECORDER.dest = timings
    from PySide6.QtCore import QTimer

    from app.logs import setup_logging
    from core.memory.bank import MemoryBank

    from app.gui.dialogs import install_excepthook
    from app.gui.main_window import MainWindow

    phase_timings.mark("imports_done")
    log_path = setup_logging(verbose=verbose)
    app = init_qt_app()
    settings = Settings.load(settings_path())
    try:
        bank = MemoryBank.open()
    except UserError as exc:  # locked, corrupt, too new: one sentence, the file untouched
        _fatal_dialog(str(exc))
        return exc.exit_code
    try:
        try:
            bank.chats.purge_temporary()  # rows an older Memory-R1 left in the file
            purge_trash(bank, settings)
        except UserError as exc:  # e.g. `serve` holds the write lock: purge at the next start
            log.warning("start-up purge skipped: %s", exc)
        window = MainWindow(bank, settings, assistant_factory=make_assistant_factory(bank),
                            log_path=log_path)
        hook = install_excepthook(lambda: window, log_path)
        window.show()
        QTimer.singleShot(0, lambda: phase_timings.mark("window_shown"))  # the first turn of the event loop
        if exit_when_ready:
            window.assistantReady.connect(lambda: QTimer.singleShot(0, window.close))
            window.models.loadFailed.connect(lambda _exc: (setattr(window, "_force_close", True),
                                                           QTimer.singleShot(0, lambda: app.exit(1))))
        code = app.exec()
        hook.uninstall()
        shutdown_window(window)
        bank.chats.purge_temporary()
        return code
    finally:
        bank.close()


def purge_trash(bank, settings: Settings) -> int:
    """Permanently remove the chats deleted more than `settings.trash_days` days ago (their
    messages too; the memories taken from them stay); returns how many. Any thread."""
    purged = bank.chats.purge_deleted(settings.trash_days)
    if purged:
        log.info("purged %d chat(s) that were in the trash for over %d days", purged, settings.trash_days)
    return purged


def shutdown_window(window) -> None:
    """After the event loop: stop the window's task runner, then close its assistant and the
    models it owns (each backend once). Main thread."""
    window.runner.shutdown(10_000)
    assistant = window.assistant
    if assistant is not None:
        assistant.close()
        assistant.models.close()


__all__ = ["run", "init_qt_app", "make_assistant_factory", "build_assistant", "shutdown_window", "purge_trash"]

"""Wiring the real components into the main window (`run`), and the shared Qt set-up.

`run()` opens the bank (SQLite only; the embedder is loaded lazily), purges the chats that
were in the trash longer than `Settings.trash_days`, shows the window at once, and loads the
embedder and both models in the background with progress in the status bar
(`assistant_factory`); the assistant, once built, resumes the manager turns an earlier run
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


def make_assistant_factory(bank, loader: Callable | None = None) -> Callable:
    """`factory(settings, progress) -> Assistant`, run on the window's model worker thread.

    The models are a `ModelSet.for_settings` (each role its own backend, the shipped adapter
    when the settings allow one, the fallbacks reported through `progress`), owned by the
    returned assistant's `models`; the embedder is warmed first so the first reply is quick.
    `loader(spec)` replaces `core.llm.runtime.load_backend` (tests).
    """
    from core.llm.modelset import ModelSet

    def factory(settings: Settings, progress: Callable[[str], None]):
        progress("Loading the embedder…")
        bank.embed(["warm-up"])
        models = ModelSet.for_settings(settings, loader=loader).load("answer", "manager", progress=progress)
        progress("Ready.")
        try:
            return build_assistant(bank, models, settings)
        except BaseException:
            models.close()
            raise

    return factory


def _fatal_dialog(text: str) -> None:
    from PySide6.QtWidgets import QMessageBox

    QMessageBox.critical(None, APP_NAME, text)


def run(verbose: bool = False) -> int:
    """Open the app and run the event loop; returns the process exit code."""
    from app.logs import setup_logging
    from core.memory.bank import MemoryBank

    from app.gui.dialogs import install_excepthook
    from app.gui.main_window import MainWindow

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

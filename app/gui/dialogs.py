"""Small dialogs shared by the windows: confirmation, errors, the crash dialog, the excepthook.

Every dialog is opened with `open()` (window-modal, non-blocking), never `exec()`: the event
loop keeps running (streaming continues behind a dialog) and tests can find and close them.
Errors split in two (core/errors.py): a `UserError` gets a plain dialog with its sentence; any
other exception is a bug: its traceback goes to the log and a crash dialog names the log file.
GUI thread only, except `install_excepthook`'s hook, which may be called from any thread and
forwards to the GUI thread.
"""

from __future__ import annotations

import logging
import sys
import threading
import traceback
from pathlib import Path
from typing import Callable

from PySide6.QtCore import QObject, Qt, Signal
from PySide6.QtWidgets import QApplication, QMessageBox, QWidget

from core.errors import UserError

log = logging.getLogger(__name__)


def confirm(parent: QWidget, title: str, text: str, on_yes: Callable[[], None], *,
            yes_text: str = "OK", name: str = "confirm", destructive: bool = False) -> QMessageBox:
    """Ask a yes/cancel question without blocking; `on_yes()` runs only if the user agrees."""
    box = QMessageBox(QMessageBox.Icon.Warning if destructive else QMessageBox.Icon.Question,
                      title, text, QMessageBox.StandardButton.NoButton, parent)
    box.setObjectName(name)
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    yes = box.addButton(yes_text, QMessageBox.ButtonRole.AcceptRole)
    cancel = box.addButton(QMessageBox.StandardButton.Cancel)
    box.setDefaultButton(cancel if destructive else yes)
    yes.clicked.connect(on_yes)
    box.open()
    return box


def show_user_error(parent: QWidget | None, exc: BaseException | str, title: str = "Memory-R1") -> QMessageBox:
    """A plain dialog with the one sentence the user can act on."""
    box = QMessageBox(QMessageBox.Icon.Warning, title, str(exc), QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("userError")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.open()
    return box


def show_crash(parent: QWidget | None, exc: BaseException, log_path: Path | None) -> QMessageBox:
    """The bug dialog: what happened in one line, where the full report is, the traceback folded."""
    where = f"\n\nThe details were written to the log file:\n{log_path}" if log_path else ""
    box = QMessageBox(QMessageBox.Icon.Critical, "Memory-R1 hit a bug",
                      f"Something went wrong inside Memory-R1: {type(exc).__name__}: {exc}"
                      f"{where}\n\nYour chats and memories are saved; you can keep working.",
                      QMessageBox.StandardButton.Ok, parent)
    box.setObjectName("crashDialog")
    box.setAttribute(Qt.WidgetAttribute.WA_DeleteOnClose)
    box.setDetailedText("".join(traceback.format_exception(type(exc), exc, exc.__traceback__)))
    box.open()
    return box


def report_error(parent: QWidget | None, exc: BaseException, log_path: Path | None) -> QMessageBox:
    """Route an exception to the right dialog (UserError: plain; anything else: crash)."""
    if isinstance(exc, UserError):
        log.info("user error: %s", exc)
        return show_user_error(parent, exc)
    return show_crash(parent, exc, log_path)


class _HookBridge(QObject):
    raised = Signal(object)


class ExceptHook:
    """`sys.excepthook` (and `threading.excepthook`) that logs a bug and shows the crash dialog.

    Installed by `install_excepthook`; `uninstall()` restores the previous hooks.
    """

    def __init__(self, parent_getter: Callable[[], QWidget | None], log_path: Path | None) -> None:
        self._parent_getter = parent_getter
        self._log_path = log_path
        self._bridge = _HookBridge()
        self._bridge.raised.connect(self._show, Qt.ConnectionType.QueuedConnection)
        self._old_sys = sys.excepthook
        self._old_threading = threading.excepthook
        self.shown: list[BaseException] = []

    def install(self) -> "ExceptHook":
        sys.excepthook = self._sys_hook
        threading.excepthook = self._thread_hook
        return self

    def uninstall(self) -> None:
        sys.excepthook = self._old_sys
        threading.excepthook = self._old_threading

    def _sys_hook(self, etype, value, tb) -> None:
        if issubclass(etype, KeyboardInterrupt):
            QApplication.quit()
            return
        if value is None:
            value = etype()
        value.__traceback__ = tb
        if not isinstance(value, UserError):
            log.error("unhandled exception", exc_info=(etype, value, tb))
        self._bridge.raised.emit(value)

    def _thread_hook(self, args) -> None:
        if args.exc_value is not None:
            self._sys_hook(args.exc_type, args.exc_value, args.exc_traceback)

    def _show(self, exc: BaseException) -> None:
        self.shown.append(exc)
        report_error(self._parent_getter(), exc, self._log_path)


def install_excepthook(parent_getter: Callable[[], QWidget | None], log_path: Path | None) -> ExceptHook:
    return ExceptHook(parent_getter, log_path).install()

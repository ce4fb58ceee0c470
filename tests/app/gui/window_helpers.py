"""Helpers the GUI start-up tests share: a MainWindow that loads its assistant through an
`assistant_factory` (the app's background-loading path; the `make_window` fixture in
conftest.py takes a ready assistant instead) and its real close path."""

from __future__ import annotations


def window_with_factory(qtbot, bank, data_home, factory, settings, **kw):
    """A shown MainWindow over `bank` whose assistant `factory(settings, progress)` builds on
    the model worker; close it with `close_window`."""
    from app.gui.main_window import MainWindow

    window = MainWindow(bank, settings, assistant_factory=factory, settings_file=data_home / "settings.json",
                        log_path=data_home / "logs" / "memory-r1.log", **kw)
    window.show()
    return window


def close_window(qtbot, window, *, close_models: bool = False) -> None:
    """Close `window` through its real close path, then its assistant (and, with
    `close_models`, the assistant's models), and let deleteLater run."""
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    if window.assistant is not None:
        window.assistant.close()
        if close_models:
            window.assistant.models.close()
    window.deleteLater()
    qtbot.wait(1)

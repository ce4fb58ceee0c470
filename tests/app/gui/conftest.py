"""GUI test fixtures: Qt warnings fail the test; a window over a real bank (SQLite +
sqlite-vec, HashEmbedder) and the real pipeline on scripted FakeBackends.

The pipeline's manager runs on its own thread, exactly as in the app; tests wait on signals
(`qtbot.waitSignal` / `waitUntil`), never sleep.
"""

from __future__ import annotations


import pytest

pytest.importorskip("PySide6")

from PySide6.QtCore import QtMsgType, qInstallMessageHandler  # noqa: E402

# Messages of the offscreen platform plugin itself, not of our code.
_PLATFORM_NOISE = (
    "This plugin does not support propagateSizeHints()",
    "This plugin does not support raise()",
    "This plugin does not support grabbing the keyboard",
    "QFont::setPointSizeF: Point size <= 0",
)


@pytest.fixture(autouse=True)
def fail_on_qt_warnings(qapp):
    """Any Qt warning, critical or fatal message emitted during the test fails it."""
    seen: list[str] = []

    def handler(mode, context, message):
        if mode in (QtMsgType.QtWarningMsg, QtMsgType.QtCriticalMsg, QtMsgType.QtFatalMsg):
            if not any(noise in message for noise in _PLATFORM_NOISE):
                seen.append(f"{mode.name}: {message} ({context.file}:{context.line})")

    previous = qInstallMessageHandler(handler)
    yield seen
    qInstallMessageHandler(previous)
    assert not seen, "Qt warnings:\n" + "\n".join(seen)


@pytest.fixture
def answer_backend():
    from core.fakes import FakeBackend

    return FakeBackend(default="Hello! I am **fine**, thanks for asking.", chunk=3)


@pytest.fixture
def manager_backend():
    from core.fakes import FakeBackend, router

    return FakeBackend(default=router(facts=lambda text: ["User has a dog named Rex"] if "dog" in text else []))


@pytest.fixture
def make_window(qtbot, bank, data_home):
    """`make_window(answer_backend, manager_backend, **kw)` -> a shown MainWindow; at teardown it
    is closed through its real close path (stop reply, drain manager) and the assistant closed."""
    from core.config import Settings
    from core.assistant.pipeline import Assistant

    from app.gui.main_window import MainWindow

    made = []

    def make(answer, manager, *, settings=None, **kw):
        settings = settings or Settings(welcome_shown=True)
        assistant = Assistant(bank, answer, manager, settings=settings)
        window = MainWindow(bank, settings, assistant=assistant, settings_file=data_home / "settings.json",
                            log_path=data_home / "logs" / "memory-r1.log", **kw)
        window.show()  # not qtbot.addWidget: teardown below closes it through its real close path
        qtbot.waitUntil(lambda: window.memory.count_label.text() != "")
        made.append((window, assistant))
        return window

    yield make
    for window, assistant in made:
        window.close()
        qtbot.waitUntil(lambda w=window: not w.isVisible(), timeout=30_000)
        assistant.close()
        window.deleteLater()
    qtbot.wait(1)  # let deleteLater run

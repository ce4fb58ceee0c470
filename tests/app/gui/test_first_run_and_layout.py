"""The first-run card (name, small-model sentence, the catalog model that fits, a faked
download with pause/resume), the input placeholder after loading, and the window layout: the
first size fits the screen, size/splitter/panels are restored, the View toggles, 800x600."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QRect
from PySide6.QtGui import QGuiApplication
from PySide6.QtWidgets import QApplication, QDialogButtonBox

from app.gui.first_run import FirstRunDialog, recommended_entry
from app.gui.layout import first_size, layout_path, splitter_sizes
from core.catalog.catalog import load_catalog
from core.catalog.download import Progress
from core.config import Settings
from core.fakes import FakeBackend
from tests.app.gui.window_helpers import close_window, window_with_factory

GB = 1 << 30


def _first_run_card(qtbot, window) -> FirstRunDialog:
    qtbot.waitUntil(lambda: window.findChild(FirstRunDialog) is not None)
    return window.findChild(FirstRunDialog)


# --- first run ------------------------------------------------------------------------------
def test_recommended_entry_is_the_largest_that_fits_this_ram():
    entries = load_catalog()
    small, _fit = recommended_entry(entries, available_ram=3 * GB, total_ram=4 * GB)
    big, _fit = recommended_entry(entries, available_ram=28 * GB, total_ram=32 * GB)
    assert not small.embedded and not big.embedded
    assert small.planning_size < big.planning_size
    assert small.planning_size < 1.5 * GB  # ~1 GB files on a 4 GB machine
    assert big.parameters == "3B"  # not a 7B/8B that crawls on a CPU
    assert recommended_entry(entries, available_ram=200 << 20, total_ram=1 * GB) is None


def test_first_run_asks_the_name_and_memories_use_it(qtbot, bank, data_home):
    from core.assistant.pipeline import Assistant
    from core.fakes import router

    manager = FakeBackend(default=router(facts=lambda text: ["Sam has a dog named Rex"] if "dog" in text else []))

    def factory(settings, progress):
        return Assistant(bank, FakeBackend(default="hi"), manager, settings=settings)

    window = window_with_factory(qtbot, bank, data_home, factory, Settings())
    card = _first_run_card(qtbot, window)
    text = " ".join(w.text() for w in card.findChildren(type(card.status)))
    assert "small embedded model" in text and "trying it out" in text
    card.name.setText("  Sam ")
    card.skip_button.click()
    saved = Settings.load(data_home / "settings.json")
    assert saved.user_name == "Sam" and saved.welcome_shown
    assert saved.answer_model.path is None  # skipped: the embedded model stays
    qtbot.waitUntil(lambda: window.assistant is not None, timeout=10_000)
    assert window.assistant.user_name == "Sam"
    with qtbot.waitSignal(window.memoryNotice, timeout=10_000):
        window.chat.input.setPlainText("I have a dog named Rex")
        window.chat.submit()
    assert [(m.speaker, m.text) for m in bank.list()] == [("Sam", "Sam has a dog named Rex")]
    # the placeholder no longer says the models are loading
    assert "Loading" not in window.chat.input.placeholderText()
    assert window.chat.input.placeholderText().startswith("Message Memory-R1")
    close_window(qtbot, window)
    # a second start: no card
    window = window_with_factory(qtbot, bank, data_home, factory, saved)
    qtbot.wait(50)
    assert window.findChild(FirstRunDialog) is None
    close_window(qtbot, window)


def test_the_placeholder_says_so_when_loading_failed(qtbot, bank, data_home):
    from core.errors import ModelLoadError

    def factory(settings, progress):
        raise ModelLoadError("no such file")

    window = window_with_factory(qtbot, bank, data_home, factory, Settings(welcome_shown=True))
    assert "Loading the models" in window.chat.input.placeholderText()
    with qtbot.waitSignal(window.models.loadFailed, timeout=10_000):
        pass
    assert "No model could be loaded" in window.chat.input.placeholderText()
    close_window(qtbot, window)


class _FakeStoreDownload:
    """Two chunks; a cancel after the first keeps the partial (as ModelStore.download does)."""

    def __init__(self, record):
        self.record, self.have, self.calls = record, 0, 0

    def __call__(self, progress, cancel):
        from core.errors import Cancelled

        self.calls += 1
        while self.have < 2:
            if cancel.cancelled:
                raise Cancelled("paused")
            self.have += 1
            progress(Progress(downloaded=self.have * 50, total=100, speed_bps=10.0, eta_s=1.0))
            if self.have == 1 and self.calls == 1:
                cancel.cancel()  # the user presses Pause after the first chunk
        return self.record


def test_the_offered_model_downloads_with_progress_pauses_resumes_and_becomes_the_answer_model(
        qtbot, make_window, answer_backend, manager_backend, data_home, tmp_path):
    from core.catalog.store import ModelRecord

    window = make_window(answer_backend, manager_backend)
    entries = load_catalog()
    offer = recommended_entry(entries, available_ram=6 * GB, total_ram=8 * GB)
    gguf = tmp_path / offer[0].filename
    record = ModelRecord(id=offer[0].id, name=offer[0].name, path=str(gguf), source="download", managed=True,
                         size_bytes=100, sha256="ab" * 32)
    fake = _FakeStoreDownload(record)
    card = FirstRunDialog(window.settings, offer=offer, download=fake, parent=window)
    from app.gui.first_run import finish_first_run

    results = []
    card.done.connect(results.append)
    card.done.connect(lambda r: finish_first_run(window, r))
    card.open()
    assert offer[0].name in card.offer_button.text()
    card.offer_button.click()
    qtbot.waitUntil(lambda: card.offer_button.text() == "Resume download", timeout=5_000)
    assert fake.have == 1 and "Paused" in card.status.text()
    card.offer_button.click()  # resumes from the partial
    qtbot.waitUntil(lambda: card.record is not None, timeout=5_000)
    assert fake.have == 2 and fake.calls == 2
    card.name.setText("Sam")
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as swap:  # the file is fake: load fails
        card.start_button.click()
    assert results[0].name == "Sam" and results[0].record is record
    assert swap.args == ["failed"]  # a fake file: reported, the embedded model stays
    assert Settings.load(data_home / "settings.json").user_name == "Sam"
    window.errors.clear()


# --- layout ---------------------------------------------------------------------------------
def test_first_size_is_at_most_nine_tenths_of_the_screen():
    assert first_size(QRect(0, 0, 1280, 800)).toTuple() == (1152, 720)
    assert first_size(QRect(0, 0, 1024, 600)).toTuple() == (921, 540)


def test_the_first_window_fits_the_screen_it_opens_on(qtbot, make_window, answer_backend, manager_backend):
    window = make_window(answer_backend, manager_backend)
    available = (window.screen() or QGuiApplication.primaryScreen()).availableGeometry()
    assert window.width() <= available.width() * 0.9 + 1
    assert window.height() <= available.height() * 0.9 + 1
    assert available.contains(window.frameGeometry().topLeft())
    bar = window.statusBar()
    assert bar.isVisible() and bar.geometry().bottom() <= window.height()


def test_on_a_1280x800_screen_the_first_layout_shows_the_memory_panel_without_a_sideways_scrollbar(
        qtbot, make_window, answer_backend, manager_backend):
    window = make_window(answer_backend, manager_backend)
    size = first_size(QRect(0, 0, 1280, 800))
    window.resize(size)
    window.splitter.setSizes(splitter_sizes(size.width()))
    qtbot.waitUntil(lambda: window.memory_box.width() == window.splitter.sizes()[2])
    assert window.memory.minimumSizeHint().width() <= window.memory_box.viewport().width()
    bar = window.memory_box.horizontalScrollBar()
    qtbot.waitUntil(lambda: bar.maximum() == 0 and not bar.isVisible())  # once the scroll area laid out


def test_size_splitter_and_panels_are_restored(qtbot, bank, data_home, make_window, answer_backend,
                                               manager_backend):
    window = make_window(answer_backend, manager_backend)
    window.resize(760, 520)
    qtbot.wait(20)
    window.splitter.setSizes([160, 340, 200])
    sizes = window.splitter.sizes()
    window.panel_actions["chats"].trigger()  # View > Chat list off
    assert not window.conversations.isVisible() and not window.panel_shown("chats")
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    saved = json.loads(layout_path(data_home / "settings.json").read_text())
    assert saved["panels"] == {"chats": False, "memory": True}

    again = make_window(answer_backend, manager_backend)
    assert (again.width(), again.height()) == (760, 520)
    assert not again.conversations.isVisible() and not again.panel_actions["chats"].isChecked()
    assert again.memory_box.isVisible()
    again.panel_actions["chats"].trigger()
    assert again.conversations.isVisible()
    assert again.splitter.sizes()[2] == sizes[2]


def test_a_broken_layout_file_means_the_default_layout(qtbot, data_home, make_window, answer_backend,
                                                       manager_backend):
    layout_path(data_home / "settings.json").write_text("{not json")
    window = make_window(answer_backend, manager_backend)
    assert window.panel_shown("chats") and window.panel_shown("memory")
    assert window.width() > 300


def test_view_shortcuts_collapse_the_panels(qtbot, make_window, answer_backend, manager_backend):
    window = make_window(answer_backend, manager_backend)
    actions = window.panel_actions
    assert actions["chats"].shortcut().toString() == "Ctrl+Shift+L"
    assert actions["memory"].shortcut().toString() == "Ctrl+Shift+M"
    assert actions["memory"].isCheckable() and actions["memory"].isChecked()
    window.activateWindow()
    qtbot.keyClick(window.chat.input, "M", modifier=_ctrl_shift())
    assert not window.memory_box.isVisible() and not actions["memory"].isChecked()
    window.focus_memory_search()  # Ctrl+F brings it back
    assert window.memory_box.isVisible() and actions["memory"].isChecked()


def _ctrl_shift():
    from PySide6.QtCore import Qt

    return Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier


@pytest.mark.parametrize("memory_shown", [True, False])
def test_usable_at_800x600(qtbot, make_window, manager_backend, memory_shown):
    answer = FakeBackend(default="A reply long enough to wrap over several lines in a narrow window " * 4, chunk=8)
    window = make_window(answer, manager_backend)
    window.set_panel_shown("memory", memory_shown)
    window.resize(800, 600)
    for text in ("hello there", "a second message with a rather long line of text to wrap " * 3):
        with qtbot.waitSignal(window.replyFinished, timeout=10_000):
            window.chat.input.setPlainText(text)
            window.chat.submit()
    QApplication.processEvents()
    qtbot.wait(50)
    assert window.width() <= 800 and window.height() <= 600
    viewport = window.chat.scroll.viewport().width()
    assert window.chat.messages
    for bubble in window.chat.messages:
        assert bubble.width() <= viewport, (bubble.objectName(), bubble.width(), viewport)
        assert bubble.minimumSizeHint().width() <= viewport
    chat_input = window.chat.input
    assert chat_input.isVisible() and chat_input.width() > 150
    bottom = chat_input.mapTo(window, chat_input.rect().bottomLeft()).y()
    assert bottom <= window.statusBar().geometry().top()
    assert window.chat.send_button.isVisible()


def test_the_name_can_be_changed_in_settings(qtbot, make_window, answer_backend, manager_backend, data_home):
    from app.gui.settings_dialog import SettingsDialog

    window = make_window(answer_backend, manager_backend)
    window.open_settings()
    dialog = window.findChild(SettingsDialog)
    assert dialog.user_name.text() == ""
    dialog.user_name.setText(" Ana  Lúcia ")
    dialog.findChild(QDialogButtonBox).button(QDialogButtonBox.StandardButton.Ok).click()
    assert Settings.load(data_home / "settings.json").user_name == "Ana Lúcia"
    assert window.assistant.user_name == "Ana Lúcia"


def test_a_bad_name_in_the_settings_file_falls_back_to_the_defaults():
    assert Settings.from_dict({"user_name": "x" * 61}).user_name == ""
    assert Settings.from_dict({"user_name": 3}).speaker() == "User"
    assert Settings.from_dict({"user_name": "Sam"}).speaker() == "Sam"

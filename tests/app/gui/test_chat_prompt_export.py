"""A chat's own system prompt, the default one in Settings, and exporting a chat, through the
conversation list's menu and the real dialogs (scripted models, real bank)."""

from __future__ import annotations

import json

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QFileDialog, QInputDialog

from core.config import Settings
from core.fakes import FakeBackend

from app.gui.settings_dialog import SettingsDialog


def _send(qtbot, window, text: str) -> None:
    window.chat.input.setPlainText(text)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)


def _action(window, cid: int, text: str):
    menu = window.conversations.context_menu(window.conversations.model.conversation_at(
        window.conversations.model.row_of(cid)))
    return next(a for a in menu.actions() if a.text() == text)


def _shown(window, cls, name):
    return [d for d in window.findChildren(cls, name) if d.isVisible()]


def test_chat_system_prompt_from_the_list_menu_reaches_the_prompt(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(default="Arr!")
    window = make_window(answer, manager_backend, settings=Settings(welcome_shown=True, system_prompt="Be kind."))
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Hello")
    assert answer.calls[-1]["messages"][0]["content"].endswith("Be kind.")
    cid = window.current_conversation.id
    qtbot.waitUntil(lambda: window.conversations.model.row_of(cid) is not None)
    _action(window, cid, "System prompt…").trigger()
    qtbot.waitUntil(lambda: bool(_shown(window, QInputDialog, "chatSystemPrompt")))
    dialog = _shown(window, QInputDialog, "chatSystemPrompt")[0]
    dialog.setTextValue("Talk like a pirate.")
    dialog.accept()
    qtbot.waitUntil(lambda: bank.chats.system_prompt(cid) == "Talk like a pirate.")
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Again")
    system = answer.calls[-1]["messages"][0]["content"]
    assert system.endswith("Talk like a pirate.") and "Be kind." not in system
    assert [w.raw_text for w in window.chat.messages] == ["Hello", "Arr!", "Again", "Arr!"]  # not shown as a bubble


def test_settings_dialog_edits_the_default_system_prompt_and_top_p(qtbot, tmp_path):
    dialog = SettingsDialog(Settings(), tmp_path)
    qtbot.addWidget(dialog)
    dialog.system_prompt.setPlainText("  Answer in French.  ")
    dialog.top_p.setValue(0.8)
    new = dialog.result_settings()
    new.validate()
    assert new.system_prompt == "Answer in French." and new.top_p == 0.8
    assert new.gen_params().top_p == 0.8


def test_export_a_chat_from_the_list_menu(qtbot, make_window, answer_backend, manager_backend, tmp_path):
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Hi there")
    cid = window.current_conversation.id
    qtbot.waitUntil(lambda: window.conversations.model.row_of(cid) is not None)
    _action(window, cid, "Export as JSON…").trigger()
    qtbot.waitUntil(lambda: bool(_shown(window, QFileDialog, "exportChat")))
    dialog = _shown(window, QFileDialog, "exportChat")[0]
    target = tmp_path / "exported.json"
    dialog.fileSelected.emit(str(target))
    dialog.reject()
    qtbot.waitUntil(target.exists)
    data = json.loads(target.read_text(encoding="utf-8"))
    assert [m["content"] for m in data["messages"]] == ["Hi there", "Hello! I am **fine**, thanks for asking."]
    qtbot.waitUntil(lambda: "Chat exported to" in window.statusBar().currentMessage())
    # File > Export chat as Markdown… exports the shown chat
    md = tmp_path / "chat.md"
    window.export_chat_actions["markdown"].trigger()
    qtbot.waitUntil(lambda: bool(_shown(window, QFileDialog, "exportChat")))
    dialog = _shown(window, QFileDialog, "exportChat")[0]
    dialog.fileSelected.emit(str(md))
    dialog.reject()
    qtbot.waitUntil(md.exists)
    assert "## You\n\nHi there" in md.read_text(encoding="utf-8")

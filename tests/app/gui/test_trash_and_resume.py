"""The trash through the real widgets ("Deleted chats": restore, "Delete forever" with a
confirmation), the grace-period setting and start-up purge, and the start-up notice for
manager turns an earlier run left pending."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from core.config import Settings

from app.gui.app import purge_trash
from app.gui.settings_dialog import SettingsDialog


def _send(qtbot, window, text: str) -> None:
    window.chat.input.setPlainText(text)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)


def _dialog(window, name: str) -> QMessageBox:
    [box] = [b for b in window.findChildren(QMessageBox, name) if b.isVisible()]
    return box


def _titles(window) -> list[str]:
    model = window.conversations.model
    return [model.conversation_at(r).title for r in range(model.rowCount())]


def _delete_current(qtbot, window, title: str) -> int:
    qtbot.waitUntil(lambda: title in _titles(window))
    cid = window.conversations.model.conversation_at(_titles(window).index(title)).id
    window.conversations.ask_delete(cid)
    [delete] = [b for b in _dialog(window, "confirmDeleteChat").buttons() if b.text() == "Delete"]
    delete.click()
    qtbot.waitUntil(lambda: title not in _titles(window))
    return cid


def test_delete_forever_from_the_trash_with_confirmation(qtbot, make_window, answer_backend, manager_backend,
                                                          bank):
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "I have a dog named Rex")
    assert window.assistant.wait_idle(5)
    memories = [m.id for m in bank.list()]
    assert memories  # the manager learnt about the dog
    cid = _delete_current(qtbot, window, "I have a dog named Rex")
    panel = window.conversations
    assert not panel.purge_button.isVisible()
    qtbot.mouseClick(panel.trash_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: _titles(window) == ["I have a dog named Rex"])
    assert panel.purge_button.isVisible() and not panel.new_button.isEnabled()
    panel.view.setCurrentIndex(panel.model.index(0))
    assert window.current_conversation is None  # choosing a chat in the trash does not open it
    panel.purge_button.click()
    _dialog(window, "confirmPurgeChat").button(QMessageBox.StandardButton.Cancel).click()
    assert [c.id for c in bank.chats.deleted_conversations()] == [cid]
    panel.purge_button.click()
    [forever] = [b for b in _dialog(window, "confirmPurgeChat").buttons() if b.text() == "Delete forever"]
    forever.click()
    qtbot.waitUntil(lambda: _titles(window) == [])
    assert bank.chats.list_conversations(include_deleted=True) == []
    with bank.reader() as conn:
        assert conn.execute("SELECT count(*) FROM messages").fetchone()[0] == 0
    assert [m.id for m in bank.list()] == memories  # the memories that came from it stay
    qtbot.mouseClick(panel.trash_button, Qt.MouseButton.LeftButton)
    assert panel.new_button.isEnabled() and not panel.purge_button.isVisible()


def test_restore_from_the_trash(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Keep me")
    cid = _delete_current(qtbot, window, "Keep me")
    panel = window.conversations
    panel.trash_button.click()
    qtbot.waitUntil(lambda: _titles(window) == ["Keep me"])
    panel.view.setCurrentIndex(panel.model.index(0))
    panel.restore_button.click()
    qtbot.waitUntil(lambda: _titles(window) == [])
    assert [c.id for c in bank.chats.list_conversations()] == [cid]
    panel.trash_button.click()
    qtbot.waitUntil(lambda: _titles(window) == ["Keep me"])


def test_the_grace_period_setting_and_the_start_up_purge(qtbot, bank, data_home):
    dialog = SettingsDialog(Settings(), data_home)
    qtbot.addWidget(dialog)
    assert dialog.trash_days.value() == 30
    dialog.trash_days.setValue(7)
    assert dialog.result_settings().trash_days == 7
    old, recent = (bank.chats.create_conversation(t) for t in ("Old", "Recent"))
    for conv, days in ((old, 8), (recent, 6)):
        bank.chats.delete_conversation(conv.id)
        when = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")
        with bank.reader() as conn:
            conn.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (when, conv.id))
    assert purge_trash(bank, dialog.result_settings()) == 1
    assert [c.id for c in bank.chats.deleted_conversations()] == [recent.id]
    assert Settings.from_dict({"trash_days": -1}).trash_days == 30  # invalid: defaults


def test_turns_left_pending_are_remembered_at_start_with_a_notice(qtbot, make_window, answer_backend, bank):
    from core.fakes import FakeBackend, router

    # slow enough that the notice is still up when the test looks (the first turn's
    # "Memory updated" replaces it)
    manager_backend = FakeBackend(default=router(facts=lambda text: ["User has a dog named Rex"] if "Rex" in text
                                                 else []), delay=0.02)
    cid = bank.chats.create_conversation("Earlier").id
    for text in ("I have a dog named Rex", "The dog is two years old"):
        bank.chats.add_message(cid, "user", text, queue_for_manager=True, speaker="User", said_at="1 May 2025")
    window = make_window(answer_backend, manager_backend)
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "Remembering 2 earlier messages…")
    qtbot.waitUntil(lambda: bank.chats.pending_turns() == [], timeout=10_000)
    assert [m.text for m in bank.list()] == ["User has a dog named Rex"]

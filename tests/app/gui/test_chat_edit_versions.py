"""Edit and resend, reply versions (< 1/3 >) and the reply's statistics, through the real
widgets, the real pipeline and a real bank (scripted models)."""

from __future__ import annotations

from PySide6.QtCore import Qt

from core.fakes import FakeBackend, router


def _send(qtbot, window, text: str) -> None:
    window.chat.input.setPlainText(text)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)


def _facts(text: str) -> list[str]:
    return ["User has a dog named Rex"] if "dog" in text else (["User has a cat named Tom"] if "cat" in text else [])


def test_edit_a_sent_message_replaces_later_turns_and_undoes_their_memories(qtbot, make_window, bank):
    answer = FakeBackend(default="Nice to hear!")
    manager = FakeBackend(default=router(facts=_facts))
    window = make_window(answer, manager)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "I have a dog named Rex")
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "What's the weather?")
    assert window.assistant.wait_idle(10)
    qtbot.waitUntil(lambda: bank.count("active") == 1)
    first = window.chat.messages[0]
    qtbot.waitUntil(lambda: first.edit_button.isVisible())
    assert not window.chat.messages[1].edit_button.isVisible()  # replies are regenerated, not edited
    first.edit_button.click()
    assert first.editor.isVisible() and first.editor.toPlainText() == "I have a dog named Rex"
    first.editor.setPlainText("I have a cat named Tom")
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        first.edit_send.click()
    reply = blocker.args[0]
    assert reply.undone_count == 1
    assert [w.raw_text for w in window.chat.messages] == ["I have a cat named Tom", "Nice to hear!"]
    bubble = window.chat.messages[-1]
    assert bubble.undone_notice.isVisible()
    assert "Undid 1 memory change from the replaced messages" in bubble.undone_notice.text()
    assert window.assistant.wait_idle(10)
    stored = bank.chats.messages(window.current_conversation.id)
    assert [m.content for m in stored] == ["I have a cat named Tom", "Nice to hear!"]
    qtbot.waitUntil(lambda: [m.text for m in bank.list()] == ["User has a cat named Tom"])


def test_regenerate_keeps_versions_to_page_through(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(["First answer.", "Second answer.", "Third answer."], name="tiny-model")
    window = make_window(answer, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Say something")
    last = window.chat.messages[-1]
    assert not last.version_label.isVisible()
    assert last.stats.isVisible() and last.stats.text().startswith("tiny-model · ")
    assert "tokens/s" in last.stats.text() and "first token" in last.stats.text()
    for _ in range(2):
        with qtbot.waitSignal(window.replyFinished, timeout=10_000):
            window.chat.messages[-1].regenerate_button.click()
    last = window.chat.messages[-1]
    assert last.raw_text == "Third answer." and last.version_label.text() == "3/3"
    assert last.prev_button.isVisible() and last.prev_button.isEnabled() and not last.next_button.isEnabled()
    last.prev_button.click()
    qtbot.waitUntil(lambda: last.version_label.text() == "2/3")
    assert last.raw_text == "Second answer." and last.body.toPlainText() == "Second answer."
    assert bank.chats.get_message(last.message_id).content == "Second answer."
    # reopening the chat shows the chosen version with its pager
    window.open_conversation(window.current_conversation.id)
    qtbot.waitUntil(lambda: window.chat.messages and window.chat.messages[-1] is not last)
    again = window.chat.messages[-1]
    assert again.raw_text == "Second answer." and again.version_label.text() == "2/3"
    assert again.version_label.isVisible()

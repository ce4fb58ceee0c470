"""Forgetting by asking in the chat window: the reply's "Forgot 2 memories: … [Undo]" notice,
and its [Undo] bringing the memories back (real widgets, offscreen, scripted models)."""

from __future__ import annotations

from PySide6.QtCore import Qt


def _send(qtbot, window, text: str) -> None:
    window.chat.input.setPlainText(text)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)


def test_forget_notice_with_undo_brings_the_memories_back(qtbot, make_window, answer_backend, manager_backend,
                                                         bank):
    band = [bank.add("User's favourite band is Muse", speaker="User").memory,
            bank.add("User saw the band Muse live in 2019", speaker="User").memory]
    keep = bank.add("User has a dog named Rex", speaker="User").memory
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=15_000) as finished:
        _send(qtbot, window, "please forget what I said about Muse")
    reply = finished.args[0]
    assert sorted(m.id for m in reply.changes.deleted) == sorted(m.id for m in band)
    assert all(bank.get(m.id).status == "deleted" for m in band) and bank.get(keep.id).status == "active"
    bubble = window.chat.messages[-1]
    assert bubble.role == "assistant" and bubble.raw_text.startswith("Forgot 2 memories:")
    assert bubble.notice.isVisible() and "Forgot 2 memories" in bubble.notice.text()
    assert all(f"memory:{m.id}" in bubble.notice.text() for m in band)
    assert bubble.undo_forget_button.isVisible()
    qtbot.waitUntil(lambda: all(window.memory.model.row_of(m.id) is None for m in band))  # the panel shows active
    qtbot.mouseClick(bubble.undo_forget_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: "Undone" in bubble.notice.text(), timeout=10_000)
    assert all(bank.get(m.id).status == "active" for m in band)
    assert "2 memories are back" in bubble.notice.text() and not bubble.undo_forget_button.isVisible()
    qtbot.waitUntil(lambda: all(window.memory.model.row_of(m.id) is not None for m in band))
    assert not any("forget" in m.text.lower() for m in bank.list())  # the manager wrote nothing about it

"""Chatting through the real widgets: streaming, stop, regenerate, temporary chats, the manager's
notice, closing mid-reply, conversation delete/undo, error dialogs."""

from __future__ import annotations

from PySide6.QtCore import Qt
from PySide6.QtWidgets import QMessageBox

from core.fakes import FakeBackend

LONG = " ".join(f"word{i}" for i in range(3000))


def _send(qtbot, window, text: str) -> None:
    window.chat.input.setPlainText(text)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)


def _dialogs(window, name: str) -> list[QMessageBox]:
    return [b for b in window.findChildren(QMessageBox, name) if b.isVisible()]


def test_send_streams_reply_and_stores_both_messages(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        _send(qtbot, window, "Hi there, how are you?")
    reply = blocker.args[0]
    assert reply.text == "Hello! I am **fine**, thanks for asking."
    assert window.chat.input.toPlainText() == ""
    user, bot = window.chat.messages
    assert (user.role, user.raw_text, user.message_id) == ("user", "Hi there, how are you?", reply.user_message_id)
    assert (bot.role, bot.message_id) == ("assistant", reply.message_id)
    # rendered as Markdown once complete: the ** markers are gone, the word is bold
    assert bot.body.toPlainText() == "Hello! I am fine, thanks for asking."
    assert "font-weight" in bot.body.toHtml()
    conv = window.current_conversation
    stored = bank.chats.messages(conv.id)
    assert [(m.role, m.content) for m in stored] == [("user", "Hi there, how are you?"), ("assistant", reply.text)]
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 1)
    assert window.conversations.model.conversation_at(0).title == "Hi there, how are you?"
    assert not window.chat.stop_button.isVisible() and window.chat.send_button.isVisible()


def test_a_pause_in_typing_prefills_the_reply_prompt_and_stores_nothing(qtbot, make_window, answer_backend,
                                                                        manager_backend, bank):
    bank.add("User lives in Oslo.", speaker="User")
    window = make_window(answer_backend, manager_backend)
    box = window.chat.input
    box.setFocus()
    qtbot.keyClicks(box, "Where do I live?")

    def warm():
        return [c for c in answer_backend.calls if not c["schema"] and c["params"].max_tokens == 1]

    qtbot.waitUntil(lambda: len(warm()) == 1, timeout=5_000)  # one pause, one prefill
    prompt = warm()[0]["messages"][-1]["content"]
    assert prompt.endswith("User: Where do I live?") and "User lives in Oslo." in prompt
    assert bank.chats.list_conversations() == [] and not window.chat.messages  # nothing sent or stored
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        qtbot.keyClick(box, Qt.Key.Key_Return)
    sent = answer_backend.calls[-1]["messages"][-1]["content"]

    def timeless(text: str) -> str:  # the minute may have turned meanwhile
        return "\n".join(line for line in text.splitlines() if not line.startswith("Now: "))

    assert timeless(sent) == timeless(prompt)  # what was prefilled
    qtbot.wait(2 * window.chat.DRAFT_PAUSE_MS)
    assert len(warm()) == 1  # sending cleared the box: no prefill of an empty draft


def test_shift_enter_is_a_newline_and_input_grows(qtbot, make_window, answer_backend, manager_backend):
    window = make_window(answer_backend, manager_backend)
    box = window.chat.input
    box.setFocus()
    start = box.height()
    qtbot.keyClicks(box, "line one")
    for i in range(4):
        qtbot.keyClick(box, Qt.Key.Key_Return, Qt.KeyboardModifier.ShiftModifier)
        qtbot.keyClicks(box, f"line {i + 2}")
    assert box.toPlainText().count("\n") == 4
    assert box.height() > start
    assert not window.chat.messages  # nothing was sent


def test_stop_mid_reply_keeps_the_partial_text(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(default=LONG, chunk=6, delay=0.005)
    window = make_window(answer, manager_backend)
    _send(qtbot, window, "Tell me a long story")
    qtbot.waitUntil(lambda: window.chat.streaming is not None and len(window.chat.streaming.raw_text) > 30)
    assert window.chat.stop_button.isVisible()
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        window.activateWindow()
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Escape)
    reply = blocker.args[0]
    assert reply.cancelled
    assert 0 < len(reply.text) < len(LONG)
    stored = bank.chats.messages(window.current_conversation.id)[-1]
    assert stored.role == "assistant" and stored.content == reply.text and stored.meta["cancelled"] is True
    assert window.chat.messages[-1].header.text() == "Assistant · stopped"


def test_streaming_is_batched_not_per_token(qtbot, make_window, manager_backend):
    answer = FakeBackend(default=LONG, chunk=2, delay=0.0005)
    window = make_window(answer, manager_backend)
    flushes = []
    original = window.chat.flush

    def counting_flush():
        flushes.append(1)
        original()

    window.chat._flush_timer.timeout.disconnect()
    window.chat._flush_timer.timeout.connect(counting_flush)
    with qtbot.waitSignal(window.replyFinished, timeout=30_000) as blocker:
        _send(qtbot, window, "go")
    text = blocker.args[0].text
    tokens = len(text) // 2
    assert len(text) > 10_000 and len(flushes) < tokens / 10, (len(flushes), tokens)
    assert window.chat.messages[-1].raw_text == text


def test_manager_memory_appears_in_panel_with_notice(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    notices = []
    window.memoryNotice.connect(lambda *args: notices.append(args))
    with qtbot.waitSignal(window.replyFinished, timeout=15_000):
        _send(qtbot, window, "I have a dog named Rex")
    qtbot.waitUntil(lambda: bool(notices), timeout=15_000)  # the manager may finish before or after
    changes, turn = notices[0]
    assert [m.text for m in changes.added] == ["User has a dog named Rex"]
    assert turn.conversation_id == window.current_conversation.id and turn.message_id is not None
    memory = changes.added[0]
    assert bank.get(memory.id).status == "active"
    qtbot.waitUntil(lambda: window.memory.model.row_of(memory.id) is not None)
    row = window.memory.model.row_of(memory.id)
    assert window.memory.model.index(row, 1).data() == "User"
    notice = window.chat.messages[-1].notice
    assert notice.isVisible() and "Rex" in notice.text() and f"memory:{memory.id}" in notice.text()
    # the link selects the memory in the panel
    window.chat.messages[-1]._on_link(f"memory:{memory.id}")
    qtbot.waitUntil(lambda: [m.id for m in window.memory.selected_memories()] == [memory.id])


def test_next_reply_uses_the_remembered_memory(qtbot, make_window, manager_backend, bank):
    def answer_script(messages, schema):
        if "Rex" in messages[-1]["content"]:  # the memories are given with the new message
            return "**Memories selected as relevant:**\n- User has a dog named Rex\n**Answer:** Your dog is Rex."
        return "Nice!"

    answer = FakeBackend(default=answer_script)
    window = make_window(answer, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=15_000):
        _send(qtbot, window, "I have a dog named Rex")
    assert window.assistant.wait_idle(15)  # the manager stored the fact
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        _send(qtbot, window, "What is my dog called?")
    reply = blocker.args[0]
    assert reply.text == "Your dog is Rex."
    assert [m.text for m in reply.selected] == ["User has a dog named Rex"]
    bubble = window.chat.messages[-1]
    assert bubble.memories_button.isVisible() and bubble.memories_button.text() == "Memories used (1)"
    assert not bubble.memories_list.isVisible()
    bubble.memories_button.click()
    assert bubble.memories_list.isVisible() and "Rex" in bubble.memories_list.text()


def test_regenerate_replaces_the_last_reply(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(["First answer.", "Second answer."])
    window = make_window(answer, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Say something")
    last = window.chat.messages[-1]
    assert last.regenerate_button.isVisible()
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        last.regenerate_button.click()
    assert blocker.args[0].text == "Second answer."
    assert [w.raw_text for w in window.chat.messages] == ["Say something", "Second answer."]
    stored = bank.chats.messages(window.current_conversation.id)
    assert [m.content for m in stored] == ["Say something", "Second answer."]


def test_temporary_chat_neither_reads_nor_writes_memory(qtbot, make_window, answer_backend, manager_backend, bank):
    bank.add("User has a dog named Rex", speaker="User")
    window = make_window(answer_backend, manager_backend)
    window.new_chat(temporary=True)
    assert window.chat.banner.isVisible()
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as blocker:
        _send(qtbot, window, "I have a dog named Rex")
    assert window.current_conversation.temporary
    assert blocker.args[0].retrieved == []
    assert window.assistant.wait_idle(10)
    assert manager_backend.calls == []
    assert bank.count("active") == 1


def test_close_while_streaming_stops_cleanly_and_keeps_partial(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(default=LONG, chunk=6, delay=0.005)
    window = make_window(answer, manager_backend)
    _send(qtbot, window, "Tell me a long story")
    qtbot.waitUntil(lambda: window.chat.streaming is not None and len(window.chat.streaming.raw_text) > 30)
    cid = window.current_conversation.id if window.current_conversation else None
    window.close()
    qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
    convs = bank.chats.list_conversations()
    cid = cid or convs[0].id
    msgs = bank.chats.messages(cid)
    assert [m.role for m in msgs] == ["user", "assistant"]
    assert 0 < len(msgs[1].content) < len(LONG) and msgs[1].meta["cancelled"] is True


def test_delete_chat_with_confirmation_and_undo(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "Hello")
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 1)
    cid = window.conversations.model.conversation_at(0).id
    window.conversations.ask_delete(cid)
    box = _dialogs(window, "confirmDeleteChat")[0]
    cancel = box.button(QMessageBox.StandardButton.Cancel)
    cancel.click()
    assert bank.chats.list_conversations() and window.conversations.model.rowCount() == 1
    window.conversations.ask_delete(cid)
    box = _dialogs(window, "confirmDeleteChat")[0]
    [delete] = [b for b in box.buttons() if b.text() == "Delete"]
    delete.click()
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 0)
    assert bank.chats.list_conversations() == [] and window.chat.messages == []
    assert window.undo_chat_button.isVisible()
    window.undo_chat_button.click()
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 1)
    assert [c.id for c in bank.chats.list_conversations()] == [cid]


def test_switching_conversations_shows_their_messages(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend(["One.", "Two."])
    window = make_window(answer, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "first chat")
    qtbot.keyClick(window.chat.input, Qt.Key.Key_N, Qt.KeyboardModifier.ControlModifier)
    assert window.chat.messages == [] and window.current_conversation is None
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "second chat")
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 2)
    first = window.conversations.model.conversation_at(1)
    assert first.title == "first chat"
    with qtbot.waitSignal(window.conversationShown, timeout=5_000):
        window.conversations.view.setCurrentIndex(window.conversations.model.index(1))
    assert [w.raw_text for w in window.chat.messages] == ["first chat", "One."]


def test_model_error_is_a_crash_dialog_with_the_log_path(qtbot, make_window, manager_backend, data_home):
    answer = FakeBackend([RuntimeError("native failure")])
    window = make_window(answer, manager_backend)
    _send(qtbot, window, "Hello")
    qtbot.waitUntil(lambda: bool(_dialogs(window, "crashDialog")))
    box = _dialogs(window, "crashDialog")[0]
    assert "native failure" in box.text() and str(data_home / "logs") in box.text()
    assert window.chat.send_button.isVisible() and not window.busy()
    box.close()


def test_user_error_is_a_plain_dialog(qtbot, make_window, manager_backend):
    from core.errors import ModelLoadError

    answer = FakeBackend([ModelLoadError("The model file is missing.")])
    window = make_window(answer, manager_backend)
    _send(qtbot, window, "Hello")
    qtbot.waitUntil(lambda: bool(_dialogs(window, "userError")))
    assert _dialogs(window, "userError")[0].text() == "The model file is missing."
    assert not _dialogs(window, "crashDialog")
    _dialogs(window, "userError")[0].close()


def test_rename_and_search_chats(qtbot, make_window, manager_backend, bank):
    from PySide6.QtWidgets import QInputDialog

    answer = FakeBackend(["One.", "Two."])
    window = make_window(answer, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "about gardening")
    window.new_chat()
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "about sailing")
    qtbot.waitUntil(lambda: window.conversations.model.rowCount() == 2)
    cid = window.conversations.model.conversation_at(0).id
    window.conversations.ask_rename(cid)
    dialog = [d for d in window.conversations.findChildren(QInputDialog) if d.isVisible()][0]
    dialog.setTextValue("Sailing trip")
    with qtbot.waitSignal(window.conversationsLoaded, timeout=5_000):
        dialog.accept()
    assert bank.chats.get_conversation(cid).title == "Sailing trip"
    assert window.conversations.model.conversation_at(0).title == "Sailing trip"
    with qtbot.waitSignal(window.conversationsLoaded, timeout=5_000):
        window.conversations.search.setText("gardening")  # matches message text too
    assert [window.conversations.model.conversation_at(r).title
            for r in range(window.conversations.model.rowCount())] == ["about gardening"]


def test_copy_puts_the_raw_reply_on_the_clipboard(qtbot, make_window, answer_backend, manager_backend):
    from PySide6.QtGui import QGuiApplication

    window = make_window(answer_backend, manager_backend)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "hi")
    window.chat.messages[-1].copy_button.click()
    assert QGuiApplication.clipboard().text() == "Hello! I am **fine**, thanks for asking."


def test_keyboard_shortcuts(qtbot, make_window, answer_backend, manager_backend):
    from app.gui.settings_dialog import SettingsDialog

    window = make_window(answer_backend, manager_backend)
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_F, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: window.memory.search.hasFocus())
    qtbot.keyClick(window.memory.search, Qt.Key.Key_F,
                   Qt.KeyboardModifier.ControlModifier | Qt.KeyboardModifier.ShiftModifier)
    qtbot.waitUntil(lambda: window.conversations.search.hasFocus())
    qtbot.keyClick(window.chat.input, Qt.Key.Key_Comma, Qt.KeyboardModifier.ControlModifier)
    qtbot.waitUntil(lambda: any(d.isVisible() for d in window.findChildren(SettingsDialog)))
    [d.reject() for d in window.findChildren(SettingsDialog)]


def test_new_chat_while_a_reply_streams_leaves_it_running_unseen(qtbot, make_window, manager_backend, bank):
    answer = FakeBackend([LONG[:3000], "Fresh chat reply."], chunk=6, delay=0.002)
    window = make_window(answer, manager_backend)
    _send(qtbot, window, "Tell me a long story")
    qtbot.waitUntil(lambda: window.chat.streaming is not None and len(window.chat.streaming.raw_text) > 30)
    window.new_chat()
    assert window.chat.messages == [] and window.current_conversation is None
    with qtbot.waitSignal(window.replyFinished, timeout=20_000) as blocker:
        pass
    assert blocker.args[0].text == LONG[:3000] and not blocker.args[0].cancelled  # finished and stored
    assert window.current_conversation is None and window.chat.messages == []  # the new chat stays empty
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        _send(qtbot, window, "A new topic")
    assert [w.raw_text for w in window.chat.messages] == ["A new topic", "Fresh chat reply."]
    assert len(bank.chats.list_conversations()) == 2


def test_memory_notices_come_through_the_one_change_signal_to_the_right_reply(
        qtbot, make_window, answer_backend, manager_backend, bank):
    from core.types import TurnRef

    window = make_window(answer_backend, manager_backend)
    changes_seen = []
    window.bridge.bank_changed.connect(changes_seen.append)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as first:
        _send(qtbot, window, "Hello there")
    assert window.assistant.wait_idle(10)
    cid = window.current_conversation.id
    # a remember command commits inside the reply, before the reply's ids reach the window:
    # its notice still lands under its own reply (the bubble that was waiting for its id)
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as second:
        _send(qtbot, window, "Remember that I like green tea")
    reply = second.args[0]
    qtbot.waitUntil(lambda: len(changes_seen) == 1)
    [changes] = changes_seen
    assert changes.turn == TurnRef(cid, reply.user_message_id) and [m.text for m in changes.added]
    first_bubble, last_bubble = window.chat.messages[1], window.chat.messages[3]
    assert (first_bubble.message_id, last_bubble.message_id) == (first.args[0].message_id, reply.message_id)
    assert last_bubble.notice.isVisible() and f"memory:{changes.added[0].id}" in last_bubble.notice.text()
    assert not first_bubble.notice.isVisible()
    # a later change for the FIRST turn (e.g. a slow manager) goes under the first reply
    late = bank.add("User said hello", speaker="User", turn=TurnRef.chat(cid, first.args[0].user_message_id))
    qtbot.waitUntil(lambda: len(changes_seen) == 2)
    assert changes_seen[1].turn.message_id == first.args[0].user_message_id
    assert first_bubble.notice.isVisible() and f"memory:{late.memory.id}" in first_bubble.notice.text()
    assert f"memory:{late.memory.id}" not in last_bubble.notice.text()
    # a turn of another chat, and a change made in the panel, put no notice in this chat
    other = bank.chats.create_conversation("Other chat")
    bank.add("Elsewhere", turn=TurnRef.chat(other.id, 999))
    bank.add("From the panel")
    qtbot.waitUntil(lambda: len(changes_seen) == 4)
    assert all("Elsewhere" not in w.notice.text() and "From the panel" not in w.notice.text()
               for w in window.chat.messages)

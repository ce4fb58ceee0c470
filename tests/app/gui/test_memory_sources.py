"""Where each memory came from, in the panel: the "Where it came from" pane (chat, ingested
turn, the user's edit, a removed source, supersession), a chat source opening its message,
"not saved" rows in History, the superseded filter and Forget with or without the source text.
Real widgets offscreen over a real bank; the provenance is written through the bank's own API."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QAction
from PySide6.QtWidgets import QCheckBox, QMessageBox

from core.types import MemoryOp, SourceTurn

from app.gui.memory_details import source_lines
from app.gui.memory_panel import HistoryDialog

TURN = SourceTurn(text="I moved from Lisbon to Berlin last week.", speaker="Sam", said_at="9:12 am on 3 May, 2026",
                  ref="ingest:notes.jsonl/2")
REFUSED = "Sam has a cat named Luna"


@pytest.fixture
def setup(make_window, answer_backend, manager_backend, bank):
    """Two chats (the second one is shown at start); memories from a chat message, from an
    ingested turn (one superseding the chat's), one the user edited; a refused fact of the turn."""
    chats = bank.chats
    first = chats.create_conversation("Intro")
    said = chats.add_message(first.id, "user", "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.")
    chats.add_message(first.id, "assistant", "Nice to meet you, Sam!")
    other = chats.create_conversation("Later")
    for i in range(30):  # enough bubbles that the first chat is not what is shown
        chats.add_message(other.id, "user" if i % 2 == 0 else "assistant", f"line {i} " + "words " * 20)
    chat_turn = SourceTurn(text="", speaker="Sam", message_id=said.id)
    lisbon = bank.add("Sam lives in Lisbon", speaker="Sam", actor="manager", source=chat_turn,
                      turn=f"chat:{first.id}/{said.id}").memory
    rex = bank.add("Sam has a dog named Rex", speaker="Sam", actor="manager", source=chat_turn,
                   turn=f"chat:{first.id}/{said.id}").memory
    moved = bank.apply([MemoryOp("ADD", text="Sam lives in Berlin", speaker="Sam", supersedes=lisbon.id),
                        MemoryOp("REJECT", text=REFUSED, speaker="Sam", reason="not in what was said: 'Luna'")],
                       actor="manager", turn=TURN.ref, source=TURN).added[0]
    bank.edit(rex.id, "Sam has a beagle named Rex")
    window = make_window(answer_backend, manager_backend)
    return window, {"chat": first.id, "message": said.id, "lisbon": lisbon.id, "rex": rex.id, "berlin": moved.id,
                    "other": other.id}


def _select(qtbot, panel, memory_id):
    qtbot.waitUntil(lambda: panel.model.row_of(memory_id) is not None)
    row = panel.model.row_of(memory_id)
    panel.view.selectionModel().select(panel.model.index(row, 0),
                                       QItemSelectionModel.SelectionFlag.ClearAndSelect
                                       | QItemSelectionModel.SelectionFlag.Rows)


def _pane(qtbot, panel, memory_id):
    _select(qtbot, panel, memory_id)
    qtbot.waitUntil(lambda: panel.sources_view.memory_id == memory_id)
    return panel.sources_view.toPlainText()


def test_the_pane_shows_each_link_with_its_role_speaker_time_and_quote(qtbot, setup):
    window, ids = setup
    panel = window.memory
    assert "Select one memory" in panel.sources_view.toPlainText()
    text = _pane(qtbot, panel, ids["rex"])
    assert "added from · chat · Sam" in text and "“Hi! I'm Sam. I live in Lisbon" in text and "open chat" in text
    assert "edited by you" in text
    berlin = _pane(qtbot, panel, ids["berlin"])
    assert "added from · turn ingest:notes.jsonl/2 · Sam · 3 May 2026 — “I moved from Lisbon to Berlin" in berlin
    assert REFUSED not in berlin  # a refused fact is never shown as a source of a memory


def test_a_superseded_memory_is_under_its_filter_with_its_newer_memory(qtbot, setup, bank):
    window, ids = setup
    panel = window.memory
    assert panel.model.row_of(ids["lisbon"]) is None  # not among the active ones
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        panel.status.setCurrentIndex(panel.status.findData("superseded"))
    assert [m.id for m in panel.model.memories()] == [ids["lisbon"]]
    text = _pane(qtbot, panel, ids["lisbon"])
    assert f"superseded by #{ids['berlin']} · turn ingest:notes.jsonl/2" in text
    assert "added from · chat" in text
    assert panel.buttons["Restore"].isEnabled()  # restorable
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        panel.sources_view.activate(f"memory:{ids['berlin']}")  # the newer memory, shown under All
    qtbot.waitUntil(lambda: [m.id for m in panel.selected_memories()] == [ids["berlin"]])
    _select(qtbot, panel, ids["lisbon"])
    panel.buttons["Restore"].click()
    qtbot.waitUntil(lambda: bank.get(ids["lisbon"]).status == "active")
    assert bank.get(ids["lisbon"]).superseded_by is None


def test_a_chat_source_opens_its_chat_and_highlights_the_message(qtbot, setup):
    window, ids = setup
    qtbot.waitUntil(lambda: window.current_conversation is not None)
    assert window.current_conversation.id == ids["other"]
    panel = window.memory
    _pane(qtbot, panel, ids["rex"])
    with qtbot.waitSignal(window.conversationShown, timeout=10_000):
        panel.sources_view.activate(f"chat:{ids['chat']}/{ids['message']}")
    assert window.current_conversation.id == ids["chat"]
    widget = window.chat.message_widget(ids["message"])
    assert widget is not None and widget.graphicsEffect() is not None
    assert widget.graphicsEffect().objectName() == "sourceHighlight"
    qtbot.waitUntil(lambda: window.conversations.view.currentIndex().isValid()
                    and window.conversations.model.conversation_at(
                        window.conversations.view.currentIndex().row()).id == ids["chat"])


def test_history_shows_what_was_not_saved_greyed_and_not_undoable(qtbot, setup, bank):
    window, ids = setup
    panel = window.memory
    _select(qtbot, panel, ids["berlin"])
    panel.buttons["History…"].click()
    dialog = [d for d in panel.findChildren(HistoryDialog) if d.isVisible()][0]
    qtbot.waitUntil(lambda: dialog.model.rowCount() == 2)
    changes = [dialog.model.index(r, 1).data() for r in range(2)]
    assert changes == ["not saved: not in what was said: 'Luna'", "ADD"]
    assert dialog.model.index(0, 4).data() == REFUSED
    assert dialog.model.index(0, 1).data(Qt.ItemDataRole.FontRole).italic()
    assert dialog.model.index(0, 1).data(Qt.ItemDataRole.ForegroundRole) is not None  # greyed
    dialog.view.setCurrentIndex(dialog.model.index(0, 0))
    assert not dialog.undo_button.isEnabled()
    dialog.view.setCurrentIndex(dialog.model.index(1, 0))
    assert dialog.undo_button.isEnabled()
    dialog.accept()
    # every change (nothing selected): the refusal, the supersession with its newer memory
    panel.view.clearSelection()
    panel.buttons["History…"].click()
    dialog = [d for d in panel.findChildren(HistoryDialog) if d.isVisible()][0]
    qtbot.waitUntil(lambda: dialog.model.rowCount() == len(bank.history(limit=500)))
    rows = [(dialog.model.index(r, 1).data(), dialog.model.index(r, 6).data()) for r in range(dialog.model.rowCount())]
    assert ("not saved: not in what was said: 'Luna'", "") in rows
    assert (f"superseded by #{ids['berlin']}", f"#{ids['lisbon']}") in rows
    dialog.accept()
    # the same view from the Edit menu, whatever is selected
    _select(qtbot, panel, ids["berlin"])
    [action] = [a for a in window.findChildren(QAction) if a.text() == "Memory history…"]
    action.trigger()
    dialog = [d for d in panel.findChildren(HistoryDialog) if d.isVisible() and d.memory is None][0]
    qtbot.waitUntil(lambda: dialog.model.rowCount() == len(bank.history(limit=500)))
    dialog.accept()


def test_a_removed_source_reads_source_deleted(qtbot, setup, bank):
    window, ids = setup
    [src] = [s for s in bank.memory_sources(ids["berlin"]) if s.role == "added"]
    bank.remove_source_text(src.source_id)
    text = _pane(qtbot, window.memory, ids["berlin"])
    assert "added from · turn ingest:notes.jsonl/2 · Sam · 3 May 2026 — source deleted" in text
    assert "I moved" not in text


def _forget_box(qtbot, panel, memory_id):
    _select(qtbot, panel, memory_id)
    panel.buttons["Forget…"].click()
    box = [b for b in panel.findChildren(QMessageBox, "confirmForget") if b.isVisible()][0]
    check = box.checkBox()
    assert isinstance(check, QCheckBox) and check.objectName() == "forgetSources"
    assert not check.isChecked()  # unchecked by default
    return box, check


def test_forget_keeps_what_was_said_unless_asked(qtbot, setup, bank):
    window, ids = setup
    panel = window.memory
    box, _check = _forget_box(qtbot, panel, ids["rex"])
    [b for b in box.buttons() if b.text() == "Forget"][0].click()
    qtbot.waitUntil(lambda: panel.model.row_of(ids["rex"]) is None)
    assert bank.chats.get_message(ids["message"]).content.startswith("Hi! I'm Sam.")  # the chat is intact
    assert bank.sources([ids["lisbon"]])[ids["lisbon"]][0].text.startswith("Hi! I'm Sam.")


def test_forget_with_the_checkbox_also_removes_the_source_text(qtbot, setup, bank):
    window, ids = setup
    panel = window.memory
    box, check = _forget_box(qtbot, panel, ids["berlin"])
    check.setChecked(True)
    with qtbot.waitSignal(panel.sourcesRemoved, timeout=10_000):
        [b for b in box.buttons() if b.text() == "Forget"][0].click()
    assert "and what was said" in window.statusBar().currentMessage()
    # the turn's kept text is gone; the older memory's "superseded" link now reads deleted
    assert all(s.text is None for s in bank.sources([ids["lisbon"]])[ids["lisbon"]] if s.role == "superseded")
    assert not bank.rejected(TURN.ref)  # the refused facts quoted the turn: gone with it
    raw = b"".join(p.read_bytes() for p in bank.path.parent.glob("memory.sqlite3*"))
    assert b"moved from Lisbon to Berlin" not in raw and b"Sam lives in Berlin" not in raw


def test_source_lines_without_links_say_so():
    from core.types import Memory

    lines = source_lines(Memory(id=3, text="Old fact", source="locomo:conv-26/D1:3"), [])
    assert lines == ["<i>No recorded source (recorded as “locomo:conv-26/D1:3”).</i>"]


def test_a_memory_whose_chat_was_deleted_stays_and_says_source_deleted(qtbot, setup, bank):
    window, ids = setup
    bank.chats.delete_conversation(ids["chat"])
    bank.chats.purge_conversation(ids["chat"])
    text = _pane(qtbot, window.memory, ids["rex"])
    assert "added from · chat · Sam" in text and "source deleted" in text
    assert "open chat" not in text and "Hi! I'm Sam" not in text
    assert bank.get(ids["rex"]).status == "active"

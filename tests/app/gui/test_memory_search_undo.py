"""The memory panel's search lists only matches; Edit > Undo (Ctrl+Z) names and reverts the
latest memory change, except in a text field; F1 lists the shortcuts read from the actions; a
forgotten memory's text leaves the chat's notices (real widgets offscreen, real bank on the
hashed embedder, scripted models)."""

from __future__ import annotations

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtGui import QKeySequence
from PySide6.QtWidgets import QDialog, QTableWidget

from app.gui.memory_search import SEARCH_FLOORS, search_floor
from app.gui.menus import shortcut_rows

MEMORIES = ("Alex is allergic to peanuts", "Sam lives in Lisbon", "Alex plays the cello",
            "Sam moved to Porto last year")


@pytest.fixture
def window(make_window, answer_backend, manager_backend, bank):
    for text in MEMORIES:
        bank.add(text, speaker=text.split()[0])
    return make_window(answer_backend, manager_backend)


def _texts(panel):
    return [m.text for m in panel.model.memories()]


def _search(qtbot, panel, text):
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        panel.search.setText(text)


def _select(panel, memory_ids):
    selection = panel.view.selectionModel()
    selection.clearSelection()
    for memory_id in memory_ids:
        selection.select(panel.model.index(panel.model.row_of(memory_id), 0),
                         QItemSelectionModel.SelectionFlag.Select | QItemSelectionModel.SelectionFlag.Rows)


def _ctrl_z(qtbot, widget):
    qtbot.keyClick(widget, Qt.Key.Key_Z, Qt.KeyboardModifier.ControlModifier)


# --- search ---------------------------------------------------------------------------------
def test_search_lists_only_the_matches(qtbot, window):
    panel = window.memory
    assert panel.vector_floor is None  # the hashed test embedder is not calibrated: words and text only
    _search(qtbot, panel, "Porto")
    assert _texts(panel) == ["Sam moved to Porto last year"]
    assert panel.count_label.text() == "4 memories · 1 shown" and not panel.no_match.isVisible()
    _search(qtbot, panel, "port")  # while the word is being typed: a text match
    assert _texts(panel) == ["Sam moved to Porto last year"]
    _search(qtbot, panel, "alex")  # a keyword in two memories
    assert sorted(_texts(panel)) == ["Alex is allergic to peanuts", "Alex plays the cello"]
    _search(qtbot, panel, "zebra <b>")
    assert _texts(panel) == [] and panel.no_match.isVisible()
    assert panel.no_match.text() == "No memory matches “zebra <b>”."
    _search(qtbot, panel, "")
    assert len(_texts(panel)) == 4 and not panel.no_match.isVisible()
    assert panel.count_label.text() == "4 memories"


def test_search_by_meaning_keeps_only_hits_over_the_floor(qtbot, window):
    panel = window.memory
    _search(qtbot, panel, "allergies")  # neither its words nor its text is in any memory
    assert _texts(panel) == [] and panel.no_match.isVisible()
    panel.vector_floor = 0.3  # hashed cosines: 0.36 to the peanuts memory, <= 0.0 to the others
    _search(qtbot, panel, "allergies ")
    assert _texts(panel) == ["Alex is allergic to peanuts"]
    assert "search score: 0.3" in panel.model.index(0, 0).data(Qt.ItemDataRole.ToolTipRole)
    panel.vector_floor = 0.5
    _search(qtbot, panel, "allergies")
    assert _texts(panel) == []


def test_search_floor_is_per_embedder():
    from core.fakes import HashEmbedder
    from core.memory.bank import LazyDefaultEmbedder

    assert search_floor(HashEmbedder()) is None
    assert search_floor(LazyDefaultEmbedder()) == SEARCH_FLOORS["all-MiniLM-L6-v2"] == 0.30

    class Own(HashEmbedder):
        search_min_score = 0.42

    assert search_floor(Own()) == 0.42


# --- undo -----------------------------------------------------------------------------------
def test_undo_names_and_reverts_the_latest_change(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    panel, action = window.memory, window.undo_action
    assert not action.isEnabled() and action.text() == "Undo"  # a new bank: nothing to undo
    panel.add_memory("Sam lives in Lisbon & Porto", "Sam")
    qtbot.waitUntil(lambda: action.text() == "Undo add of “Sam lives in Lisbon && Porto”")  # && shows one &
    assert action.isEnabled()
    mem = bank.list()[0]
    other = bank.add("Sam has a cat", speaker="Sam").memory
    qtbot.waitUntil(lambda: panel.model.row_of(other.id) is not None)
    _select(panel, [mem.id, other.id])
    panel.delete_selected()
    qtbot.waitUntil(lambda: action.text() == "Undo delete of 2 memories")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    panel.view.setFocus()
    _ctrl_z(qtbot, panel.view)
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "active" and bank.get(other.id).status == "active")
    qtbot.waitUntil(lambda: action.text() == "Undo add of “Sam has a cat”")
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "Undid the delete of 2 memories.")
    action.trigger()  # Edit > Undo
    qtbot.waitUntil(lambda: bank.get(other.id).status == "deleted")
    qtbot.waitUntil(lambda: action.text() == "Undo add of “Sam lives in Lisbon && Porto”")
    action.trigger()
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "deleted")
    qtbot.waitUntil(lambda: not action.isEnabled())  # every change is undone; UNDO itself is not undoable
    assert action.text() == "Undo"


def test_ctrl_z_in_a_text_field_is_the_fields_own_undo(qtbot, window, bank):
    panel, action = window.memory, window.undo_action
    mem = bank.list()[0]
    _select(panel, [mem.id])
    panel.delete_selected()
    qtbot.waitUntil(lambda: action.text() == f"Undo delete of “{mem.text}”")
    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    for field in (panel.search, window.chat.input):
        field.setFocus()
        qtbot.keyClicks(field, "zz")
        assert field.hasFocus()
        _ctrl_z(qtbot, field)
        text = field.text() if hasattr(field, "text") else field.toPlainText()
        assert text == ""  # the typing was undone
    qtbot.wait(300)  # a memory undo, had one been queued, is done by now
    assert bank.get(mem.id).status == "deleted" and action.text() == f"Undo delete of “{mem.text}”"
    panel.view.setFocus()
    _ctrl_z(qtbot, panel.view)
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "active")


def test_undo_of_a_change_from_before_the_session_is_the_last_change(qtbot, window, bank):
    action = window.undo_action
    qtbot.waitUntil(action.isEnabled)  # the fixture's memories were added before the window
    assert action.text() == "Undo the last memory change"
    newest = bank.list()[0]
    action.trigger()
    qtbot.waitUntil(lambda: bank.get(newest.id).status == "deleted")


def test_a_manager_turn_is_named_and_undone_as_one(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    notices = []
    window.memoryNotice.connect(lambda *args: notices.append(args))
    window.chat.input.setPlainText("I have a dog named Rex")
    with qtbot.waitSignal(window.replyFinished, timeout=15_000):
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(notices), timeout=15_000)
    memory = notices[0][0].added[0]
    qtbot.waitUntil(lambda: window.undo_action.text() == "Undo add of “User has a dog named Rex”")
    window.undo_action.trigger()
    qtbot.waitUntil(lambda: bank.get(memory.id).status == "deleted")


# --- shortcuts ------------------------------------------------------------------------------
def test_f1_lists_the_shortcuts_of_every_action(qtbot, window):
    from PySide6.QtGui import QAction

    window.activateWindow()
    qtbot.waitUntil(window.isActiveWindow)
    qtbot.keyClick(window.chat.input, Qt.Key.Key_F1)
    qtbot.waitUntil(lambda: any(d.isVisible() for d in window.findChildren(QDialog, "shortcutsDialog")))
    dialog = [d for d in window.findChildren(QDialog, "shortcutsDialog") if d.isVisible()][0]
    table = dialog.findChild(QTableWidget, "shortcutsTable")
    shown = [tuple(table.item(r, c).text() for c in range(3)) for r in range(table.rowCount())]
    undo = QKeySequence(QKeySequence.StandardKey.Undo).toString(QKeySequence.SequenceFormat.NativeText)
    for row in (("File", "New chat", "Ctrl+N"), ("Edit", "Undo the last memory change", undo),
                ("Edit", "Search memories", "Ctrl+F"), ("View", "Memory panel", "Ctrl+Shift+M"),
                ("Help", "Keyboard shortcuts", "F1"), ("Chat box", "Send the message", "Enter")):
        assert row in shown
    with_keys = [a for a in window.findChildren(QAction) if a.shortcuts() and a.menu() is None]
    assert len([r for r in shown if r[0] not in ("Chat box", "Text fields")]) == len(with_keys)
    dialog.reject()
    # a shortcut added later is listed too: the list is read from the actions
    from app.gui.menus import add_action

    help_menu = [a.menu() for a in window.menuBar().actions() if a.text() == "&Help"][0]
    add_action(window, help_menu, "Report a problem…", lambda: None, "Ctrl+Shift+R")
    assert ("Help", "Report a problem", "Ctrl+Shift+R") in shortcut_rows(window)


# --- forgotten memories leave the chat's notices -------------------------------------------
def test_a_forgotten_memory_leaves_the_chat_notices(qtbot, make_window, answer_backend, manager_backend, bank):
    window = make_window(answer_backend, manager_backend)
    keep = bank.add("User likes tea", speaker="User").memory
    notices = []
    window.memoryNotice.connect(lambda *args: notices.append(args))
    window.chat.input.setPlainText("I have a dog named Rex")
    with qtbot.waitSignal(window.replyFinished, timeout=15_000):
        qtbot.keyClick(window.chat.input, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: bool(notices), timeout=15_000)
    rex = notices[0][0].added[0]
    bubble = window.chat.messages[-1]
    qtbot.waitUntil(lambda: "Rex" in bubble.notice.text())
    bubble.set_memories_used([rex, keep])
    bubble.memories_button.setChecked(True)
    window.memory.forget([rex.id])
    qtbot.waitUntil(lambda: "Rex" not in bubble.notice.text())
    assert "(forgotten)" in bubble.notice.text() and f"memory:{rex.id}" not in bubble.notice.text()
    assert "Rex" not in bubble.memories_list.text() and "(forgotten)" in bubble.memories_list.text()
    assert f"memory:{keep.id}" in bubble.memories_list.text()  # the others stay, with their links
    assert window.chat.forget_notice_texts([rex.id]) == 0  # nothing left to replace

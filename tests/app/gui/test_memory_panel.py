"""Curating memory through the panel changes the database: edit, delete/undo, restore, forget,
history, search and filters, export/import, pause."""

from __future__ import annotations

import json

import pytest
from PySide6.QtCore import QItemSelectionModel, Qt
from PySide6.QtWidgets import QMessageBox

from app.gui.memory_model import MemoryTableModel
from app.gui.memory_panel import HistoryDialog


@pytest.fixture
def window(make_window, answer_backend, manager_backend, bank):
    bank.add("Alex is allergic to peanuts", speaker="Alex", observed_at="1:56 pm on 8 May, 2023")
    bank.add("Sam lives in Lisbon", speaker="Sam")
    bank.add("Alex plays the cello", speaker="Alex")
    return make_window(answer_backend, manager_backend)


def _select(panel, memory_id):
    row = panel.model.row_of(memory_id)
    panel.view.selectionModel().select(panel.model.index(row, 0),
                                       QItemSelectionModel.SelectionFlag.ClearAndSelect
                                       | QItemSelectionModel.SelectionFlag.Rows)


def _texts(panel):
    return [m.text for m in panel.model.memories()]


def _wait_loaded(qtbot, panel, action):
    with qtbot.waitSignal(panel.loaded, timeout=10_000):
        action()


def test_panel_lists_active_memories_newest_first(window):
    panel = window.memory
    assert _texts(panel) == ["Alex plays the cello", "Sam lives in Lisbon", "Alex is allergic to peanuts"]
    assert panel.count_label.text() == "3 memories"
    row = panel.model.row_of(1)
    assert panel.model.index(row, MemoryTableModel.PERSON).data() == "Alex"
    observed = panel.model.index(row, MemoryTableModel.OBSERVED)
    assert observed.data() == "8 May 2023"  # compact in the cell, in full when edited/hovered
    assert observed.data(Qt.ItemDataRole.EditRole) == "1:56 pm on 8 May, 2023"
    assert "observed: 1:56 pm on 8 May, 2023" in observed.data(Qt.ItemDataRole.ToolTipRole)
    assert panel.model.index(row, MemoryTableModel.CHANGED).data()  # local time of the last change
    assert [panel.person.itemText(i) for i in range(panel.person.count())] == ["Everyone", "Alex", "Sam"]


def test_inline_edit_changes_the_database(qtbot, window, bank):
    panel = window.memory
    mem = bank.list()[-1]
    index = panel.model.index(panel.model.row_of(mem.id), MemoryTableModel.TEXT)
    assert panel.model.flags(index) & Qt.ItemFlag.ItemIsEditable
    assert panel.model.setData(index, "Alex is allergic to peanuts and cashews")
    assert index.data() == "Alex is allergic to peanuts and cashews"  # shown at once
    qtbot.waitUntil(lambda: bank.get(mem.id).text == "Alex is allergic to peanuts and cashews")
    qtbot.waitUntil(lambda: panel.model.memory_at(index.row()).version == 2)
    events = bank.history(mem.id)
    assert events[0].event == "EDIT" and events[0].actor == "user"
    assert events[0].old_text == "Alex is allergic to peanuts"
    # Undo (the panel's last action) reverts it in the database
    panel.buttons["Undo"].click()
    qtbot.waitUntil(lambda: bank.get(mem.id).text == "Alex is allergic to peanuts")
    qtbot.waitUntil(lambda: panel.model.memory_at(panel.model.row_of(mem.id)).text == "Alex is allergic to peanuts")


def test_edit_conflict_reverts_and_reports(qtbot, window, bank):
    panel = window.memory
    mem = bank.list()[0]
    bank.edit(mem.id, "Alex plays the cello and piano")  # changed elsewhere; the row is stale
    row = panel.model.row_of(mem.id)
    panel.model._rows[row] = mem  # what the table showed before the listener caught up
    assert panel.model.setData(panel.model.index(row, 0), "Alex plays the viola")
    qtbot.waitUntil(lambda: any(b.isVisible() for b in window.findChildren(QMessageBox, "userError")))
    box = [b for b in window.findChildren(QMessageBox, "userError") if b.isVisible()][0]
    assert "changed since it was read" in box.text()
    box.close()
    assert bank.get(mem.id).text == "Alex plays the cello and piano"
    qtbot.waitUntil(lambda: panel.model.memory_at(panel.model.row_of(mem.id)).text == "Alex plays the cello and piano")


def test_delete_then_undo_through_the_panel(qtbot, window, bank):
    panel = window.memory
    mem = bank.list()[0]
    _select(panel, mem.id)
    assert panel.buttons["Delete"].isEnabled()
    panel.buttons["Delete"].click()
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "deleted")
    qtbot.waitUntil(lambda: panel.model.row_of(mem.id) is None)  # the Active view drops it
    assert "Deleted 1 memory" in window.statusBar().currentMessage()
    panel.buttons["Undo"].click()
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "active")
    qtbot.waitUntil(lambda: panel.model.row_of(mem.id) is not None)


def test_restore_from_the_deleted_view(qtbot, window, bank):
    panel = window.memory
    mem = bank.list()[1]
    bank.delete(mem.id)
    _wait_loaded(qtbot, panel, lambda: panel.status.setCurrentIndex(panel.status.findData("deleted")))
    assert _texts(panel) == [mem.text]
    _select(panel, mem.id)
    assert panel.buttons["Restore"].isEnabled() and not panel.buttons["Delete"].isEnabled()
    panel.buttons["Restore"].click()
    qtbot.waitUntil(lambda: bank.get(mem.id).status == "active")
    qtbot.waitUntil(lambda: panel.model.rowCount() == 0)


def test_forget_needs_confirmation_and_removes_for_good(qtbot, window, bank):
    from core.errors import NotFoundError

    panel = window.memory
    mem = bank.list()[0]
    _select(panel, mem.id)
    panel.buttons["Forget…"].click()
    box = [b for b in panel.findChildren(QMessageBox, "confirmForget") if b.isVisible()][0]
    box.button(QMessageBox.StandardButton.Cancel).click()
    assert bank.get(mem.id).status == "active"
    panel.buttons["Forget…"].click()
    box = [b for b in panel.findChildren(QMessageBox, "confirmForget") if b.isVisible()][0]
    [forget] = [b for b in box.buttons() if b.text() == "Forget"]
    forget.click()
    qtbot.waitUntil(lambda: panel.model.row_of(mem.id) is None)
    with pytest.raises(NotFoundError):
        bank.get(mem.id)
    assert all(mem.text not in (e.old_text or "") + (e.new_text or "") for e in bank.history())


def test_history_dialog_shows_the_event_log_and_undoes_one_event(qtbot, window, bank):
    panel = window.memory
    mem = bank.list()[0]
    bank.edit(mem.id, "Alex plays the cello well")
    _wait_loaded(qtbot, panel, panel.refresh)
    _select(panel, mem.id)
    panel.buttons["History…"].click()
    dialog = [d for d in panel.findChildren(HistoryDialog) if d.isVisible()][0]
    qtbot.waitUntil(lambda: dialog.model.rowCount() == 2)
    assert [dialog.model.index(r, 1).data() for r in range(2)] == ["EDIT", "ADD"]
    assert dialog.model.index(0, 3).data() == "Alex plays the cello"
    assert dialog.model.index(0, 4).data() == "Alex plays the cello well"
    dialog.view.setCurrentIndex(dialog.model.index(0, 0))
    dialog.undo_button.click()
    qtbot.waitUntil(lambda: bank.get(mem.id).text == "Alex plays the cello")
    assert not [d for d in panel.findChildren(HistoryDialog) if d.isVisible()]  # closed (and deleted)


def test_search_and_person_filter(qtbot, window):
    panel = window.memory
    _wait_loaded(qtbot, panel, lambda: panel.search.setText("peanuts"))
    assert _texts(panel)[0] == "Alex is allergic to peanuts"
    _wait_loaded(qtbot, panel, lambda: panel.search.clear())
    _wait_loaded(qtbot, panel, lambda: panel.person.setCurrentIndex(panel.person.findData("Sam")))
    assert _texts(panel) == ["Sam lives in Lisbon"]
    assert panel.count_label.text() == "3 memories · 1 shown"


def test_add_dialog_adds_a_memory(qtbot, window, bank):
    from app.gui.memory_panel import AddMemoryDialog

    panel = window.memory
    panel.buttons["Add…"].click()
    dialog = [d for d in panel.findChildren(AddMemoryDialog) if d.isVisible()][0]
    dialog.text.setPlainText("Sam has a sister called Ana")
    dialog.person.setCurrentText("Sam")
    dialog._ok()
    qtbot.waitUntil(lambda: bank.count("active") == 4)
    mem = bank.list()[0]
    assert (mem.text, mem.speaker, mem.source) == ("Sam has a sister called Ana", "Sam", "gui")
    assert mem.observed_at  # "h:mm am on D Month, YYYY"
    qtbot.waitUntil(lambda: panel.model.row_of(mem.id) == 0)


def test_export_then_import_round_trip(qtbot, window, bank, tmp_path):
    panel = window.memory
    path = tmp_path / "memories.jsonl"
    panel.export_to(str(path))
    qtbot.waitUntil(lambda: "Exported 3 memories" in window.statusBar().currentMessage())
    lines = [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]
    assert any("Sam lives in Lisbon" in json.dumps(x) for x in lines)
    for mem in bank.list():
        bank.forget(mem.id)
    _wait_loaded(qtbot, panel, lambda: panel.import_from(str(path)))
    assert sorted(_texts(panel)) == ["Alex is allergic to peanuts", "Alex plays the cello", "Sam lives in Lisbon"]
    assert "Imported 3 memories" in window.statusBar().currentMessage()


def test_bad_import_file_is_reported_and_imports_nothing(qtbot, window, bank, tmp_path):
    path = tmp_path / "broken.jsonl"
    path.write_text("this is not json\n", encoding="utf-8")
    window.memory.import_from(str(path))
    qtbot.waitUntil(lambda: any(b.isVisible() for b in window.findChildren(QMessageBox, "userError")))
    [b.close() for b in window.findChildren(QMessageBox, "userError")]
    assert bank.count("active") == 3


def test_pause_memory_is_persisted_and_stops_the_manager(qtbot, window, manager_backend, data_home):
    from core.config import Settings

    window.memory.pause.setChecked(True)
    assert Settings.load(data_home / "settings.json").memory_paused is True
    assert window.assistant.settings.memory_paused is True
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        window.chat.input.setPlainText("I have a dog")
        window.chat.submit()
    assert window.assistant.wait_idle(10) and manager_backend.calls == []
    window.memory.pause.setChecked(False)
    assert Settings.load(data_home / "settings.json").memory_paused is False


def test_manager_changes_redraw_only_their_rows(qtbot, window, bank):
    panel = window.memory
    resets = []
    panel.model.modelReset.connect(lambda: resets.append(1))
    mem = bank.list()[0]
    bank.edit(mem.id, "Alex plays the cello every day")  # from this thread, like the manager's
    qtbot.waitUntil(lambda: panel.model.memory_at(panel.model.row_of(mem.id)).text == "Alex plays the cello every day")
    new = bank.add("Sam likes tea", speaker="Sam").memory
    qtbot.waitUntil(lambda: panel.model.row_of(new.id) == 0)
    qtbot.waitUntil(lambda: panel.count_label.text() == "4 memories")
    assert resets == []


def test_multi_delete_is_one_change_and_one_undo(qtbot, window, bank):
    panel = window.memory
    first, second = bank.list()[:2]
    _select(panel, first.id)
    panel.view.selectionModel().select(panel.model.index(panel.model.row_of(second.id), 0),
                                       QItemSelectionModel.SelectionFlag.Select
                                       | QItemSelectionModel.SelectionFlag.Rows)
    heard = []
    window.bridge.bank_changed.connect(heard.append)
    panel.buttons["Delete"].click()
    qtbot.waitUntil(lambda: panel.model.rowCount() == 1)
    assert [bank.get(m.id).status for m in (first, second)] == ["deleted", "deleted"]
    qtbot.waitUntil(lambda: len(heard) == 1)
    assert sorted(m.id for m in heard[0].deleted) == sorted([first.id, second.id])
    assert "Deleted 2 memories" in window.statusBar().currentMessage()
    panel.buttons["Undo"].click()
    qtbot.waitUntil(lambda: [bank.get(m.id).status for m in (first, second)] == ["active", "active"])
    qtbot.waitUntil(lambda: panel.model.rowCount() == 3)

"""Every item model passes Qt's model tester (empty, filled, and through its updates)."""

from __future__ import annotations

from PySide6.QtCore import QtMsgType, Qt

from app.gui.conversation_list import ConversationListModel, ConversationRole
from app.gui.memory_model import EventTableModel, MemoryRole, MemoryTableModel, local_time
from core.types import Memory, MemoryChanges, MemoryEvent


def _mem(i, text="fact", status="active", speaker="Ann", version=1):
    return Memory(i, f"{text} {i}", speaker=speaker, observed_at="1:56 pm on 8 May, 2023",
                  created_at="2024-01-02T03:04:05+00:00", updated_at="2024-01-02T03:04:05+00:00",
                  status=status, version=version)


def test_memory_table_model(qtmodeltester):
    """One tester per model: it stays connected and checks every later change."""
    model = MemoryTableModel()
    model.set_rows([_mem(i) for i in range(1, 6)] + [_mem(9, status="deleted")], {1: 0.5})
    qtmodeltester.check(model, force_py=True)
    model.apply_changes(MemoryChanges(added=[_mem(10)], updated=[_mem(2, "changed", version=2)],
                                      deleted=[_mem(3, status="deleted")]), accepts=lambda m: m.status == "active")
    assert [m.id for m in model.memories()] == [10, 1, 2, 4, 5, 9]
    assert model.data(model.index(2, 0)) == "changed 2"
    assert model.data(model.index(0, 0), MemoryRole).id == 10
    assert not model.flags(model.index(5, 0)) & Qt.ItemFlag.ItemIsEditable  # deleted: not editable
    assert not model.flags(model.index(0, 1)) & Qt.ItemFlag.ItemIsEditable  # only the text is
    model.remove_ids([10, 9])
    assert model.rowCount() == 4
    model.set_rows([])


def test_memory_table_optimistic_edit(qtbot, qtmodeltester):
    model = MemoryTableModel()
    model.set_rows([_mem(1), _mem(2)])
    qtmodeltester.check(model, force_py=True)
    with qtbot.waitSignal(model.editRequested) as blocker:
        assert model.setData(model.index(0, 0), "  new text  ")
    assert blocker.args == [1, "new text", 1]
    assert model.data(model.index(0, 0)) == "new text"
    assert not model.flags(model.index(0, 0)) & Qt.ItemFlag.ItemIsEditable  # until saved
    assert not model.setData(model.index(1, 0), "   ")  # empty: refused
    assert not model.setData(model.index(1, 0), "fact 2")  # unchanged: refused
    model.revert_edit(1)
    assert model.data(model.index(0, 0)) == "fact 1"
    model.setData(model.index(0, 0), "newer")
    model.confirm_edit(_mem(1, "newer", version=2))
    assert model.memory_at(0).version == 2


def test_event_table_model(qtmodeltester):
    model = EventTableModel()
    model.set_events([
        MemoryEvent(2, 1, "EDIT", "a", "b", "user", "2024-01-02T03:04:05+00:00"),
        MemoryEvent(1, 1, "ADD", None, "a", "manager", "2024-01-02T03:00:00+00:00", turn="chat:1/2", undone=True),
    ])
    qtmodeltester.check(model, force_py=True)
    model.set_events([])
    assert model.rowCount() == 0
    model.set_events([MemoryEvent(2, 1, "EDIT", "a", "b", "user", "2024-01-02T03:04:05+00:00"),
                      MemoryEvent(1, 1, "ADD", None, "a", "manager", "2024-01-02T03:00:00+00:00",
                                  turn="chat:1/2", undone=True)])
    assert model.index(1, 1).data() == "ADD (undone)"
    assert model.index(1, 5).data() == "chat:1/2"


def test_conversation_list_model(qtmodeltester):
    from core.chats import Conversation

    model = ConversationListModel()
    model.set_conversations([Conversation(2, "Trip plans", "2024-01-01", "2024-01-02"),
                             Conversation(1, "Secret", "2024-01-01", "2024-01-01", temporary=True)])
    qtmodeltester.check(model, force_py=True)
    assert model.index(0).data() == "Trip plans"
    assert model.index(1).data() == "Secret (temporary)"
    assert model.index(1).data(ConversationRole).id == 1
    assert model.row_of(1) == 1 and model.row_of(7) is None


def test_compact_time():
    from datetime import datetime

    from app.gui.memory_model import compact_time

    now = datetime(2026, 11, 21, 12, 0)
    assert compact_time("9:58 am on 21 November, 2026", now) == "21 Nov 2026"
    assert compact_time("2025-03-04T10:00:00", now) == "4 Mar 2025"
    assert compact_time("2026-03-04T10:05:00", now) == "4 Mar 10:05"
    assert compact_time("last summer", now) == "last summer" and compact_time(None, now) == ""


def test_local_time_formats_iso_and_keeps_other_text():
    assert local_time("") == ""
    assert local_time("yesterday") == "yesterday"
    assert len(local_time("2024-01-02T03:04:05+00:00")) == len("2024-01-02 03:04")


def test_qt_warnings_are_caught(fail_on_qt_warnings):
    """The autouse handler records Qt warnings (so a test emitting one fails at teardown)."""
    from PySide6.QtCore import qWarning

    qWarning("deliberate warning from a test")
    assert any("deliberate warning" in m for m in fail_on_qt_warnings)
    fail_on_qt_warnings.clear()
    assert QtMsgType.QtWarningMsg  # the handler's type filter exists in this Qt

"""History, undo, restore and forget, worked from the event log."""

from __future__ import annotations

import pytest

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.memory import MemoryBank
from core.types import MemoryOp


def test_history_records_every_kind_of_change(bank):
    mem = bank.add("Caroline likes tea", turn="chat:1/1").memory
    bank.edit(mem.id, "Caroline likes green tea")
    bank.delete(mem.id)
    bank.restore(mem.id)
    bank.apply([MemoryOp("NOOP", text="Caroline drinks tea", memory_id=mem.id)], turn="chat:1/3")
    events = bank.history(mem.id)
    assert [e.event for e in events] == ["NOOP", "RESTORE", "DELETE", "EDIT", "ADD"]
    assert [e.actor for e in events] == ["manager", "user", "user", "user", "user"]
    assert events[-1].turn == "chat:1/1" and events[0].turn == "chat:1/3"
    assert (events[3].old_text, events[3].new_text) == ("Caroline likes tea", "Caroline likes green tea")
    assert all(e.at.endswith("+00:00") for e in events)
    assert [e.id for e in bank.history(limit=2)] == [events[0].id, events[1].id]


def test_undo_walks_back_one_change_at_a_time(bank):
    mem = bank.add("Melanie has a cat").memory
    bank.edit(mem.id, "Melanie has two cats")
    bank.delete(mem.id)
    assert bank.undo().added[0].id == mem.id  # undo the delete
    assert bank.get(mem.id).status == "active"
    changes = bank.undo()  # undo the edit
    assert changes.updated[0].text == "Melanie has a cat"
    assert bank.search("cat", k=1, mode="keyword")[0].memory.text == "Melanie has a cat"
    assert bank.undo().deleted[0].id == mem.id  # undo the add: soft-deleted
    assert bank.get(mem.id).status == "deleted"
    with pytest.raises(NotFoundError):
        bank.undo()
    kinds = [e.event for e in bank.history(mem.id)]
    assert kinds == ["UNDO", "UNDO", "UNDO", "DELETE", "EDIT", "ADD"]
    assert all(e.undone for e in bank.history(mem.id) if e.event != "UNDO")


def test_undo_reverts_a_whole_manager_turn(bank):
    a = bank.add("Caroline is a counsellor").memory
    b = bank.add("Melanie runs").memory
    bank.apply([MemoryOp("ADD", text="Caroline adopted a dog"),
                MemoryOp("UPDATE", memory_id=a.id, text="Caroline is a school counsellor"),
                MemoryOp("DELETE", memory_id=b.id),
                MemoryOp("NOOP", text="nothing")], turn="chat:2/5")
    changes = bank.undo()
    assert len(changes.event_ids) == 3
    assert bank.get(a.id).text == "Caroline is a counsellor"
    assert bank.get(b.id).status == "active"
    assert [m.text for m in bank.list()] == ["Melanie runs", "Caroline is a counsellor"]
    noop = bank.history(limit=10)[3]
    assert noop.event == "NOOP" and not noop.undone


def test_undo_a_given_event_checks_it_is_still_current(bank):
    mem = bank.add("v1").memory
    bank.edit(mem.id, "v2")
    bank.edit(mem.id, "v3")
    first_edit = [e for e in bank.history(mem.id) if e.event == "EDIT"][-1]
    with pytest.raises(ConflictError):
        bank.undo(first_edit.id)  # v2 -> v3 happened after it
    latest = bank.history(mem.id)[0]
    bank.undo(latest.id)
    assert bank.get(mem.id).text == "v2"
    with pytest.raises(ConflictError):
        bank.undo(latest.id)  # already undone
    bank.undo(first_edit.id)
    assert bank.get(mem.id).text == "v1"
    undo_event = bank.history(mem.id)[0]
    with pytest.raises(InvalidInputError):
        bank.undo(undo_event.id)


def test_listeners_hear_undo_and_restore(bank):
    seen = []
    bank.add_listener(seen.append)
    mem = bank.add("x").memory
    bank.delete(mem.id)
    bank.restore(mem.id)
    bank.undo()
    assert [c.summary() for c in seen] == ["1 added", "1 deleted", "1 added", "1 deleted"]
    bank.remove_listener(seen.append)
    bank.add("y")
    assert len(seen) == 4


def test_a_failing_listener_does_not_break_the_write(bank, caplog):
    def boom(changes):
        raise RuntimeError("listener bug")

    bank.add_listener(boom)
    mem = bank.add("still saved").memory
    assert bank.get(mem.id).text == "still saved"
    assert "listener" in caplog.text


def _file_bytes(path):
    data = path.read_bytes()
    for extra in (path.with_name(path.name + "-wal"),):
        if extra.exists():
            data += extra.read_bytes()
    return data


def test_forget_removes_the_memory_and_its_text_from_history(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    secret = "Zyxwvut my bank PIN is 8675309 qqsecretqq"
    with MemoryBank(path, hash_embedder) as bank:
        other = bank.add("Caroline likes tea").memory
        mem = bank.add(secret).memory
        bank.edit(mem.id, secret + " (edited)")
        bank.delete(mem.id)
        bank.restore(mem.id)
        bank.apply([MemoryOp("NOOP", text=secret)])
        bank.forget(mem.id)
        with pytest.raises(NotFoundError):
            bank.get(mem.id)
        events = bank.history(mem.id)
        assert [e.event for e in events] == ["FORGET"]
        assert events[0].old_text is None and events[0].new_text is None
        for e in bank.history(limit=1000):
            assert "qqsecretqq" not in (e.old_text or "") + (e.new_text or "")
        assert bank.search("8675309 qqsecretqq", k=5, mode="keyword") == []
        assert all(h.memory.id != mem.id for h in bank.search("PIN", k=5, mode="vector"))
        assert bank._conn.execute("SELECT count(*) FROM memory_vectors WHERE rowid = ?", (mem.id,)).fetchone()[0] == 0
        assert bank.get(other.id).text == "Caroline likes tea"
        with pytest.raises(InvalidInputError):  # forgetting cannot be undone
            bank.undo(events[0].id)
    assert b"qqsecretqq" not in _file_bytes(path)
    with MemoryBank(path, hash_embedder) as bank:  # and the ids are never reused
        assert bank.add("new").memory.id > mem.id

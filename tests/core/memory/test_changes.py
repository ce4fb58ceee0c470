"""Every bank mutator returns the MemoryChanges it committed (rows, batch id for undo, turn);
batch delete/restore/forget are one transaction and one undo step; TurnRef round trips."""

from __future__ import annotations

import json

import pytest

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.types import MemoryChanges, MemoryOp, TurnRef


def test_every_mutator_returns_its_changes_and_the_id_that_undoes_it(bank, tmp_path):
    heard: list[MemoryChanges] = []
    bank.add_listener(heard.append)
    added = bank.add("Caroline likes tea", speaker="Caroline", turn=TurnRef.chat(3, 17))
    mem = added.memory
    assert isinstance(added, MemoryChanges) and added.added == [mem] and added.turn == TurnRef(3, 17)
    assert added.batch_id is not None and added.event_ids and heard[-1] is added
    edited = bank.edit(mem.id, "Caroline likes green tea")
    assert edited.updated[0].text == "Caroline likes green tea" and edited.batch_id > added.batch_id
    assert edited.turn is None  # a plain user action
    same = bank.edit(mem.id, "Caroline likes green tea")
    assert not same and same.batch_id is None and heard[-1] is edited  # nothing written, no one told
    deleted = bank.delete(mem.id)
    assert deleted.memory.status == "deleted"
    restored = bank.restore(mem.id)
    assert restored.added[0].status == "active"
    for changes, check in ((restored, "deleted"), (deleted, "active"), (edited, "Caroline likes tea")):
        undone = bank.undo(batch=changes.batch_id)
        assert isinstance(undone, MemoryChanges) and undone.batch_id not in (None, changes.batch_id)
        now = bank.get(mem.id)
        assert check in (now.status, now.text)
    with pytest.raises(NotFoundError):
        bank.undo(batch=edited.batch_id)  # already undone
    out = tmp_path / "m.jsonl"
    bank.export_jsonl(out)
    forgotten = bank.forget(mem.id)
    assert forgotten.forgotten == [mem.id] and not forgotten.memories and forgotten.summary() == "1 forgotten"
    report = bank.import_jsonl(out)
    assert report.imported == 1 and report.changes.added[0].text == "Caroline likes tea"
    assert str(report.changes.turn) == "import:m.jsonl"
    bank.undo(batch=report.changes.batch_id)
    assert bank.count("active") == 0


def test_batch_delete_is_one_transaction_and_one_undo_restores_all(bank):
    ids = [bank.add(f"fact number {i}").memory.id for i in range(4)]
    heard: list[MemoryChanges] = []
    bank.add_listener(heard.append)
    changes = bank.delete(ids[:3])
    assert sorted(m.id for m in changes.deleted) == ids[:3] and len(changes.event_ids) == 3
    assert len(heard) == 1 and heard[0] is changes  # one commit, one notification
    with bank.reader() as conn:  # the three DELETE events carry the one batch number
        assert conn.execute("SELECT event, count(*) FROM memory_events WHERE batch = ? GROUP BY event",
                            (changes.batch_id,)).fetchall() == [("DELETE", 3)]
    assert [bank.get(i).status for i in ids] == ["deleted"] * 3 + ["active"]
    undone = bank.undo(batch=changes.batch_id)
    assert sorted(m.id for m in undone.added) == ids[:3]
    assert [bank.get(i).status for i in ids] == ["active"] * 4
    # all or nothing: one id that cannot be deleted leaves every other one as it was
    bank.delete(ids[3])
    with pytest.raises(ConflictError):
        bank.delete([ids[0], ids[1], ids[3]])
    with pytest.raises(NotFoundError):
        bank.delete([ids[0], 999])
    assert [bank.get(i).status for i in ids[:3]] == ["active"] * 3
    # restore and forget take several ids too; plain undo takes the newest batch whole
    bank.delete(ids[:2])
    restored = bank.restore([ids[0], ids[1], ids[3]])
    assert sorted(m.id for m in restored.added) == [ids[0], ids[1], ids[3]]
    bank.undo()
    assert [bank.get(i).status for i in (ids[0], ids[1], ids[3])] == ["deleted"] * 3
    assert bank.forget(ids[:2]).forgotten == ids[:2] and bank.count(None) == 2


def test_bad_id_lists_are_refused(bank):
    with pytest.raises(InvalidInputError):
        bank.delete([])
    with pytest.raises(NotFoundError):
        bank.delete("1")
    with pytest.raises(NotFoundError):
        bank.restore([True])


@pytest.mark.parametrize("text, ref", [
    ("chat:3/17", TurnRef(3, 17)),
    ("chat:3", TurnRef(3, None)),
    ("chat:0/0", TurnRef(0, 0)),
    ("locomo:conv-26/D1:3", TurnRef(external="locomo:conv-26/D1:3")),
    ("import:mem.jsonl", TurnRef(external="import:mem.jsonl")),
    ("chat:03/17", TurnRef(external="chat:03/17")),  # not the canonical form: kept as text
    ("chat:3/16-17", TurnRef(external="chat:3/16-17")),
    ("chat:", TurnRef(external="chat:")),
])
def test_turn_ref_round_trips_the_stored_text(text, ref):
    assert TurnRef.parse(text) == ref and str(ref) == text and TurnRef.parse(str(ref)) == ref
    assert TurnRef.of(text) == ref and TurnRef.of(ref) is ref and TurnRef.of(None) is None
    assert ref.is_chat == (ref.external is None)
    assert hash(ref) == hash(TurnRef.parse(text))  # frozen: usable as a key


def test_turn_is_stored_as_text_and_comes_back_typed(bank):
    changes = bank.apply([MemoryOp("ADD", text="Ann has a cat")], turn=TurnRef.chat(2, 5))
    assert changes.turn == TurnRef(2, 5)
    assert bank.history(changes.memory.id)[0].turn == "chat:2/5"  # schema and old rows unchanged
    assert bank.add("Bob runs", turn="chat:2/6").turn == TurnRef(2, 6)  # the text form still works
    assert json.dumps(str(changes.turn)) == '"chat:2/5"'


def test_merge_keeps_a_common_batch_and_turn_only():
    a = MemoryChanges(noops=1, batch_id=4, turn=TurnRef(1, 2))
    assert a.merge(MemoryChanges()).batch_id == 4 and MemoryChanges().merge(a).turn == TurnRef(1, 2)
    mixed = a.merge(MemoryChanges(batch_id=5, turn=TurnRef(1, 3), forgotten=[7]))
    assert (mixed.batch_id, mixed.turn, mixed.forgotten, mixed.noops) == (None, None, [7], 1)

"""Provenance: every memory links to the turn(s) it came from (chat messages read by join,
other turns kept with their text), REJECT events for refused facts, supersession, and the
removal of a source's text (alone or with `forget(sources=True)`), bytes gone from every file."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError, NotFoundError
from core.memory import MemoryBank
from core.types import REJECT, MemoryOp, SourceTurn, TurnRef

TIME = "1:56 pm on 8 May, 2023"


def _chat_turn(bank, text, cid=None, speaker="Sam"):
    """A stored chat's user message queued for the manager, and its SourceTurn and TurnRef."""
    cid = cid or bank.chats.create_conversation("Chat").id
    msg = bank.chats.add_message(cid, "user", text, queue_for_manager=True, speaker=speaker, said_at=TIME)
    return msg, SourceTurn(text, speaker=speaker, said_at=TIME, message_id=msg.id), TurnRef.chat(cid, msg.id)


def _turn(text, ref, speaker="Caroline"):
    return SourceTurn(text, speaker=speaker, said_at=TIME, ref=ref)


def test_a_chat_turn_links_its_message_and_later_turns_add_links(bank):
    msg, source, turn = _chat_turn(bank, "Hi! I'm Sam. I live in Lisbon.")
    changes = bank.apply([MemoryOp("ADD", text="Sam lives in Lisbon", speaker="Sam")], turn=turn,
                         done_message_id=msg.id, source=source)
    mem = changes.memory
    [link] = bank.memory_sources(mem.id)
    assert (link.kind, link.role, link.text, link.speaker, link.said_at) == \
        ("chat", "added", "Hi! I'm Sam. I live in Lisbon.", "Sam", TIME)
    assert link.ref == str(turn) and not link.deleted and link.source_id is not None
    # the chat text is read from `messages`, never copied
    assert bank._conn.execute("SELECT text FROM sources WHERE id = ?", (link.source_id,)).fetchone()[0] is None

    msg2, source2, turn2 = _chat_turn(bank, "I moved to Berlin in May.", cid=turn.conversation_id)
    bank.apply([MemoryOp("UPDATE", text="Sam lives in Berlin", memory_id=mem.id)], turn=turn2, source=source2)
    msg3, source3, turn3 = _chat_turn(bank, "Berlin is home now.", cid=turn.conversation_id)
    bank.apply([MemoryOp("NOOP", memory_id=mem.id)], turn=turn3, source=source3)
    links = bank.memory_sources(mem.id)
    assert [(s.role, s.text) for s in links] == [("added", "Hi! I'm Sam. I live in Lisbon."),
                                                 ("updated", "I moved to Berlin in May."),
                                                 ("repeated", "Berlin is home now.")]
    assert bank.history(mem.id)[0].turn == str(turn3)


def test_a_turn_source_keeps_its_text_and_is_reused_by_ref(bank):
    source = _turn("I went to a LGBTQ support group yesterday.", "locomo:conv-26/D1:3")
    a = bank.apply([MemoryOp("ADD", text="Caroline went to a LGBTQ support group", speaker="Caroline")],
                   turn="locomo:conv-26/D1:3", source=source).memory
    b = bank.apply([MemoryOp("ADD", text="Caroline went to a group yesterday", speaker="Caroline")],
                   turn="locomo:conv-26/D1:3", source=source).memory
    found = bank.sources([a.id, b.id, 999])
    assert found[999] == []
    [sa], [sb] = found[a.id], found[b.id]
    assert sa.source_id == sb.source_id and sa.kind == "turn" and sa.ref == "locomo:conv-26/D1:3"
    assert sa.text == "I went to a LGBTQ support group yesterday." and sa.speaker == "Caroline"
    assert bank._conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 1
    with pytest.raises(NotFoundError):
        bank.memory_sources(999)


def test_a_temporary_chat_links_nothing_and_a_bad_source_is_refused(bank):
    temp = bank.chats.create_conversation("Temp", temporary=True)
    msg = bank.chats.add_message(temp.id, "user", "I have a cat")
    mem = bank.apply([MemoryOp("ADD", text="Sam has a cat")],
                     source=SourceTurn("I have a cat", message_id=msg.id)).memory
    assert bank.memory_sources(mem.id) == []
    assert bank._conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 0
    for bad in ("chat:1/2", SourceTurn(""), SourceTurn("x", message_id=True)):  # type: ignore[arg-type]
        with pytest.raises(InvalidInputError):
            bank.apply([MemoryOp("ADD", text="never written")], source=bad)
    assert bank.count() == 1


def test_a_message_gone_meanwhile_still_gives_the_memory_a_deleted_link(bank):
    msg, source, turn = _chat_turn(bank, "I play the cello")
    bank.chats.purge_conversation(turn.conversation_id)
    mem = bank.apply([MemoryOp("ADD", text="Sam plays the cello")], turn=turn, source=source).memory
    [link] = bank.memory_sources(mem.id)
    assert link.kind == "chat" and link.deleted and link.text is None and link.ref == str(turn)


def test_the_users_own_add_and_edit_are_marked_as_the_users(bank):
    mem = bank.add("Sam likes jazz").memory
    assert [(s.kind, s.role, s.source_id, s.deleted) for s in bank.memory_sources(mem.id)] == \
        [("user", "remembered", None, False)]
    bank.edit(mem.id, "Sam likes cool jazz")
    assert [s.role for s in bank.memory_sources(mem.id)] == ["remembered", "edited"]
    bank.undo()
    assert [s.role for s in bank.memory_sources(mem.id)] == ["remembered"]
    assert bank.memory_sources(bank.add("manager fact", actor="manager").memory.id) == []
    said = bank.add("Sam owns a kayak", source=_turn("remember that I own a kayak", "tool:remember/1")).memory
    [link] = bank.memory_sources(said.id)
    assert (link.role, link.kind, link.text) == ("remembered", "turn", "remember that I own a kayak")
    assert said.source == "tool:remember/1"


def test_an_undone_update_drops_its_link(bank):
    src = _turn("I moved to Berlin", "ingest:notes/1")
    mem = bank.add("Sam lives in Lisbon", actor="manager", source=_turn("I live in Lisbon", "ingest:notes/0")).memory
    bank.apply([MemoryOp("UPDATE", text="Sam lives in Berlin", memory_id=mem.id)], source=src)
    assert [s.role for s in bank.memory_sources(mem.id)] == ["added", "updated"]
    bank.undo()
    assert bank.get(mem.id).text == "Sam lives in Lisbon"
    assert [s.role for s in bank.memory_sources(mem.id)] == ["added"]


def test_rejected_facts_are_recorded_with_their_reason_never_written(bank):
    old = bank.add("Sam lives in Lisbon", speaker="Sam").memory
    heard = []
    bank.add_listener(heard.append)
    turn = "ingest:notes.jsonl/1"
    changes = bank.apply([MemoryOp("ADD", text="Sam has a dog named Rex", speaker="Sam"),
                          MemoryOp(REJECT, text="Sam has a cat named Luna", reason="not in what was said: 'Luna'"),
                          MemoryOp(REJECT, text="Sam lives in Paris", memory_id=old.id,
                                   reason="not in what was said: 'Paris'")],
                         turn=turn, source=_turn("I have a dog called Rex", turn, speaker="Sam"))
    assert [m.text for m in changes.added] == ["Sam has a dog named Rex"] and not changes.updated
    assert changes.noops == 0 and changes.batch_id is not None
    assert bank.count() == 2 and "Luna" not in " ".join(m.text for m in bank.list(status=None))
    rejected = bank.rejected(turn)
    assert [(e.event, e.new_text, e.reason) for e in rejected] == [
        ("REJECT", "Sam lives in Paris", "not in what was said: 'Paris'"),
        ("REJECT", "Sam has a cat named Luna", "not in what was said: 'Luna'")]
    assert rejected[0].memory_id == old.id and rejected[1].memory_id is None
    assert bank.rejected("chat:1/2") == [] and len(bank.rejected()) == 2
    assert [e.reason for e in bank.history(old.id) if e.event == REJECT] == ["not in what was said: 'Paris'"]
    assert any(e.reason for e in bank.history())
    bank.undo()  # the ADD is undone; the refusals stay (they are not changes)
    assert bank.count() == 1 and len(bank.rejected(turn)) == 2
    only = bank.apply([MemoryOp(REJECT, text="Sam is a pilot", reason="no such words")], turn="ingest:notes.jsonl/2",
                      source=_turn("qqpilotqq I fly", "ingest:notes.jsonl/2"))
    assert not only and only.batch_id is not None and heard[-1] is only
    # a turn whose facts were all refused keeps no copy of its text
    assert bank._conn.execute("SELECT count(*) FROM sources WHERE text LIKE '%qqpilotqq%'").fetchone()[0] == 0
    bank.undo()  # a REJECT is not undoable: undo passes it for the change before
    assert bank.get(old.id).status == "deleted" and len(bank.rejected()) == 3
    with pytest.raises(InvalidInputError):
        bank.undo(only.event_ids[0])


def test_an_add_that_supersedes_is_undone_as_one_change(bank):
    old = bank.add("Maria lives in Lisbon", speaker="Maria", actor="manager",
                   source=_turn("I live in Lisbon", "ingest:m/1", speaker="Maria")).memory
    src = _turn("I moved from Lisbon to Berlin", "ingest:m/2", speaker="Maria")
    changes = bank.apply([MemoryOp("ADD", text="Maria lives in Berlin", speaker="Maria", supersedes=old.id)],
                         turn="ingest:m/2", source=src)
    new = changes.added[0]
    was = bank.get(old.id)
    assert was.status == "superseded" and was.superseded_by == new.id and changes.deleted == [was]
    assert bank.list(status="superseded") == [was] and [m.id for m in bank.list()] == [new.id]
    assert bank.history(old.id)[0].event == "SUPERSEDE"
    assert [(s.role, s.text) for s in bank.memory_sources(old.id)] == [
        ("added", "I live in Lisbon"), ("superseded", "I moved from Lisbon to Berlin")]
    assert [(s.role, s.text) for s in bank.memory_sources(new.id)] == [("added", "I moved from Lisbon to Berlin")]
    assert all(h.memory.id != old.id for h in bank.search("Lisbon", k=5))

    bank.undo(batch=changes.batch_id)
    back = bank.get(old.id)
    assert back.status == "active" and back.superseded_by is None
    assert bank._conn.execute("SELECT superseded_by FROM memories WHERE id = ?", (old.id,)).fetchone()[0] is None
    assert bank.get(new.id).status == "deleted"
    assert [s.role for s in bank.memory_sources(old.id)] == ["added"]


def test_restoring_a_superseded_memory_clears_superseded_by_and_undo_brings_it_back(bank):
    old = bank.add("Sam works at Acme").memory
    new = bank.apply([MemoryOp("ADD", text="Sam works at Globex", supersedes=old.id)]).added[0]
    assert bank.restore(old.id).memory.superseded_by is None
    assert bank.get(old.id).status == "active"
    bank.undo()
    assert (bank.get(old.id).status, bank.get(old.id).superseded_by) == ("superseded", new.id)


def test_a_supersede_of_a_memory_not_active_or_not_an_add_is_refused_whole(bank):
    old = bank.add("Sam has a bike").memory
    bank.delete(old.id)
    with pytest.raises(NotFoundError):
        bank.apply([MemoryOp("ADD", text="first"), MemoryOp("ADD", text="Sam has a car", supersedes=old.id)])
    with pytest.raises(InvalidInputError):
        bank.apply([MemoryOp("UPDATE", text="x", memory_id=old.id, supersedes=old.id)])
    assert bank.count(None) == 1


def test_a_purged_chat_leaves_its_memories_with_a_deleted_link(bank):
    msg, source, turn = _chat_turn(bank, "I have a dog called Rex")
    mem = bank.apply([MemoryOp("ADD", text="Sam has a dog named Rex")], turn=turn, done_message_id=msg.id,
                     source=source).memory
    bank.chats.delete_conversation(turn.conversation_id)
    assert bank.memory_sources(mem.id)[0].text == "I have a dog called Rex"  # in the trash: still there
    assert bank.chats.purge_deleted() == 1
    assert bank.get(mem.id).text == "Sam has a dog named Rex"
    [link] = bank.memory_sources(mem.id)
    assert link.kind == "chat" and link.deleted and link.text is None and link.ref == str(turn)
    assert bank._conn.execute("SELECT message_id FROM sources").fetchall() == [(None,)]


def test_remove_source_text_in_one_transaction(bank):
    msg, chat_src, turn = _chat_turn(bank, "my locker code is 4412")
    a = bank.apply([MemoryOp("ADD", text="Sam's locker code is 4412")], turn=turn, source=chat_src).memory
    ref = "ingest:notes/7"
    b = bank.apply([MemoryOp("ADD", text="Sam has a boat"), MemoryOp(REJECT, text="Sam has a yacht", reason="r")],
                   turn=ref, source=_turn("I have a boat", ref)).added[0]
    ids = [bank.memory_sources(a.id)[0].source_id, bank.memory_sources(b.id)[0].source_id]
    with pytest.raises(NotFoundError):
        bank.remove_source_text([ids[0], 12345])
    assert bank.memory_sources(a.id)[0].text == "my locker code is 4412" and len(bank.rejected(ref)) == 1
    assert bank.remove_source_text(ids) == 2
    assert [bank.memory_sources(i)[0].deleted for i in (a.id, b.id)] == [True, True]
    kept = bank.chats.get_message(msg.id)
    assert kept.content == "" and kept.meta.get("removed") is True
    assert bank.rejected(ref) == [] and bank.get(a.id).text == "Sam's locker code is 4412"
    assert bank.remove_source_text(ids) == 0


def _file_bytes(path):
    return b"".join(p.read_bytes() for p in (path, path.with_name(path.name + "-wal"),
                                            path.with_name(path.name + "-shm")) if p.exists())


@pytest.mark.parametrize("with_sources", [False, True])
def test_forget_removes_the_memory_links_and_on_request_its_source_text(tmp_path, hash_embedder, with_sources):
    path = tmp_path / "m.sqlite3"
    with MemoryBank(path, hash_embedder) as bank:
        msg, chat_src, turn = _chat_turn(bank, "qqchatturnqq my PIN is 8675309")
        ref = "ingest:secret/1"
        mem = bank.apply([MemoryOp("ADD", text="qqmemoryqq Sam's PIN is 8675309"),
                          MemoryOp(REJECT, text="qqrejectqq Sam has a safe", reason="not said")],
                         turn=turn, source=chat_src).added[0]
        bank.apply([MemoryOp("UPDATE", text="qqmemoryqq Sam's PIN is 8675309 still", memory_id=mem.id),
                    MemoryOp(REJECT, text="qqrejecttwoqq Sam hides it", reason="not said")],
                   turn=ref, source=_turn("qqturnqq the PIN is still 8675309", ref))
        other = bank.apply([MemoryOp("ADD", text="Sam likes tea")], turn=ref, source=_turn("x", ref)).memory
        bank.forget(mem.id, sources=with_sources)
        links = bank._conn.execute("SELECT count(*) FROM memory_sources WHERE memory_id = ?", (mem.id,))
        assert links.fetchone()[0] == 0
        assert [s.deleted for s in bank.memory_sources(other.id)] == [with_sources]
        assert (bank.chats.get_message(msg.id).content == "") == with_sources
    data = _file_bytes(path)
    assert b"qqmemoryqq" not in data
    for marker in (b"qqchatturnqq", b"qqturnqq", b"qqrejectqq", b"qqrejecttwoqq"):
        assert (marker in data) != with_sources, marker


def test_sources_are_read_in_one_call_for_many_memories(bank):
    ids = [bank.apply([MemoryOp("ADD", text=f"fact {i}")], source=_turn(f"turn {i}", f"t/{i}")).memory.id
           for i in range(3)]
    found = bank.sources(ids * 400)  # repeated ids, over one chunk
    assert sorted(found) == ids and [found[i][0].text for i in ids] == ["turn 0", "turn 1", "turn 2"]
    assert json.loads(json.dumps([s.ref for s in found[ids[0]]])) == ["t/0"]


def test_an_export_with_rejects_and_supersessions_imports_again(bank, make_bank, tmp_path):
    old = bank.add("Sam works at Acme").memory
    bank.apply([MemoryOp("ADD", text="Sam works at Globex", supersedes=old.id),
                MemoryOp(REJECT, text="Sam works at Initech", memory_id=old.id, reason="not said: 'Initech'")])
    path = tmp_path / "out.jsonl"
    assert bank.export_jsonl(path) == 2
    other = make_bank(tmp_path / "other.sqlite3")
    assert other.import_jsonl(path).imported == 2
    [was] = other.list(status="superseded")
    assert [e.reason for e in other.history(was.id) if e.event == REJECT] == ["not said: 'Initech'"]

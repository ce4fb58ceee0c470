"""The Memory Manager's durable queue: a user message is marked pending with the message, the
mark is cleared with the turn's ops (or recorded as "nothing"/"failed"), a new run resumes what
an earlier one left, in order, exactly once; temporary chats, paused memory, commands and
regenerate never queue."""

from __future__ import annotations

import json

import pytest

from core.config import Settings
from core.errors import ConflictError, InvalidInputError
from core.fakes import FakeBackend, add_every_fact, router
from core.memory import MemoryBank
from core.memory.migrations import MIGRATIONS
from core.types import MemoryOp


def facts_of(content: str) -> list[str]:
    said = content.split("Message: ")[-1].split("\n")[0]
    return [f"Ann said {said.strip().rstrip('.')}."]


def scripted(**kw) -> FakeBackend:
    return FakeBackend(default=router("**Answer:** ok", facts=facts_of, decide=add_every_fact), **kw)


@pytest.fixture
def make(make_assistant):
    return lambda answer=None, manager=None, **kw: make_assistant(answer or scripted(), manager, **kw)


def outcome(bank, mid):
    with bank.reader() as conn:
        row = conn.execute("SELECT done_at, outcome FROM manager_queue WHERE message_id = ?", (mid,)).fetchone()
    return None if row is None else row[1]


def manager_batches(bank, turn: str) -> int:
    with bank.reader() as conn:
        return conn.execute("SELECT count(DISTINCT batch) FROM memory_events WHERE turn = ? AND actor = 'manager'",
                            (turn,)).fetchone()[0]


def test_the_mark_is_written_with_the_message_and_cleared_with_the_ops(bank, make):
    assistant = make()
    cid = bank.chats.create_conversation("t").id
    reply = assistant.reply(cid, "I adopted a puppy named Biscuit")
    assert assistant.wait_idle(5)
    assert outcome(bank, reply.user_message_id) == "applied"
    assert bank.chats.pending_turns() == [] and not bank.chats.is_pending(reply.user_message_id)
    assert manager_batches(bank, f"chat:{cid}/{reply.user_message_id}") == 1
    assert outcome(bank, reply.message_id) is None  # the assistant's reply is never queued


def test_apply_with_a_mark_that_is_not_pending_writes_nothing(bank):
    cid = bank.chats.create_conversation("t").id
    msg = bank.chats.add_message(cid, "user", "hi", queue_for_manager=True, speaker="Ann", said_at="now")
    bank.apply([MemoryOp("ADD", text="Ann says hi.")], turn=f"chat:{cid}/{msg.id}", done_message_id=msg.id)
    with pytest.raises(ConflictError):
        bank.apply([MemoryOp("ADD", text="Ann says hi again.")], done_message_id=msg.id)
    assert [m.text for m in bank.list()] == ["Ann says hi."]
    with pytest.raises(ConflictError):
        bank.chats.finish_pending(msg.id, "nothing")
    with pytest.raises(InvalidInputError):
        bank.chats.add_message(cid, "assistant", "x", queue_for_manager=True)


def test_a_turn_with_nothing_or_unusable_output_is_cleared_and_recorded(bank, make):
    cid = bank.chats.create_conversation("t").id
    quiet = make(scripted(), FakeBackend(default=json.dumps({"facts": []})))
    first = quiet.reply(cid, "hello there")
    assert quiet.wait_idle(5)
    assert outcome(bank, first.user_message_id) == "nothing"
    broken = make(scripted(), FakeBackend(default="this is not json"))
    second = broken.reply(cid, "I have a cat")
    assert broken.wait_idle(5)
    assert outcome(bank, second.user_message_id) == "failed"
    assert bank.chats.pending_turns() == [] and bank.list() == []


def test_temporary_paused_commands_and_regenerate_never_queue(bank, make):
    assistant = make()
    temp = bank.chats.create_conversation("t", temporary=True).id
    assistant.reply(temp, "my secret is 1234", temporary=True)
    cid = bank.chats.create_conversation("t").id
    command = assistant.reply(cid, "remember that I like jazz")
    plain = assistant.reply(cid, "I like tea")
    assert assistant.wait_idle(5)
    assistant.regenerate(cid)
    assert assistant.wait_idle(5)
    with bank.reader() as conn:
        queued = [r[0] for r in conn.execute("SELECT message_id FROM manager_queue")]
    assert queued == [plain.user_message_id] and command.user_message_id not in queued
    assert manager_batches(bank, f"chat:{cid}/{plain.user_message_id}") == 1
    paused = make(settings=Settings(memory_paused=True))
    paused.reply(cid, "I like coffee")
    assert paused.wait_idle(5) and len(bank.chats.pending_turns()) == 0
    with bank.reader() as conn:
        assert conn.execute("SELECT count(*) FROM manager_queue").fetchone()[0] == 1


def test_a_new_run_resumes_what_the_last_one_left_in_order_and_once(bank, make):
    cid = bank.chats.create_conversation("t").id
    left = [bank.chats.add_message(cid, "user", f"I visited city number {i}", queue_for_manager=True,
                                   speaker="Ann", said_at="1 May 2025").id for i in range(3)]
    assistant = make()
    assert assistant.resume_pending() == 3
    assert assistant.resume_pending() == 0  # already queued: not twice
    assert assistant.wait_idle(5) and bank.chats.pending_turns() == []
    with bank.reader() as conn:
        turns = [r[0] for r in conn.execute("SELECT turn FROM memory_events WHERE actor = 'manager' ORDER BY id")]
    assert turns == [f"chat:{cid}/{mid}" for mid in left]
    again = make()
    assert again.resume_pending() == 0
    assert [m.observed_at for m in bank.list()] == ["1 May 2025"] * 3


def test_two_runs_resuming_the_same_turn_apply_it_once(bank, make):
    cid = bank.chats.create_conversation("t").id
    mid = bank.chats.add_message(cid, "user", "I moved to Lisbon", queue_for_manager=True, speaker="Ann").id
    a, b = make(), make()
    assert a.resume_pending() == 1 and b.resume_pending() == 1
    assert a.wait_idle(5) and b.wait_idle(5)
    assert manager_batches(bank, f"chat:{cid}/{mid}") == 1 and outcome(bank, mid) == "applied"


def test_an_existing_bank_is_upgraded_and_its_leftover_temporary_chats_removed(tmp_path, hash_embedder):
    import sqlean as sqlite3

    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(str(path))
    for _number, _name, statements in MIGRATIONS[:2]:
        for sql in statements:
            conn.execute(sql)
    conn.execute("PRAGMA user_version = 2")
    for temporary in (0, 1):
        conn.execute("INSERT INTO conversations(title, created_at, updated_at, temporary) VALUES ('c', 'x', 'x', ?)",
                     (temporary,))
        conn.execute("INSERT INTO messages(conversation_id, role, content, created_at) VALUES (?, 'user', ?, 'x')",
                     (conn.execute("SELECT max(id) FROM conversations").fetchone()[0], f"text {temporary}"))
    conn.commit()
    conn.close()
    with MemoryBank(path, hash_embedder) as bank:
        assert bank.schema_version == MIGRATIONS[-1][0] >= 3
        convs = bank.chats.list_conversations(include_deleted=True)
        assert [c.temporary for c in convs] == [False]
        assert [m.content for m in bank.chats.messages(convs[0].id)] == ["text 0"]
        assert bank.chats.pending_turns() == []  # old messages are not replayed

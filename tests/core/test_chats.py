"""Conversations and messages on the memory bank's database."""

from __future__ import annotations

import time

import pytest

from core.errors import InvalidInputError, NotFoundError
from core.chats import ChatMessage, Conversation
from core.memory import MemoryBank


def test_messages_are_committed_as_they_are_added(tmp_path, hash_embedder):
    path = tmp_path / "m.sqlite3"
    bank = MemoryBank(path, hash_embedder)
    conv = bank.chats.create_conversation("Trip plans")
    bank.chats.add_message(conv.id, "user", "Where should I go?")
    reply = bank.chats.add_message(conv.id, "assistant", "", meta={"model": "smollm2"})
    bank.chats.update_message(reply.id, "Try the coast.")
    # another connection sees them before this one is closed (no save-at-exit)
    with MemoryBank(path, hash_embedder) as other:
        msgs = other.chats.messages(conv.id)
        assert [(m.role, m.content) for m in msgs] == [("user", "Where should I go?"),
                                                       ("assistant", "Try the coast.")]
        assert msgs[1].meta == {"model": "smollm2"}
    bank._conn.close()  # a crash: no orderly close


def test_conversation_lifecycle(bank):
    a = bank.chats.create_conversation("First")
    time.sleep(0.002)
    b = bank.chats.create_conversation("Second", temporary=True)
    assert isinstance(a, Conversation) and b.temporary and not a.deleted
    assert [c.id for c in bank.chats.list_conversations()] == [b.id, a.id]
    time.sleep(0.002)
    bank.chats.add_message(a.id, "user", "hello")
    assert [c.id for c in bank.chats.list_conversations()] == [a.id, b.id]  # newest updated first
    assert bank.chats.rename_conversation(a.id, "  Renamed\n chat ").title == "Renamed chat"
    bank.chats.delete_conversation(a.id)
    assert [c.id for c in bank.chats.list_conversations()] == [b.id]
    assert bank.chats.get_conversation(a.id).deleted
    assert {c.id for c in bank.chats.list_conversations(include_deleted=True)} == {a.id, b.id}
    bank.chats.restore_conversation(a.id)
    assert not bank.chats.get_conversation(a.id).deleted
    bank.chats.purge_conversation(a.id)
    with pytest.raises(NotFoundError):
        bank.chats.get_conversation(a.id)
    assert bank._conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (a.id,)).fetchone()[0] == 0
    assert bank.chats.purge_temporary() == 1
    assert bank.chats.list_conversations(include_deleted=True) == []


def test_search_conversations_by_title_or_message_text(bank):
    a = bank.chats.create_conversation("Cooking")
    b = bank.chats.create_conversation("Travel")
    bank.chats.add_message(b.id, "user", "Is 100% of Lisbon_hilly?")
    assert [c.id for c in bank.chats.list_conversations(query="cook")] == [a.id]
    assert [c.id for c in bank.chats.list_conversations(query="lisbon")] == [b.id]
    assert [c.id for c in bank.chats.list_conversations(query="100%")] == [b.id]
    assert bank.chats.list_conversations(query="n_x") == []  # '_' is literal, not a wildcard
    assert [c.id for c in bank.chats.list_conversations(query="Lisbon_")] == [b.id]
    assert bank.chats.list_conversations(query="Lisbonxhilly") == []
    assert bank.chats.list_conversations(query="'; DROP TABLE messages; --") == []


def test_messages_order_limit_and_validation(bank):
    conv = bank.chats.create_conversation()
    for i in range(5):
        bank.chats.add_message(conv.id, "user" if i % 2 == 0 else "assistant", f"m{i} \x1b\u202e\U0001F600")
    msgs = bank.chats.messages(conv.id)
    assert [m.content.split()[0] for m in msgs] == ["m0", "m1", "m2", "m3", "m4"]
    assert isinstance(msgs[0], ChatMessage) and "\U0001F600" in msgs[0].content
    assert [m.content.split()[0] for m in bank.chats.messages(conv.id, limit=2)] == ["m3", "m4"]
    with pytest.raises(InvalidInputError):
        bank.chats.add_message(conv.id, "wizard", "hi")
    with pytest.raises(InvalidInputError):
        bank.chats.add_message(conv.id, "user", "x", meta={"bad": object()})
    with pytest.raises(InvalidInputError):
        bank.chats.create_conversation("   ")
    with pytest.raises(NotFoundError):
        bank.chats.add_message(999, "user", "hi")
    with pytest.raises(NotFoundError):
        bank.chats.update_message(999, "x")
    with pytest.raises(NotFoundError):
        bank.chats.messages(999)
    assert len(bank.chats.messages(conv.id)) == 5
    big = "y" * 1_000_000
    m = bank.chats.add_message(conv.id, "assistant", big)
    assert bank.chats.update_message(m.id, meta={"tokens": 3}).content == big


def test_a_closed_bank_gives_a_user_error_for_chats(tmp_path, hash_embedder):
    bank = MemoryBank(tmp_path / "m.sqlite3", hash_embedder)
    bank.close()
    with pytest.raises(InvalidInputError, match="closed"):
        bank.chats.create_conversation("late")

"""Temporary chats live in memory only (never in a file of the data folder), and the trash:
soft-deleted chats purged after the grace period or at once, messages and all, memories kept."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from core.assistant.pipeline import Assistant
from core.errors import NotFoundError
from core.fakes import FakeBackend, router
from core.memory import MemoryBank


def files_containing(folder: Path, marker: str) -> list[Path]:
    needles = (marker.encode("utf-8"), marker.encode("utf-16-le"))
    return [p for p in folder.rglob("*") if p.is_file() and any(n in p.read_bytes() for n in needles)]


def test_a_temporary_chat_never_reaches_a_file_of_the_data_folder(data_home, hash_embedder):
    marker = f"zebra-{uuid.uuid4().hex}"
    bank = MemoryBank(data_home / "memory.sqlite3", hash_embedder)
    stored = bank.chats.create_conversation("Kept")
    bank.chats.add_message(stored.id, "user", "an ordinary message")
    assistant = Assistant(bank, FakeBackend(default=router(f"**Answer:** I saw {marker}")), user_name="Ann")
    temp = bank.chats.create_conversation(f"About {marker}", temporary=True)
    reply = assistant.reply(temp.id, f"my code word is {marker}", temporary=True)
    assert assistant.wait_idle(5)
    again = assistant.regenerate(temp.id)
    assert marker in again.text and again.message_id == reply.message_id
    # the same API serves it while open
    assert bank.chats.get_conversation(temp.id).temporary
    assert [m.role for m in bank.chats.messages(temp.id)] == ["user", "assistant"]
    assert {c.id for c in bank.chats.list_conversations()} == {stored.id, temp.id}
    assert [c.id for c in bank.chats.list_conversations(query=marker)] == [temp.id]
    assert files_containing(data_home, marker) == []
    with bank.reader() as conn:
        conn.execute("PRAGMA wal_checkpoint(FULL)")
    assert files_containing(data_home, marker) == []
    assistant.close()
    bank.close()
    assert files_containing(data_home, marker) == []
    with MemoryBank(data_home / "memory.sqlite3", hash_embedder) as reopened:
        assert [c.id for c in reopened.chats.list_conversations(include_deleted=True)] == [stored.id]
        with pytest.raises(NotFoundError):
            reopened.chats.get_conversation(temp.id)


def test_temporary_chats_can_be_deleted_restored_and_purged(bank):
    temp = bank.chats.create_conversation("Scratch", temporary=True)
    first = bank.chats.add_message(temp.id, "user", "one")
    second = bank.chats.add_message(temp.id, "assistant", "two")
    assert temp.id < 0 and first.id < second.id < 0  # ordered in time, never a stored id
    assert bank.chats.update_message(second.id, "deux").content == "deux"
    assert [m.content for m in bank.chats.messages(temp.id, limit=1)] == ["deux"]
    bank.chats.delete_conversation(temp.id)
    assert [c.id for c in bank.chats.deleted_conversations()] == [temp.id]
    bank.chats.restore_conversation(temp.id)
    assert bank.chats.purge_temporary() == 1
    with pytest.raises(NotFoundError):
        bank.chats.get_message(first.id)


def _age_deletion(bank, cid: int, days: float) -> None:
    when = (datetime.now(timezone.utc) - timedelta(days=days)).isoformat(timespec="milliseconds")
    with bank.reader() as conn:
        conn.execute("UPDATE conversations SET deleted_at = ? WHERE id = ?", (when, cid))


def test_the_trash_is_purged_after_the_grace_period_and_keeps_the_memories(bank):
    old = bank.chats.create_conversation("Old")
    recent = bank.chats.create_conversation("Recent")
    kept = bank.chats.create_conversation("Kept")
    msg = bank.chats.add_message(old.id, "user", "I have a cat", queue_for_manager=True, speaker="Ann")
    bank.chats.add_message(recent.id, "user", "hello")
    memory = bank.add("Ann has a cat.", turn=f"chat:{old.id}/{msg.id}").memory
    for conv in (old, recent):
        bank.chats.delete_conversation(conv.id)
    _age_deletion(bank, old.id, 31)
    _age_deletion(bank, recent.id, 2)
    assert [c.id for c in bank.chats.deleted_conversations()] == [recent.id, old.id]
    assert bank.chats.purge_deleted(30) == 1
    assert [c.id for c in bank.chats.deleted_conversations()] == [recent.id]
    with pytest.raises(NotFoundError):
        bank.chats.get_conversation(old.id)
    with bank.reader() as conn:
        assert conn.execute("SELECT count(*) FROM messages WHERE conversation_id = ?", (old.id,)).fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM manager_queue").fetchone()[0] == 0  # its mark went too
    assert bank.get(memory.id).status == "active"  # the memories that came from it stay
    bank.chats.purge_conversation(recent.id)  # "Delete forever" from the trash
    assert bank.chats.deleted_conversations() == []
    assert [c.id for c in bank.chats.list_conversations()] == [kept.id]
    assert bank.chats.purge_deleted(0) == 0

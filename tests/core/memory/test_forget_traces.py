"""Forgetting and purging leave no copy behind: a purged chat's REJECT events (they quote facts
refused from its text) go with it, and the terminal chat's readline history loses the lines that
carry forgotten text (GNU readline's plain file and libedit's encoded one)."""

from __future__ import annotations

import os

from core.paths import CHAT_HISTORY_NAME
from core.textlog import erase_lines
from core.types import REJECT, MemoryOp, SourceTurn, TurnRef


def _said(bank, cid, text, ops):
    msg = bank.chats.add_message(cid, "user", text, queue_for_manager=True, speaker="Sam")
    return bank.apply(ops, turn=TurnRef.chat(cid, msg.id), done_message_id=msg.id,
                      source=SourceTurn(text, speaker="Sam", message_id=msg.id))


def _db_bytes(folder):
    return b"".join(p.read_bytes() for p in folder.glob("memory.sqlite3*"))


def test_purging_a_chat_deletes_the_reject_events_of_its_turns(bank, data_home):
    gone = bank.chats.create_conversation("Gone").id
    kept = bank.chats.create_conversation("Kept").id
    _said(bank, gone, "I have a dog called Rex.", [MemoryOp(REJECT, text="Sam has a cat named Luna-Zebra",
                                                            reason="not in what was said: 'Luna-Zebra'")])
    _said(bank, kept, "I like tea.", [MemoryOp(REJECT, text="Sam likes coffee", reason="not in what was said")])
    assert len(bank.rejected()) == 2
    bank.chats.delete_conversation(gone)
    assert bank.chats.purge_deleted() == 1
    [left] = bank.rejected()
    assert left.new_text == "Sam likes coffee" and left.turn.startswith(f"chat:{kept}/")
    assert b"Luna-Zebra" not in _db_bytes(data_home)
    # one chat purged directly: the same
    bank.chats.purge_conversation(kept)
    assert bank.rejected() == [] and b"Sam likes coffee" not in _db_bytes(data_home)


def test_a_purged_chat_id_prefix_does_not_touch_another_chat(bank):
    """chat:1/... must not delete chat:12/...'s events."""
    ids = [bank.chats.create_conversation(f"c{i}").id for i in range(12)]
    one, twelve = ids[0], ids[11]
    assert (one, twelve) == (1, 12)
    _said(bank, twelve, "I like tea.", [MemoryOp(REJECT, text="Sam likes coffee", reason="not in what was said")])
    bank.chats.purge_conversation(one)
    assert len(bank.rejected()) == 1


def test_forget_removes_the_typed_lines_from_the_chat_history(bank, data_home):
    history = data_home / CHAT_HISTORY_NAME
    cid = bank.chats.create_conversation("Chat").id
    lisbon = _said(bank, cid, "I moved to Lisbon last spring.",
                   [MemoryOp("ADD", text="Sam lives in Lisbon", speaker="Sam")]).memory
    tea = _said(bank, cid, "I like green tea.", [MemoryOp("ADD", text="Sam likes green tea", speaker="Sam")]).memory
    history.write_text("/memories\nremember: Sam lives in Lisbon\nI moved to Lisbon last spring.\n"
                       "I like green tea.\nok\n", encoding="utf-8")
    os.chmod(history, 0o600)
    bank.forget(lisbon.id)  # the memory's own text goes; the turn's text stays (it is still in the chat)
    assert history.read_text(encoding="utf-8") == \
        "/memories\nI moved to Lisbon last spring.\nI like green tea.\nok\n"
    bank.forget(tea.id, sources=True)  # with its source: the typed line goes too
    assert history.read_text(encoding="utf-8") == "/memories\nI moved to Lisbon last spring.\nok\n"
    assert (history.stat().st_mode & 0o777) == 0o600
    # purging the chat removes what was typed in it
    bank.chats.purge_conversation(cid)
    assert history.read_text(encoding="utf-8") == "/memories\nok\n"


def test_remove_source_text_scrubs_the_history_too(bank, data_home):
    history = data_home / CHAT_HISTORY_NAME
    cid = bank.chats.create_conversation("Chat").id
    mem = _said(bank, cid, "My PIN is 4417, remember it.", [MemoryOp("ADD", text="Sam's PIN is 4417")]).memory
    history.write_text("My PIN is 4417, remember it.\nhello\n", encoding="utf-8")
    [link] = bank.memory_sources(mem.id)
    assert bank.remove_source_text([link.source_id]) == 1
    assert history.read_text(encoding="utf-8") == "hello\n"


def test_erase_lines_reads_libedit_files_and_keeps_short_texts_whole_line(tmp_path):
    path = tmp_path / "h"
    path.write_bytes(b"_HiStOrY_V2_\nI\\040moved\\040to\\040Berlin.\nok\nI\\040booked\\040it\n")
    assert erase_lines(path, ["i moved to   BERLIN.", "ok"]) == 2
    assert path.read_bytes() == b"_HiStOrY_V2_\nI\\040booked\\040it\n"
    assert erase_lines(tmp_path / "missing", ["x"]) == 0 and erase_lines(path, ["", "  "]) == 0
    path.write_bytes("Ich wohne in München seit Mai\nanything\n".encode("utf-8"))
    assert erase_lines(path, ["wohne in München"]) == 1
    assert path.read_bytes() == b"anything\n"

"""`memory show ID`, `memory forget ID... --sources`, REJECT lines in `memory history` and the
import's note, through `app.cli.main` on a bank filled with provenance."""

from __future__ import annotations

import json

import pytest

from app.cli import main
from core.fakes import HashEmbedder
from core.types import REJECT, MemoryOp, SourceTurn, TurnRef

TIME = "1:56 pm on 8 May, 2023"


class NoLoadEmbedder(HashEmbedder):
    """The bank's embedder by name and size; embedding is a failure (a model load)."""

    def embed(self, texts):
        raise AssertionError("the command loaded the embedder")


@pytest.fixture(autouse=True)
def no_embedder(monkeypatch):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: NoLoadEmbedder())


def run(capsys, *argv):
    code = main(["memory", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _filled(make_bank):
    """Sam's move told in a chat (Lisbon superseded by Berlin, one refused fact) and an ingested turn."""
    bank = make_bank()
    cid = bank.chats.create_conversation("Chat").id
    m1 = bank.chats.add_message(cid, "user", "Hi! I'm Sam. I live in Lisbon.", queue_for_manager=True,
                                speaker="Sam", said_at=TIME)
    t1 = TurnRef.chat(cid, m1.id)
    lisbon = bank.apply([MemoryOp("ADD", text="Sam lives in Lisbon", speaker="Sam"),
                         MemoryOp(REJECT, text="Sam has a cat named Luna", reason="not in what was said: 'Luna'")],
                        turn=t1, done_message_id=m1.id,
                        source=SourceTurn(m1.content, speaker="Sam", said_at=TIME, message_id=m1.id)).added[0]
    m2 = bank.chats.add_message(cid, "user", "I moved to Berlin.", queue_for_manager=True, speaker="Sam")
    berlin = bank.apply([MemoryOp("ADD", text="Sam lives in Berlin", speaker="Sam", supersedes=lisbon.id)],
                        turn=TurnRef.chat(cid, m2.id), done_message_id=m2.id,
                        source=SourceTurn(m2.content, speaker="Sam", message_id=m2.id)).added[0]
    ref = "ingest:notes.jsonl/3"
    group = bank.apply([MemoryOp("ADD", text="Caroline went to a support group", speaker="Caroline")], turn=ref,
                       source=SourceTurn("I went to a support group yesterday.", speaker="Caroline", said_at=TIME,
                                         ref=ref)).memory
    bank.close()
    return lisbon.id, berlin.id, group.id, t1


def test_show_prints_the_memory_its_sources_history_and_refused_facts(capsys, make_bank):
    lisbon, berlin, group, turn = _filled(make_bank)
    code, out, err = run(capsys, "show", str(lisbon))
    assert code == 0, err
    assert out.startswith(f"#{lisbon} Sam lives in Lisbon\n")
    assert f"status: superseded (superseded by #{berlin})" in out and "speaker: Sam" in out
    assert f'added chat {turn} (Sam, {TIME}): "Hi! I\'m Sam. I live in Lisbon."' in out
    assert "superseded chat" in out and '"I moved to Berlin."' in out
    assert "SUPERSEDE" in out and "ADD" in out
    assert "not saved from the same turns:" in out
    assert f"not saved: not in what was said: 'Luna' [{turn}] \"Sam has a cat named Luna\"" in out

    code, out, err = run(capsys, "show", str(group), "--json")
    shown = json.loads(out)
    assert shown["memory"]["id"] == group and shown["rejected"] == []
    [src] = shown["sources"]
    assert (src["kind"], src["role"], src["ref"], src["text"], src["deleted"]) == \
        ("turn", "added", "ingest:notes.jsonl/3", "I went to a support group yesterday.", False)
    assert [e["event"] for e in shown["history"]] == ["ADD"]


def test_show_says_source_deleted_once_the_chat_is_purged(capsys, make_bank):
    lisbon, berlin, _, _ = _filled(make_bank)
    bank = make_bank()
    [conv] = bank.chats.list_conversations()
    bank.chats.purge_conversation(conv.id)
    bank.close()
    code, out, _ = run(capsys, "show", str(berlin))
    assert code == 0 and "added chat chat:" in out and ": (source deleted)" in out
    assert "I moved to Berlin" not in out


def test_show_an_unknown_id_is_a_clear_error_without_a_model_load(capsys, make_bank):
    _filled(make_bank)
    code, out, err = run(capsys, "show", "99")
    assert code != 0 and out == "" and err.strip() == "error: There is no memory #99."


def test_history_shows_rejected_facts_as_not_saved(capsys, make_bank):
    _, _, _, turn = _filled(make_bank)
    code, out, _ = run(capsys, "history")
    assert code == 0
    [line] = [ln for ln in out.splitlines() if "not saved" in ln]
    assert line.endswith(f"manager not saved: not in what was said: 'Luna' [{turn}] \"Sam has a cat named Luna\"")
    assert "REJECT" not in out


def test_forget_several_with_their_sources(capsys, make_bank, data_home):
    lisbon, berlin, group, _ = _filled(make_bank)
    code, out, err = run(capsys, "forget", str(berlin), str(group), "--sources", "--json")
    assert code == 0, err
    assert json.loads(out) == {"forgotten": [berlin, group], "sources_removed": True}
    bank = make_bank()
    assert {m.id for m in bank.list(status=None)} == {lisbon}
    [conv] = bank.chats.list_conversations()
    assert [m.content for m in bank.chats.messages(conv.id)] == ["Hi! I'm Sam. I live in Lisbon.", ""]
    bank.close()
    raw = b"".join(p.read_bytes() for p in data_home.glob("memory.sqlite3*"))
    assert b"I moved to Berlin" not in raw and b"support group" not in raw
    code, out, err = run(capsys, "forget", "99")
    assert code != 0 and "There is no memory #99." in err


def test_import_of_an_old_export_prints_the_note(capsys, tmp_path, monkeypatch):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: HashEmbedder())
    src = tmp_path / "old.jsonl"
    src.write_text(json.dumps({"type": "header", "format": "memory-r1-memories", "schema_version": 1}) + "\n"
                   + json.dumps({"type": "memory", "text": "Sam has a dog"}) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "import", str(src))
    assert code == 0, err
    assert out.splitlines() == ["imported 1, skipped 0 duplicates", "1 memory had no source links (older export)."]

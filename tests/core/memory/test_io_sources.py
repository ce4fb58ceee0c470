"""Export/import carry provenance: each memory's source links, chat sources as standalone text."""

from __future__ import annotations

import json

import pytest

from core.errors import ImportFormatError
from core.memory import MemoryBank
from core.types import MemoryOp, SourceTurn, TurnRef

TIME = "1:56 pm on 8 May, 2023"


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def _filled(bank):
    """A bank with a chat-sourced memory (updated by a second chat turn), an ingested one, a
    user's edit and a supersession."""
    cid = bank.chats.create_conversation("Chat").id
    m1 = bank.chats.add_message(cid, "user", "Hi! I'm Sam. I live in Lisbon.", queue_for_manager=True,
                                speaker="Sam", said_at=TIME)
    lisbon = bank.apply([MemoryOp("ADD", text="Sam lives in Lisbon", speaker="Sam")], turn=TurnRef.chat(cid, m1.id),
                        done_message_id=m1.id, source=SourceTurn(m1.content, speaker="Sam", said_at=TIME,
                                                                  message_id=m1.id)).memory
    m2 = bank.chats.add_message(cid, "user", "I moved to Berlin.", queue_for_manager=True, speaker="Sam")
    berlin = bank.apply([MemoryOp("ADD", text="Sam lives in Berlin", speaker="Sam", supersedes=lisbon.id)],
                        turn=TurnRef.chat(cid, m2.id), done_message_id=m2.id,
                        source=SourceTurn(m2.content, speaker="Sam", message_id=m2.id)).added[0]
    ref = "locomo:conv-26/D1:3"
    group = bank.apply([MemoryOp("ADD", text="Caroline went to a support group", speaker="Caroline")], turn=ref,
                       source=SourceTurn("I went to a support group yesterday.", speaker="Caroline", said_at=TIME,
                                         ref=ref)).memory
    bank.edit(group.id, "Caroline went to an LGBTQ support group")
    return lisbon, berlin, group


def _shape(bank, mem_id):
    return [(s.kind, s.role, s.ref, s.text) for s in bank.memory_sources(mem_id)]


def test_export_import_round_trip_keeps_the_links(bank, tmp_path, hash_embedder):
    lisbon, berlin, group = _filled(bank)
    out = tmp_path / "export.jsonl"
    assert bank.export_jsonl(out) == 3
    header, *lines = _lines(out)
    assert header["schema_version"] == 2
    by_text = {line["text"]: line for line in lines}
    [chat] = by_text["Sam lives in Berlin"]["sources"]
    assert chat["kind"] == "chat" and chat["text"] == "I moved to Berlin." and chat["ref"].startswith("chat:")
    assert by_text["Sam lives in Lisbon"]["superseded_by"] == berlin.id
    before = {m.text: _shape(bank, m.id) for m in bank.list(status=None)}

    with MemoryBank(tmp_path / "other.sqlite3", hash_embedder) as dest:
        report = dest.import_jsonl(out)
        assert report.imported == 3 and report.without_sources == 0 and report.notes == []
        after = {m.text: _shape(dest, m.id) for m in dest.list(status=None)}
        # a chat source becomes an import source holding the text and the original ref
        expected = {text: [("import" if k == "chat" else k, role, ref, text_) for k, role, ref, text_ in links]
                    for text, links in before.items()}
        assert after == expected
        assert ("turn", "added", "locomo:conv-26/D1:3", "I went to a support group yesterday.") in \
            after["Caroline went to an LGBTQ support group"]
        assert ("user", "edited", None, None) in after["Caroline went to an LGBTQ support group"]
        old = next(m for m in dest.list(status=None) if m.text == "Sam lives in Lisbon")
        new = next(m for m in dest.list(status=None) if m.text == "Sam lives in Berlin")
        assert old.status == "superseded" and old.superseded_by == new.id
        # a second bank's import of the same turn reuses its source by ref
        n_sources = dest._conn.execute("SELECT count(*) FROM sources").fetchone()[0]
        dest.forget([m.id for m in dest.list(status=None)])
        assert dest.import_jsonl(out).imported == 3
        assert dest._conn.execute("SELECT count(*) FROM sources").fetchone()[0] == n_sources


def test_an_existing_turn_source_is_reused_by_ref(bank, tmp_path, hash_embedder):
    _filled(bank)
    out = tmp_path / "export.jsonl"
    bank.export_jsonl(out)
    with MemoryBank(tmp_path / "other.sqlite3", hash_embedder) as dest:
        ref = "locomo:conv-26/D1:3"
        mine = dest.apply([MemoryOp("ADD", text="Caroline likes groups", speaker="Caroline")], turn=ref,
                          source=SourceTurn("I went to a support group yesterday.", ref=ref)).memory
        dest.import_jsonl(out)
        [sid] = {s.source_id for s in dest.memory_sources(mine.id)}
        group = next(m for m in dest.list() if m.text.startswith("Caroline went"))
        assert sid in {s.source_id for s in dest.memory_sources(group.id)}


def test_a_deleted_chat_source_exports_without_text_and_reads_source_deleted(bank, tmp_path, hash_embedder):
    lisbon, berlin, _ = _filled(bank)
    [conv] = bank.chats.list_conversations()
    bank.chats.purge_conversation(conv.id)
    out = tmp_path / "export.jsonl"
    bank.export_jsonl(out)
    with MemoryBank(tmp_path / "other.sqlite3", hash_embedder) as dest:
        dest.import_jsonl(out)
        new = next(m for m in dest.list() if m.text == "Sam lives in Berlin")
        [link] = dest.memory_sources(new.id)
        assert link.kind == "import" and link.text is None and link.deleted and link.ref.startswith("chat:")


def test_an_old_export_without_links_imports_with_a_note(bank, tmp_path):
    src = tmp_path / "old.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in [
        {"type": "header", "format": "memory-r1-memories", "schema_version": 1, "count": 2},
        {"type": "memory", "id": 1, "text": "Sam has a dog", "speaker": "Sam", "source": "chat:1/1", "history": []},
        {"type": "memory", "id": 2, "text": "Sam likes tea", "speaker": "Sam", "history": []},
    ]) + "\n", encoding="utf-8")
    report = bank.import_jsonl(src)
    assert report.imported == 2 and report.without_sources == 2
    assert report.notes == ["2 memories had no source links (older export)."]
    assert all(bank.memory_sources(m.id) == [] for m in bank.list())


@pytest.mark.parametrize("sources, message", [
    ('"chat:1/1"', "'sources' must be a list"),
    ('[42]', "each source must be an object"),
    ('[{"kind": "email", "role": "added", "ref": "x"}]', "unknown source kind"),
    ('[{"kind": "turn", "role": "stolen", "ref": "x"}]', "unknown source role"),
    ('[{"kind": "turn", "role": "added", "text": 7}]', "source 'text' must be a string"),
])
def test_a_malformed_sources_field_names_the_line_and_imports_nothing(bank, tmp_path, sources, message):
    bank.add("already here")
    src = tmp_path / "in.jsonl"
    good = [json.dumps({"text": f"fact {i}", "sources": []}) for i in range(3)]
    bad = '{"text": "bad one", "sources": ' + sources + "}"
    src.write_text("\n".join(good[:2] + [bad] + good[2:]) + "\n", encoding="utf-8")
    with pytest.raises(ImportFormatError) as err:
        bank.import_jsonl(src)
    assert str(err.value).startswith("line 3: ") and message in str(err.value)
    assert bank.count(None) == 1
    assert bank._conn.execute("SELECT count(*) FROM sources").fetchone()[0] == 0

"""Export/import of memories + history as JSONL."""

from __future__ import annotations

import json

import pytest

from core.errors import ImportFormatError, InvalidInputError, NotFoundError
from core.fakes import HashEmbedder
from core.memory import ImportReport, MemoryBank


def _lines(path):
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def test_export_writes_a_header_and_memories_with_history(bank, tmp_path):
    a = bank.add("Caroline likes tea", speaker="Caroline", observed_at="8 May 2023", source="chat:1/1").memory
    bank.edit(a.id, "Caroline likes green tea")
    b = bank.add("Melanie paints \u2603 \x07").memory
    bank.delete(b.id)
    out = tmp_path / "export.jsonl"
    assert bank.export_jsonl(out) == 2
    header, first, second = _lines(out)
    assert header["type"] == "header" and header["format"] == "memory-r1-memories"
    assert header["schema_version"] == 2 and header["embedder"] == "hash-embedder" and header["count"] == 2
    assert first["text"] == "Caroline likes green tea" and first["speaker"] == "Caroline"
    assert first["observed_at"] == "8 May 2023" and first["version"] == 2
    assert [h["event"] for h in first["history"]] == ["ADD", "EDIT"]
    assert second["status"] == "deleted" and second["text"] == "Melanie paints \u2603 \x07"
    assert not list(tmp_path.glob("*.part"))


def test_import_round_trip_re_embeds_and_keeps_history(bank, tmp_path):
    a = bank.add("Caroline likes tea", speaker="Caroline", observed_at="8 May 2023").memory
    bank.edit(a.id, "Caroline likes green tea")
    bank.delete(bank.add("Melanie paints").memory.id)
    out = tmp_path / "export.jsonl"
    bank.export_jsonl(out)
    other = HashEmbedder(dim=128, name="hash-128")  # a different embedder: vectors are recomputed
    with MemoryBank(tmp_path / "other.sqlite3", other) as dest:
        report = dest.import_jsonl(out)
        assert report == ImportReport(imported=2, skipped=0)
        mems = dest.list(status=None)
        assert {(m.text, m.status) for m in mems} == {("Caroline likes green tea", "active"),
                                                        ("Melanie paints", "deleted")}
        tea = dest.search("green tea", k=1, mode="vector")[0].memory
        assert tea.speaker == "Caroline" and tea.observed_at == "8 May 2023" and tea.created_at == a.created_at
        events = dest.history(tea.id)
        assert [e.event for e in events] == ["IMPORT", "EDIT", "ADD"]
        assert events[0].actor == "import" and events[0].turn == "import:export.jsonl"
        # importing again skips every duplicate
        assert dest.import_jsonl(out) == ImportReport(imported=0, skipped=2)
        # undo takes back the whole import (the copied history is not undoable)
        changes = dest.undo()
        assert [m.text for m in changes.deleted] == ["Caroline likes green tea"]
        with pytest.raises(NotFoundError):
            dest.undo()


def test_duplicates_inside_the_file_and_in_the_bank_are_skipped(bank, tmp_path):
    bank.add("Caroline likes tea", speaker="Caroline")
    src = tmp_path / "in.jsonl"
    src.write_text("\n".join(json.dumps(x) for x in [
        {"text": "caroline LIKES   tea", "speaker": "Caroline"},  # same as in the bank
        {"text": "Caroline likes tea", "speaker": "Melanie"},  # another speaker: kept
        {"text": "New fact"}, {"text": "new FACT"},  # duplicate inside the file
    ]) + "\n\n", encoding="utf-8")
    assert bank.import_jsonl(src) == ImportReport(imported=2, skipped=2)
    assert bank.count() == 3


@pytest.mark.parametrize("bad_line, message", [
    ("{not json", "not valid JSON"),
    ('{"text": "x", "n": ' + "9" * 5000 + "}", "not valid JSON"),  # past int's digit limit: a ValueError
    ('{"text": ""}', "empty"),
    ('{"text": 42}', "must be a string"),
    ('{"speaker": "x"}', "missing 'text'"),
    ('{"text": "x", "status": "gone"}', "unknown status"),
    ('{"text": "x", "history": [{"event": "EXPLODE"}]}', "unknown history event"),
    ('["a list"]', "expected a JSON object"),
    ('{"type": "header", "format": "memory-r1-memories"}', "only allowed on the first line"),
])
def test_a_broken_line_is_reported_and_nothing_is_imported(bank, tmp_path, bad_line, message):
    bank.add("already here")
    src = tmp_path / "in.jsonl"
    good = [json.dumps({"text": f"fact {i}"}) for i in range(5)]
    src.write_text("\n".join(good[:3] + [bad_line] + good[3:]) + "\n", encoding="utf-8")
    with pytest.raises(ImportFormatError) as err:
        bank.import_jsonl(src)
    assert str(err.value).startswith("line 4: ") and message in str(err.value)
    assert err.value.line == 4
    assert bank.count(None) == 1 and len(bank.history()) == 1


def test_import_rejects_non_utf8_newer_versions_and_missing_files(bank, tmp_path):
    src = tmp_path / "in.jsonl"
    src.write_bytes(b'{"text": "ok"}\n{"text": "\xff\xfe"}\n')
    with pytest.raises(ImportFormatError, match="line 2: not UTF-8"):
        bank.import_jsonl(src)
    src.write_text(json.dumps({"type": "header", "format": "memory-r1-memories", "schema_version": 99}) + "\n")
    with pytest.raises(ImportFormatError, match="line 1: written by a newer Memory-R1"):
        bank.import_jsonl(src)
    src.write_text(json.dumps({"type": "header", "format": "something-else"}) + "\n")
    with pytest.raises(ImportFormatError, match="not a Memory-R1"):
        bank.import_jsonl(src)
    with pytest.raises(InvalidInputError, match="Cannot read"):
        bank.import_jsonl(tmp_path / "missing.jsonl")
    with pytest.raises(InvalidInputError, match="Cannot write"):
        bank.export_jsonl(tmp_path / "no" / "such" / "dir" / "out.jsonl")
    assert bank.count(None) == 0

"""`memory-r1 ingest` with the grounding gate: refused facts are counted and said, never stored;
`--manager-extraction` switches the manager to choosing among the turn's own sentences."""

from __future__ import annotations

import json

import pytest

from app.cli import chat_cmd, main
from core.fakes import HashEmbedder
from core.memory import MemoryBank
from core.paths import db_path
from tests.app.cli.test_chat_cli import TURNS, Loader, manager_script, write_jsonl


def inventing(messages, schema):
    """The usual script, plus one fact nobody said in every extraction; all candidates chosen."""
    props = (schema or {}).get("properties", {})
    if "facts" in props:
        said = json.loads(manager_script(messages, schema))["facts"]
        return json.dumps({"facts": said + ["Kate has a sister named Anna who is a nurse."]})
    if "keep" in props:
        return json.dumps({"keep": props["keep"]["items"]["enum"]})
    return manager_script(messages, schema)


@pytest.fixture
def loader(monkeypatch):
    ld = Loader(script=inventing)
    monkeypatch.setattr(chat_cmd, "_load", ld)
    monkeypatch.setattr(chat_cmd, "_open_bank", lambda: MemoryBank(db_path(), HashEmbedder()))
    return ld


def test_ingest_counts_and_says_the_rejected_facts(loader, tmp_path, capsys):
    f = write_jsonl(tmp_path / "chat.jsonl", TURNS)
    assert main(["ingest", str(f), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 4 and summary["rejected"] == 4
    with MemoryBank(db_path(), HashEmbedder()) as bank:
        assert not any("Anna" in m.text for m in bank.list(status=None))
    g = write_jsonl(tmp_path / "more.jsonl", TURNS[:1])
    assert main(["ingest", str(g)]) == 0
    out = capsys.readouterr().out
    assert "; rejected 1 fact not supported by what was said (memory history shows them)." in out


def test_ingest_extractive_mode_chooses_among_the_turns_sentences(loader, tmp_path, capsys):
    f = write_jsonl(tmp_path / "chat.jsonl", TURNS[:2])
    assert main(["ingest", str(f), "--json", "--manager-extraction", "extractive"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["added"] == 2 and summary["rejected"] == 0
    calls = [c for b in loader.backends for c in b.calls]
    assert calls and all("keep" in c["schema"]["properties"] for c in calls)
    with MemoryBank(db_path(), HashEmbedder()) as bank:
        assert sorted(m.text for m in bank.list()) == ["Ann adopted a cat named Tom.", "Bob moved to Oslo in 2022."]
    g = write_jsonl(tmp_path / "more.jsonl", TURNS[2:3])
    assert main(["ingest", str(g), "--manager-extraction", "extractive"]) == 0
    assert "; rejected 0 facts not supported by what was said" in capsys.readouterr().out

"""Forget means gone: a unique marker put in a memory (then forgotten, through the bank and the
CLI), in chat messages the manager read (then purged, a saved and a temporary chat), in model
output the manager and the turn loop reject, and in an export (then deleted) is afterwards in
no file of the data folder: database, -wal, -shm, logs, anything else. With the text-log switch
on, the same holds after forget (the text log held the marker before)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from app.cli import main
from app.logs import remove_app_handlers, setup_logging
from core.agents.manager import MemoryManager
from core.assistant.ingest import IngestTurn, ingest_turns
from core.assistant.pipeline import Assistant
from core.fakes import FakeBackend, HashEmbedder, router
from core.memory import MemoryBank
from core.textlog import ENV_LOG_TEXT, TEXT_LOG_NAME, log_text


@pytest.fixture(autouse=True)
def fast_embedder(monkeypatch):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: HashEmbedder())


def new_marker() -> str:
    # lower case and ending in a digit: the FTS index stores it as this very token (no stemming)
    return "zqmark" + uuid.uuid4().hex + "7"


def files_with(home: Path, marker: str) -> list[str]:
    needle = marker.encode("utf-8")
    return sorted(str(p.relative_to(home)) for p in home.rglob("*") if p.is_file() and needle in p.read_bytes())


def chat_backend(marker: str) -> FakeBackend:
    """One model for both agents: the first extraction is not JSON (and quotes the marker), the
    next ones find a fact with the marker; decisions drop invalid items that quote it and ADD
    the fact (twice: the repeat is dropped); chat replies repeat the marker."""
    fact = f"Ann's code word is {marker}."
    extractions = iter([f"not json {{ {marker}"])

    def facts(_content):
        return next(extractions, json.dumps({"facts": [fact]}))

    def decide(messages):
        return json.dumps({"memory": [
            {"id": "0", "event": "BOGUS", "text": marker},
            {"id": marker, "event": "UPDATE", "text": fact},
            {"id": "0", "event": "UPDATE", "text": ""},
            {"id": "1", "event": "ADD", "text": fact},
            {"id": "2", "event": "ADD", "text": fact},
            {"id": "0", "event": "NONE", "text": marker}]})

    return FakeBackend(default=router(f"**Answer:** Noted, {marker}!", facts=facts, decide=decide))


def scenario(home: Path, marker: str, capsys) -> dict:
    """Everything that puts the marker somewhere, then forget/purge/delete; returns what the
    files held just before the erasing steps (to show the test is not vacuous)."""
    setup_logging(home, verbose=True)
    bank = MemoryBank(home / "memory.sqlite3", HashEmbedder())
    seen: dict = {}
    try:
        # (a) a memory forgotten through the bank
        first = bank.add(f"Ann's locker is number {marker}").memory
        bank.edit(first.id, f"Ann's locker is now number {marker} 2")
        bank.forget(first.id)
        # (b) chats the manager reads
        bank.add("Ann's code word is secret", speaker="Ann")  # related: the fact goes to a decision call
        assistant = Assistant(bank, chat_backend(marker), user_name="Ann")
        try:
            cid = bank.chats.create_conversation("code words").id
            assistant.reply(cid, f"My code word is {marker}.")
            assert assistant.wait_idle(30)
            assistant.reply(cid, f"Remember, the code word is {marker}.")  # the fact is a duplicate now
            assert assistant.wait_idle(30)
            tmp = bank.chats.create_conversation("temporary", temporary=True).id
            assistant.reply(tmp, f"Off the record: {marker}", temporary=True)
        finally:
            assistant.close(drain_timeout=30)
        learned = [m for m in bank.list() if marker in m.text]
        assert len(learned) == 1, [m.text for m in bank.list()]
        # the turn loop (ingest) with output that never parses
        bad = FakeBackend(default=f"no json at all {marker}")
        report = ingest_turns(MemoryManager(bank, bad), [IngestTurn("Ann", f"I said {marker}", None, "file:1")])
        assert report.failed == ["file:1"]
        # an export the app made, then deleted
        export = home / "export.jsonl"
        assert main(["memory", "export", str(export)]) == 0
        seen["export"] = marker in export.read_text(encoding="utf-8")
        export.unlink()
        seen["before"] = files_with(home, marker)
        # (a) the learned memory forgotten through the CLI; (b) the chats purged
        assert main(["memory", "forget", str(learned[0].id)]) == 0
        capsys.readouterr()
        bank.chats.purge_conversation(cid)
        assert bank.chats.purge_temporary() == 1
        seen["open"] = files_with(home, marker)  # -wal and -shm still there
        seen["wal_exists"] = (home / "memory.sqlite3-wal").exists()
    finally:
        bank.close()
        remove_app_handlers()
    seen["closed"] = files_with(home, marker)
    return seen


def test_nothing_of_a_forgotten_memory_or_purged_chat_is_left_in_the_data_folder(data_home, capsys, monkeypatch):
    monkeypatch.delenv(ENV_LOG_TEXT, raising=False)
    marker = new_marker()
    seen = scenario(data_home, marker, capsys)
    assert seen["export"] and "memory.sqlite3" in " ".join(seen["before"])  # the marker was there
    assert seen["wal_exists"]
    assert seen["open"] == [] and seen["closed"] == []
    assert not (data_home / "logs" / TEXT_LOG_NAME).exists()
    log_text = (data_home / "logs" / "memory-r1.log").read_text(encoding="utf-8")
    assert "unparseable output" in log_text and "skipped as duplicates" in log_text  # the paths ran
    assert "turn file:1 skipped" in log_text and "unknown event" in log_text


def test_with_the_text_log_on_forget_still_leaves_nothing(data_home, capsys, monkeypatch):
    monkeypatch.setenv(ENV_LOG_TEXT, "1")
    marker = new_marker()
    seen = scenario(data_home, marker, capsys)
    assert f"logs/{TEXT_LOG_NAME}" in seen["before"]  # the switch logged the text...
    assert seen["open"] == [] and seen["closed"] == []  # ...and forget/purge emptied it


def test_the_text_log_is_emptied_by_a_bank_forget_alone(data_home, monkeypatch, hash_embedder):
    monkeypatch.setenv(ENV_LOG_TEXT, "1")
    marker = new_marker()
    setup_logging(data_home)
    try:
        with MemoryBank(data_home / "memory.sqlite3", hash_embedder) as bank:
            mem = bank.add(f"Ann's PIN is {marker}").memory
            log_text("test", marker)
            text_log = data_home / "logs" / TEXT_LOG_NAME
            assert marker in text_log.read_text(encoding="utf-8")
            bank.forget(mem.id)
            assert text_log.read_text(encoding="utf-8") == ""
            log_text("after", "later text")  # the handler reopens the emptied file
            assert "later text" in text_log.read_text(encoding="utf-8")
    finally:
        remove_app_handlers()
    assert files_with(data_home, marker) == []

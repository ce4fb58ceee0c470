"""The one turn loop (`core.assistant.turns.run_turns`) with each progress store: a run
interrupted mid-way (Ctrl-C inside the model) resumes at the first unrecorded turn, a failed
turn is recorded and skipped, and the hooks run in order. Scripted FakeBackend manager over a
real SQLite + sqlite-vec bank (HashEmbedder)."""

from __future__ import annotations

import json
import re

import pytest

from core.agents.manager import MemoryManager
from core.assistant.ingest import IngestState, IngestTurn, SidecarProgress
from core.assistant.turns import JsonlProgress, remaining, run_turns
from core.fakes import FakeBackend

TURNS = [IngestTurn(s, t, "1:00 pm on 1 May, 2023", f"f:{i}", dia_id=f"D1:{i}")
         for i, (s, t) in enumerate([("Ann", "I adopted a cat named Tom."), ("Bob", "I moved to Oslo."),
                                     ("Ann", "Tom loves tuna."), ("Bob", "I play the piano.")], 1)]


class Crash(KeyboardInterrupt):
    pass


def script(crash_on: str | None = None, garbage_on: str | None = None):
    """Extraction: one fact per turn; decision: ADD every new fact. Raises Crash when the
    turn text is `crash_on`; unparseable output (twice) for `garbage_on`."""

    def run(messages, schema):
        user = messages[-1]["content"]
        if schema and "facts" in schema["properties"]:
            said = re.search(r"^Message: (.*)$", user, re.M).group(1)
            speaker = re.search(r"^Speaker: (.*)$", user, re.M).group(1)
            if said == crash_on:
                raise Crash()
            if said == garbage_on:
                return "not JSON"
            return json.dumps({"facts": [f"{speaker} said: {said}"]})
        shown = json.loads(user.split("Existing memories:\n", 1)[1].split("\nNew facts:", 1)[0])
        facts = json.loads(user.split("New facts:\n", 1)[1].split("\nOutput:", 1)[0])
        return json.dumps({"memory": [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in shown]
                          + [{"id": str(len(shown) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]})

    return run


def manager(bank, **kw):
    backend = FakeBackend(default=script(**kw))
    return MemoryManager(bank, backend), backend


def extracted(backend) -> list[str]:
    return [re.search(r"^Message: (.*)$", c["messages"][-1]["content"], re.M).group(1)
            for c in backend.calls if c["schema"] and "facts" in c["schema"]["properties"]]


def sidecar(tmp_path):
    return SidecarProgress(IngestState(tmp_path / "state.json"), "key", "f.jsonl")


def jsonl(tmp_path):
    return JsonlProgress(tmp_path / "progress.jsonl", key_of=lambda t: t.dia_id,
                         record_of=lambda o: {"dia_id": o.turn.dia_id, **o.op_counts(),
                                              "error": str(o.error) if o.error else None})


@pytest.mark.parametrize("store", [sidecar, jsonl], ids=["json-sidecar", "jsonl"])
def test_an_interrupted_run_resumes_at_the_first_unrecorded_turn(tmp_path, bank, store):
    first, _ = manager(bank, crash_on="Tom loves tuna.")
    with pytest.raises(Crash):
        run_turns(first, TURNS, progress=store(tmp_path))
    assert len(bank.list()) == 2
    progress = store(tmp_path)  # a new process reads what the first one recorded
    assert remaining(TURNS, progress) == 2
    again, backend = manager(bank)
    report = run_turns(again, TURNS, progress=progress)
    assert (report.total, report.skipped, report.processed, report.failed) == (4, 2, 2, [])
    assert extracted(backend) == ["Tom loves tuna.", "I play the piano."]  # done turns not redone
    assert {m.text for m in bank.list()} == {f"{t.speaker} said: {t.text}" for t in TURNS}
    assert {e.turn for e in bank.history()} == {t.turn_id for t in TURNS}
    assert remaining(TURNS, store(tmp_path)) == 0
    idle, backend = manager(bank)
    assert run_turns(idle, TURNS, progress=store(tmp_path)).processed == 0 and backend.calls == []


def test_the_stores_keep_their_on_disk_formats(tmp_path, bank):
    mgr, _ = manager(bank, garbage_on="I moved to Oslo.")
    run_turns(mgr, TURNS, progress=sidecar(tmp_path))
    saved = json.loads((tmp_path / "state.json").read_text())["key"]
    assert (saved["file"], saved["done"], saved["failed"]) == ("f.jsonl", 4, ["f:2"])
    (tmp_path / "other").mkdir()
    mgr, _ = manager(bank, garbage_on="I moved to Oslo.")
    run_turns(mgr, TURNS, progress=jsonl(tmp_path / "other"))
    lines = [json.loads(x) for x in (tmp_path / "other" / "progress.jsonl").read_text().splitlines()]
    assert [r["dia_id"] for r in lines] == ["D1:1", "D1:2", "D1:3", "D1:4"]
    assert lines[1]["error"] and lines[1]["ADD"] == 0 and lines[0]["error"] is None


def test_a_torn_last_jsonl_line_is_redone(tmp_path, bank):
    mgr, _ = manager(bank)
    run_turns(mgr, TURNS[:2], progress=jsonl(tmp_path))
    path = tmp_path / "progress.jsonl"
    path.write_text(path.read_text().splitlines(keepends=True)[0] + '{"dia_id": "D1:')  # a crash mid-write
    again, backend = manager(bank)
    report = run_turns(again, TURNS, progress=jsonl(tmp_path))
    assert report.skipped == 1 and extracted(backend)[0] == "I moved to Oslo."
    assert len(bank.list()) == 4  # the redone turn's fact was a duplicate: skipped, not doubled


def test_hooks_run_in_order_and_a_failed_turn_is_reported(tmp_path, bank):
    mgr, _ = manager(bank, garbage_on="I moved to Oslo.")
    events = []

    def after(outcome):
        events.append(("after", outcome.turn.turn_id, outcome.prepared, outcome.error is not None))

    report = run_turns(mgr, TURNS[:2], progress=jsonl(tmp_path),
                       before_turn=lambda t: events.append(("before", t.turn_id)) or len(bank.list()),
                       after_turn=after,
                       on_turn=lambda o: events.append(("on_turn", o.turn.turn_id, o.seconds >= 0)))
    assert events == [("before", "f:1"), ("after", "f:1", 0, False), ("on_turn", "f:1", True),
                      ("before", "f:2"), ("after", "f:2", 1, True), ("on_turn", "f:2", True)]
    assert report.failed == ["f:2"] and len(report.changes.added) == 1

"""`memory-r1 chat`, `ingest` and `ask` with FakeBackends over a real bank in the test's data dir.

The model loader and the bank opener are patched (fake model, HashEmbedder) so these run in
milliseconds; tests/test_integration_real_model.py runs the same commands on the real models.
"""

from __future__ import annotations

import builtins
import json

import pytest

from app.cli import build_parser, chat_cmd, main
from core.fakes import FakeBackend, HashEmbedder
from core.assistant.ingest import STATE_FILE, load_turns
from core.memory import MemoryBank
from core.paths import db_path


def manager_script(messages, schema):
    """Extraction: one fact per turn, naming the speaker; decision: keep everything."""
    if schema and "facts" in schema.get("properties", {}):
        content = messages[-1]["content"]
        speaker = content.split("Speaker: ")[1].splitlines()[0]
        said = content.split("Message: ")[1].rsplit("\nOutput:", 1)[0]
        return json.dumps({"facts": [f"{speaker} said: {said}"]})
    if schema:
        n = len(json.loads(messages[-1]["content"].split("New facts:\n")[1].split("\nOutput:")[0]))
        shown = json.loads(messages[-1]["content"].split("Existing memories:\n")[1].split("\nNew facts:")[0])
        facts = json.loads(messages[-1]["content"].split("New facts:\n")[1].split("\nOutput:")[0])
        return json.dumps({"memory": [{"id": str(len(shown) + i), "text": f, "event": "ADD"}
                                      for i, f in enumerate(facts[:n])]})
    return "**Memories selected as relevant:**\n- none\n**Answer:** fine"


class Loader:
    def __init__(self, script=manager_script, **kw):
        self.backends: list[FakeBackend] = []
        self.specs = []
        self.script = script
        self.kw = kw

    def __call__(self, spec):
        self.specs.append(spec)
        b = FakeBackend(default=self.script, **self.kw)
        self.backends.append(b)
        return b


@pytest.fixture
def loader(monkeypatch):
    ld = Loader()
    monkeypatch.setattr(chat_cmd, "_load", ld)
    monkeypatch.setattr(chat_cmd, "_open_bank", lambda: MemoryBank(db_path(), HashEmbedder()))
    return ld


def open_bank():
    return MemoryBank(db_path(), HashEmbedder())


def write_jsonl(path, turns):
    path.write_text("\n".join(json.dumps(t) for t in turns) + "\n", encoding="utf-8")
    return path


TURNS = [
    {"speaker": "Ann", "text": "I adopted a cat named Tom.", "time": "1:00 pm on 1 May, 2023"},
    {"speaker": "Bob", "text": "I moved to Oslo last year.", "time": "1:05 pm on 1 May, 2023"},
    {"speaker": "Ann", "text": "Tom loves tuna.", "time": "2:00 pm on 3 May, 2023"},
    {"speaker": "Bob", "text": "Oslo is cold in winter.", "time": "2:05 pm on 3 May, 2023"},
]


def test_commands_are_registered():
    parser = build_parser()
    for argv in (["chat"], ["ingest", "f.jsonl"], ["ask", "q", "--json"]):
        args = parser.parse_args(argv + ["--answer-model", "a.gguf", "--manager-adapter", "l.gguf",
                                         "--n-ctx", "2048", "--threads", "2"])
        assert callable(args.func) and args.answer_model == "a.gguf" and args.n_ctx == 2048


def test_ask_with_no_memories_says_it_does_not_know_without_loading_a_model(loader, capsys):
    assert main(["ask", "Where do I live?", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out == {"answer": "I don't know.", "selected": [], "retrieved": []}
    assert loader.backends == []


def test_ask_json_structure(loader, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    import numpy as np

    from core.fakes import write_gguf

    # the CLI checks a given model file is a GGUF model (its header); the loader is a fake
    write_gguf(tmp_path / "x.gguf", {"token_embd.weight": np.zeros(16, dtype=np.float32)})
    with open_bank() as bank:
        cat = bank.add("Ann adopted a cat named Tom", speaker="Ann", observed_at="1 May, 2023").memory
        bank.add("Bob moved to Oslo", speaker="Bob", observed_at="1 May, 2023")
    loader.script = lambda m, s: ("**Memories selected as relevant:**\n- 1 May, 2023: Ann adopted a cat named Tom\n"
                                  "**Answer:** a cat")
    assert main(["ask", "What pet does Ann have?", "--json", "--answer-model", "x.gguf", "--n-ctx", "2048"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out) == {"answer", "selected", "retrieved"}
    assert out["answer"] == "a cat" and out["selected"] == [cat.id] and cat.id in out["retrieved"]
    assert set(out["selected"]) <= set(out["retrieved"])
    assert loader.specs[0].path == "x.gguf" and loader.specs[0].n_ctx == 2048
    assert loader.backends[0].closed
    assert main(["ask", "What pet does Ann have?"]) == 0
    text = capsys.readouterr().out
    assert text.startswith("a cat") and f"#{cat.id}" in text


def test_ingest_jsonl_then_rerun_skips_everything(loader, tmp_path, capsys, data_home):
    f = write_jsonl(tmp_path / "chat.jsonl", TURNS)
    assert main(["ingest", str(f), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["processed"] == 4 and summary["added"] == 4 and summary["failed"] == []
    with open_bank() as bank:
        mems = bank.list()
        assert {m.speaker for m in mems} == {"Ann", "Bob"}
        assert {m.observed_at for m in mems} == {t["time"] for t in TURNS}
        turns = {e.turn for e in bank.history()}
        assert turns == {f"chat.jsonl:{i}" for i in range(1, 5)}
    assert (data_home / STATE_FILE).exists()
    # the small embedded model gets a second instance, used for the decision calls only
    assert len(loader.backends) == 2 and all(b.closed for b in loader.backends)
    assert all("facts" in c["schema"]["properties"] for c in loader.backends[0].calls)
    assert loader.backends[1].calls and all("memory" in c["schema"]["properties"] for c in loader.backends[1].calls)
    n_calls = sum(len(b.calls) for b in loader.backends)
    assert main(["ingest", str(f), "--json"]) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["processed"] == 0 and again["skipped"] == 4
    assert sum(len(b.calls) for b in loader.backends) == n_calls
    with open_bank() as bank:
        assert len(bank.list()) == 4


def test_ingest_resumes_after_an_interruption(loader, tmp_path, capsys):
    f = write_jsonl(tmp_path / "chat.jsonl", TURNS)
    calls = {"n": 0}

    def dies_on_turn_three(messages, schema):
        if schema and "facts" in schema.get("properties", {}):
            calls["n"] += 1
            if calls["n"] == 3:
                raise KeyboardInterrupt
        return manager_script(messages, schema)

    loader.script = dies_on_turn_three
    assert main(["ingest", str(f)]) == 130  # Ctrl-C
    with open_bank() as bank:
        assert len(bank.list()) == 2
    loader.script = manager_script
    assert main(["ingest", str(f), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["skipped"] == 2 and summary["processed"] == 2
    with open_bank() as bank:
        assert len(bank.list()) == 4
    assert main(["ingest", str(f), "--restart", "--json"]) == 0  # everything again: all duplicates
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["processed"] == 4 and summary["added"] == 0 and summary["unchanged"] == 4


def test_ingest_a_bad_line_fails_clearly_and_ingests_nothing(loader, tmp_path, capsys):
    f = tmp_path / "bad.jsonl"
    f.write_text(json.dumps(TURNS[0]) + "\n{not json\n", encoding="utf-8")
    assert main(["ingest", str(f)]) == 1
    err = capsys.readouterr().err
    assert "line 2" in err and err.count("\n") == 1
    assert loader.backends == []
    with open_bank() as bank:
        assert bank.list() == []
    f.write_text(json.dumps({"text": "no speaker"}) + "\n", encoding="utf-8")
    assert main(["ingest", str(f)]) == 1
    assert "speaker" in capsys.readouterr().err
    assert main(["ingest", str(tmp_path / "missing.jsonl")]) == 1
    assert "No such file" in capsys.readouterr().err


def test_ingest_a_failed_turn_is_reported_and_skipped(loader, tmp_path, capsys):
    f = write_jsonl(tmp_path / "chat.jsonl", TURNS[:2])
    seen = {"n": 0}

    def first_turn_garbage(messages, schema):
        seen["n"] += 1
        if seen["n"] <= 2:
            return "garbage"
        return manager_script(messages, schema)

    loader.script = first_turn_garbage
    assert main(["ingest", str(f), "--json"]) == 0
    captured = capsys.readouterr()
    summary = json.loads(captured.out)
    assert summary["failed"] == ["chat.jsonl:1"] and summary["added"] == 1


def test_ingest_locomo_sample(loader, tmp_path, capsys):
    sample = {
        "sample_id": "conv-x",
        "conversation": {
            "speaker_a": "Ann", "speaker_b": "Bob",
            "session_2_date_time": "3:00 pm on 9 May, 2023",
            "session_2": [{"speaker": "Bob", "dia_id": "D2:1", "text": "Back from Oslo!"}],
            "session_1_date_time": "1:00 pm on 1 May, 2023",
            "session_1": [{"speaker": "Ann", "dia_id": "D1:1", "text": "Look at my cat",
                           "blip_caption": "a photo of a grey cat"},
                          {"speaker": "Bob", "dia_id": "D1:2", "text": "Cute!"}],
        },
        "qa": [{"question": "q", "answer": 2023, "evidence": ["D1:1"], "category": 2}],
    }
    f = tmp_path / "locomo.json"
    f.write_text(json.dumps([sample]), encoding="utf-8")
    turns = load_turns(f)
    assert [t.turn_id for t in turns] == ["locomo:conv-x/D1:1", "locomo:conv-x/D1:2", "locomo:conv-x/D2:1"]
    assert turns[0].time == "1:00 pm on 1 May, 2023" and "grey cat" in turns[0].text
    assert main(["ingest", str(f), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["processed"] == 3
    with open_bank() as bank:
        by_turn = {e.turn for e in bank.history()}
        assert by_turn == {t.turn_id for t in turns}
        assert {m.speaker for m in bank.list()} == {"Ann", "Bob"}


def feed_input(monkeypatch, lines):
    it = iter(lines)

    def fake_input(prompt=""):
        print(prompt, end="")
        try:
            item = next(it)
        except StopIteration:
            raise EOFError from None
        if isinstance(item, BaseException):
            raise item
        return item

    monkeypatch.setattr(builtins, "input", fake_input)


def test_chat_session(loader, monkeypatch, capsys):
    with open_bank() as bank:
        old = bank.add("User plays the violin", speaker="User").memory
    feed_input(monkeypatch, ["I have a cat called Tom", KeyboardInterrupt(), "/memories",
                             f"/forget {old.id}", "/forget abc", "/forget 999", "/bogus",
                             "remember that my sister lives in Lisbon", "/quit"])
    assert main(["chat"]) == 0
    out = capsys.readouterr().out
    assert "assistant> fine" in out
    assert "/quit" in out  # the Ctrl-C hint at the prompt
    assert f"#{old.id}" in out and "Forgot" in out and "usage: /forget ID" in out
    assert "There is no memory #999" in out and "unknown command" in out
    assert "User's sister lives in Lisbon" in out
    with open_bank() as bank:
        texts = {m.text for m in bank.list()}
        assert "User said: I have a cat called Tom" in texts  # the manager ran before exit
        assert "User's sister lives in Lisbon" in texts
        assert bank.get(old.id).status == "deleted"
        conv = bank.chats.list_conversations()[0]
        roles = [m.role for m in bank.chats.messages(conv.id)]
        assert roles == ["user", "assistant", "user", "assistant"]
    assert len(loader.backends) == 1  # one model shared by both roles


def test_chat_ctrl_c_stops_a_reply_not_the_program(loader, monkeypatch, capsys):
    import os
    import signal

    def script(messages, schema):
        if schema:
            return manager_script(messages, schema)
        return "**Answer:** " + "word " * 400

    loader.script = script
    loader.kw = {"chunk": 5, "delay": 0.002}
    sent = {"done": False, "text": ""}
    real_print = builtins.print

    def print_and_interrupt(*a, **k):
        real_print(*a, **k)
        sent["text"] += "".join(str(x) for x in a)
        if sent["text"].count("word") >= 3 and not sent["done"]:
            sent["done"] = True
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C while the reply streams

    monkeypatch.setattr(builtins, "print", print_and_interrupt)
    feed_input(monkeypatch, ["tell me a long story", "/quit"])
    assert main(["chat"]) == 0  # a stored chat: a temporary one is gone once the command exits
    out = capsys.readouterr().out
    assert "[stopped]" in out and out.count("word") < 400
    with open_bank() as bank:
        conv = bank.chats.list_conversations(include_deleted=True)[0]
        reply = bank.chats.messages(conv.id)[-1]
        assert reply.meta["cancelled"] is True and 0 < reply.content.count("word") < 400


def test_load_turns_formats_and_errors(tmp_path):
    from core.errors import ImportFormatError, InvalidInputError
    from core.assistant.ingest import IngestState, load_turns

    lst = tmp_path / "turns.json"
    lst.write_text(json.dumps(TURNS[:2]), encoding="utf-8")
    assert [(t.speaker, t.turn_id) for t in load_turns(lst)] == [("Ann", "turns.json:1"), ("Bob", "turns.json:2")]
    one = tmp_path / "one.json"  # a single LoCoMo sample, not in a list
    one.write_text(json.dumps({"sample_id": "s", "conversation": {
        "speaker_a": "A", "speaker_b": "B", "session_1_date_time": "t1",
        "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]}}), encoding="utf-8")
    assert [(t.turn_id, t.time) for t in load_turns(one)] == [("locomo:s/D1:1", "t1")]
    for name, content, message in [
        ("empty.jsonl", "\n\n", "no conversation turns"),
        ("bin.jsonl", b"\xff\xfe\x00bad", "UTF-8"),
        ("badtime.jsonl", json.dumps({"speaker": "A", "text": "x", "time": {"h": 1}}), "time"),
        ("badlocomo.json", json.dumps([{"conversation": {"speaker_a": "A"}}]), "LoCoMo"),
        ("scalar.json", "[1, 2]", "item 1"),
    ]:
        f = tmp_path / name
        f.write_bytes(content if isinstance(content, bytes) else content.encode())
        with pytest.raises(ImportFormatError) as err:
            load_turns(f)
        assert message in str(err.value), (name, str(err.value))
    with pytest.raises(InvalidInputError):
        load_turns(tmp_path / "nope.jsonl")
    state_file = tmp_path / "state.json"
    state_file.write_text("{broken", encoding="utf-8")
    state = IngestState(state_file)  # a corrupt sidecar starts over, it never blocks ingestion
    assert state.done("k") == 0
    state.record("k", "f", 3, ["f:2"])
    assert IngestState(state_file).done("k") == 3 and IngestState(state_file).failed("k") == ["f:2"]


def test_a_temporary_terminal_chat_reaches_no_file_of_the_data_folder(loader, monkeypatch, capsys, data_home):
    import uuid

    marker = f"okapi-{uuid.uuid4().hex}"
    seen_while_open: list = []

    def look():
        seen_while_open.extend(p for p in data_home.rglob("*") if p.is_file() and marker.encode() in p.read_bytes())
        return "/quit"

    lines = iter([f"my locker code is {marker}", look])
    monkeypatch.setattr(builtins, "input", lambda prompt="": (lambda item: item() if callable(item) else item)(
        next(lines)))
    assert main(["chat", "--temporary"]) == 0
    assert "assistant>" in capsys.readouterr().out
    assert seen_while_open == []
    assert [p for p in data_home.rglob("*") if p.is_file() and marker.encode() in p.read_bytes()] == []
    with open_bank() as bank:
        assert bank.chats.list_conversations(include_deleted=True) == []


def test_chat_remembers_messages_an_earlier_run_left_with_a_notice(loader, monkeypatch, capsys):
    with open_bank() as bank:
        cid = bank.chats.create_conversation("Earlier").id
        mid = bank.chats.add_message(cid, "user", "I play the cello", queue_for_manager=True, speaker="User").id
    feed_input(monkeypatch, ["/quit"])
    assert main(["chat"]) == 0
    assert "Remembering 1 earlier message…" in capsys.readouterr().out
    with open_bank() as bank:
        assert bank.chats.pending_turns() == []
        assert [e.turn for e in bank.history()] == [f"chat:{cid}/{mid}"]

"""The LoCoMo evaluation runner: an end-to-end run on a synthetic LoCoMo-format conversation
with scripted fake models (real SQLite banks, HashEmbedder), its outputs, caching and resume;
the `eval` CLI; and a smoke run with the real embedded model on 2 validation questions."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.errors import InvalidInputError, ModelOutputError
from core.fakes import FakeBackend, HashEmbedder
from tests.training.locomo_fixtures import (T1, T2, decision_input, extracted_facts, last_user, locomo_sample,
                                            write_locomo)
from core.locomo import load_locomo
from training.eval.systems import fit_recent_turns, selected_questions
from training.eval.runner import Components, EvalConfig, parse_systems, run_locomo

VAL = Path(__file__).resolve().parents[4] / "shared" / "data" / "locomo" / "val.json"
CONV = locomo_sample("conv-test", [
    (T1, [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob! I adopted a dog named Rex yesterday."},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice! I moved to Oslo in 2022."},
          {"speaker": "Ann", "dia_id": "D1:3", "text": "Rex loves the beach.", "blip_caption": "a dog on sand"},
          {"speaker": "Bob", "dia_id": "D1:4", "text": "I play jazz piano."}]),
    (T2, [{"speaker": "Ann", "dia_id": "D2:1", "text": "I adopted another dog named Max."},
          {"speaker": "Bob", "dia_id": "D2:2", "text": "I started a bakery."}]),
], [
    {"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4},
    {"question": "When did Bob move to Oslo?", "answer": 2022, "evidence": ["D1:2"], "category": 2},
    {"question": "What does Rex love?", "answer": "the beach", "evidence": ["D1:3"], "category": 1},
    {"question": "What did Bob start?", "answer": "a bakery", "evidence": ["D2:2"], "category": 3},
    {"question": "What did Ann adopt in session 9?", "adversarial_answer": "a cat", "evidence": ["D1:1"],
     "category": 5},
])
# what the scripted answerer says, per question (wrong on purpose for some)
ANSWERS = {"Where does Bob live?": "Oslo", "When did Bob move to Oslo?": "2022",
           "What does Rex love?": "the sea", "What did Bob start?": ""}


def manager_script(messages, schema):
    """Extraction: one fact per turn, `<speaker>: <message>`. Decision: UPDATE memory 0 when
    the new fact and it are both about dogs, NONE for other shown memories, ADD new facts."""
    facts = extracted_facts(messages, schema)
    if facts is not None:
        return json.dumps({"facts": facts})
    shown, facts = decision_input(messages)
    items, next_id = [], len(shown)
    for mem in shown:
        if "dog" in mem["text"] and any("dog" in f for f in facts):
            merged = facts[0].replace(" said: ", " also said: ") + " (merged with an earlier memory)"
            items.append({"id": mem["id"], "text": merged, "event": "UPDATE", "old_memory": mem["text"]})
            facts = facts[1:]
        else:
            items.append({"id": mem["id"], "text": mem["text"], "event": "NONE"})
    for f in facts:
        items.append({"id": str(next_id), "text": f, "event": "ADD"})
        next_id += 1
    return json.dumps({"memory": items})


def answer_script(messages, schema):
    user = last_user(messages)
    if schema and "label" in schema.get("properties", {}):  # the judge
        gold = re.search(r"^Gold answer: (.*)$", user, re.M).group(1)
        pred = re.search(r"^Generated answer: (.*)$", user, re.M).group(1)
        return json.dumps({"label": "CORRECT" if gold.lower() in pred.lower() else "WRONG"})
    question = re.search(r"^Question: (.*)$", user, re.M).group(1)
    first = next((ln[2:] for ln in user.splitlines() if ln.startswith("- ")), "none")
    return f"**Memories selected as relevant:**\n- {first}\n**Answer:** {ANSWERS.get(question, 'no idea')}"


class Models:
    """Fake components with counters of how often each model factory ran and was called."""

    def __init__(self, manager=None, judge=False):
        self.manager = manager or FakeBackend(default=manager_script, name="fake-manager")
        self.answer = FakeBackend(default=answer_script, name="fake-answer")
        self.judge = FakeBackend(default=answer_script, name="fake-judge") if judge else None
        self.loads = {"manager": 0, "answer": 0}

    def components(self, manager_id="fake-manager-v1"):
        def make(role):
            def factory():
                self.loads[role] += 1
                return getattr(self, role)
            return factory
        ids = {"manager": manager_id, "answer": "fake-answer-v1"}
        if self.judge is not None:
            ids["judge"] = "fake-judge-v1"
        return Components(HashEmbedder(), answer=make("answer"), manager=make("manager"),
                          judge=(lambda: self.judge) if self.judge is not None else None, ids=ids)


@pytest.fixture
def data(tmp_path):
    return write_locomo(tmp_path, CONV)


def config(data, out, **kw):
    kw.setdefault("progress", False)
    return EvalConfig(data=str(data), out=str(out), cache_dir=str(out.parent / "cache"), **kw)


def lines(path):
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines()]


# --------------------------------------------------------------------------- end to end

def test_all_four_systems_write_every_output(tmp_path, data):
    models = Models(judge=True)
    out = tmp_path / "run"
    results = run_locomo(config(data, out, systems=parse_systems("all")), models.components())
    assert set(results) == {"memory-r1", "no-distill", "rag", "full-context"}
    for system in results:
        d = out / system
        for name in ("predictions.jsonl", "summary.json", "report.md", "scores_by_category.png", "latency.png"):
            assert (d / name).stat().st_size > 0, (system, name)
        assert (d / "memory_ops.png").exists() == (system in ("memory-r1", "no-distill"))
        preds = lines(d / "predictions.jsonl")
        assert len(preds) == 4  # category 5 excluded
        for p in preds:
            for key in ("question", "gold", "prediction", "selected_ids", "retrieved_ids", "category",
                        "latency_s", "prompt_tokens", "f1", "bleu1", "em", "judge"):
                assert key in p, (system, key)
        by_q = {p["question"]: p for p in preds}
        assert by_q["When did Bob move to Oslo?"]["gold"] == "2022"
        assert by_q["When did Bob move to Oslo?"]["em"] == 1.0   # integer gold answer
        assert by_q["What did Bob start?"]["prediction"] == "" and by_q["What did Bob start?"]["f1"] == 0.0
        summary = json.loads((d / "summary.json").read_text())
        # overall = plain mean over the 4 questions: 1 + 1 + F1("the sea", "the beach") + 0
        assert summary["overall"]["f1"] == pytest.approx((1 + 1 + 0.5 + 0) / 4)
        assert summary["overall"]["judge"] == pytest.approx(0.5)
        assert summary["categories"]["2"]["n"] == 1 and summary["categories"]["2"]["name"] == "temporal"
        assert summary["categories"]["1"]["paper_name"] == "single-hop"
        report = (d / "report.md").read_text()
        assert "| 1 | multi-hop | single-hop | 1 |" in report and "**overall**" in report
    mem = json.loads((out / "memory-r1" / "summary.json").read_text())
    ing = mem["ingestion"]
    assert ing["turns"] == 6 and ing["failures"] == 0
    # Ann's two later dog turns are merged into her dog memory; Bob's turns each add one memory
    # and leave his earlier ones unchanged (NOOP)
    assert ing["ops"] == {"ADD": 4, "UPDATE": 2, "DELETE": 0, "NOOP": 3}
    assert ing["memories"] == ing["ops"]["ADD"] and ing["manager_turn_s"]["n"] == 6
    assert mem["timings"]["retrieval_s"]["p95"] is not None
    rag = json.loads((out / "rag" / "summary.json").read_text())
    assert rag["ingestion"]["kind"] == "turns" and rag["ingestion"]["memories"] == 6
    assert rag["evidence_recall"] == 1.0  # 60 slots, 6 turns: every evidence turn is retrieved
    fc = lines(out / "full-context" / "predictions.jsonl")
    assert all(p["context_turns"] == 6 and p["retrieved_ids"] == [] for p in fc)
    # the bank was built once and shared by memory-r1 and no-distill
    assert models.loads["manager"] == 1
    assert (out / "comparison.md").exists() and (out / "comparison.png").stat().st_size > 0
    # the no-distill prompt has no selection step; the memory-r1 one has
    prompts_sent = [c["messages"][0]["content"] for c in models.answer.calls]
    assert any("First list the memories" in p for p in prompts_sent)
    assert any("First list the memories" not in p for p in prompts_sent)


def test_bank_cache_is_reused_by_another_answerer_and_keyed_on_the_manager(tmp_path, data):
    first = Models()
    run_locomo(config(data, tmp_path / "a", systems=("memory-r1",)), first.components())
    calls = len(first.manager.calls)
    assert calls > 0
    second = Models()  # another answerer, same manager id: no ingestion at all
    summary = run_locomo(config(data, tmp_path / "b", systems=("no-distill",)), second.components())
    assert second.loads["manager"] == 0 and second.manager.calls == []
    assert summary["no-distill"]["ingestion"]["cached"] == 1
    third = Models()  # another manager model: a new bank
    run_locomo(config(data, tmp_path / "c", systems=("memory-r1",)), third.components(manager_id="other"))
    assert len(third.manager.calls) == calls


def test_interrupted_answering_resumes_without_redoing_questions(tmp_path, data):
    out = tmp_path / "run"
    models = Models()
    run_locomo(config(data, out, max_questions=2), models.components())
    assert len(lines(out / "predictions.jsonl")) == 2
    answered = len(models.answer.calls)
    # a crash mid-write leaves a torn last line: it is dropped and that question redone
    with open(out / "predictions.jsonl", "a") as fh:
        fh.write('{"sample_id": "conv-test", "qa_ind')
    again = Models()
    run_locomo(config(data, out), again.components())
    preds = lines(out / "predictions.jsonl")
    assert sorted(p["qa_index"] for p in preds) == [0, 1, 2, 3]
    assert len(again.answer.calls) == 2 and answered == 2
    assert again.manager.calls == []  # bank from the cache
    assert json.loads((out / "summary.json").read_text())["n_questions"] == 4


def test_interrupted_ingestion_resumes_from_the_last_turn(tmp_path, data):
    class Crash(KeyboardInterrupt):
        pass

    seen = []

    def crashing(messages, schema):
        if schema and "facts" in schema["properties"]:
            seen.append(last_user(messages))
            if len(seen) == 3:
                raise Crash()
        return manager_script(messages, schema)

    out = tmp_path / "run"
    with pytest.raises(Crash):
        run_locomo(config(data, out), Models(FakeBackend(default=crashing)).components())
    cache = next((out.parent / "cache").glob("memory-conv-test-*"))
    assert [r["dia_id"] for r in lines(cache / "turns.jsonl")] == ["D1:1", "D1:2"]
    assert not (cache / "done.json").exists()
    models = Models()
    run_locomo(config(data, out), models.components())
    extracted = [c for c in models.manager.calls if "facts" in (c["schema"] or {}).get("properties", {})]
    assert len(extracted) == 4  # turns D1:3 .. D2:2 only
    assert [r["dia_id"] for r in lines(cache / "turns.jsonl")] == ["D1:1", "D1:2", "D1:3", "D1:4", "D2:1", "D2:2"]
    assert json.loads((out / "summary.json").read_text())["ingestion"]["turns"] == 6


def test_manager_failures_are_counted_not_fatal(tmp_path, data):
    def flaky(messages, schema):
        if "Rex loves the beach" in last_user(messages):
            return "this is not JSON"
        return manager_script(messages, schema)

    out = tmp_path / "run"
    run_locomo(config(data, out), Models(FakeBackend(default=flaky)).components())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["ingestion"]["failures"] == 1 and summary["ingestion"]["turns"] == 6
    assert "manager failures (unparseable output after the retry; turn skipped): 1" in (out / "report.md").read_text()


def test_answer_failures_are_counted_and_scored_empty(tmp_path, data):
    models = Models()
    models.answer = FakeBackend([ModelOutputError("bad", "raw!")], default=answer_script)
    out = tmp_path / "run"
    summary = run_locomo(config(data, out), models.components())["memory-r1"]
    assert summary["answer_failures"] == 1
    bad = [p for p in lines(out / "predictions.jsonl") if p["error"]]
    assert len(bad) == 1 and bad[0]["prediction"] == "" and bad[0]["f1"] == 0.0


def test_max_sessions_ingests_only_those_sessions_and_their_questions(tmp_path, data):
    out = tmp_path / "run"
    summary = run_locomo(config(data, out, max_sessions=1, systems=("memory-r1",)), Models().components())
    assert summary["memory-r1"]["ingestion"]["turns"] == 4
    assert sorted(p["question"] for p in lines(out / "predictions.jsonl")) == [
        "What does Rex love?", "When did Bob move to Oslo?", "Where does Bob live?"]
    sample = load_locomo(data)[0]
    assert [q.index for q in selected_questions(sample, 2)] == [0, 1, 2, 3]


def test_a_folder_with_other_settings_is_refused_unless_fresh(tmp_path, data):
    out = tmp_path / "run"
    run_locomo(config(data, out, max_sessions=1), Models().components())
    with pytest.raises(InvalidInputError, match="other settings.*max_sessions"):
        run_locomo(config(data, out), Models().components())
    run_locomo(config(data, out, fresh=True), Models().components())
    assert len(lines(out / "predictions.jsonl")) == 4


def test_full_context_keeps_the_most_recent_turns_that_fit():
    sample = load_locomo(VAL)[0] if VAL.exists() else None
    if sample is None:
        pytest.skip(f"{VAL} is absent")
    backend = FakeBackend()  # 4 characters per token
    turns = sample.turns_upto(None)
    messages, used = fit_recent_turns(turns, "When?", backend, n_ctx=2048, answer_tokens=256)
    assert 0 < used < len(turns)
    text = messages[-1]["content"]
    assert turns[-1].full_text in text and turns[-used].full_text in text
    assert turns[-used - 1].full_text not in text
    assert backend.count_tokens(backend.apply_chat_template(messages)) <= 2048 - 256


def test_bad_options_are_user_errors(tmp_path, data):
    with pytest.raises(InvalidInputError, match="Unknown system"):
        parse_systems("memory-r2")
    with pytest.raises(InvalidInputError, match="not found"):
        run_locomo(config(tmp_path / "missing.json", tmp_path / "o"), Models().components())
    with pytest.raises(InvalidInputError, match="no sample named conv-9"):
        run_locomo(config(data, tmp_path / "o", samples=("conv-9",)), Models().components())


# --------------------------------------------------------------------------- CLI

def test_cli_compare_prints_a_side_by_side_table(tmp_path, data, capsys):
    from app.cli import main

    out = tmp_path / "run"
    run_locomo(config(data, out, systems=("memory-r1", "rag")), Models().components())
    preds = out / "rag" / "predictions.jsonl"
    preds.write_bytes(preds.read_bytes() + b'{"sample_id": "torn')  # an interrupted run's last line
    torn = preds.read_bytes()
    assert main(["eval", "compare", str(out / "memory-r1"), str(out / "rag"), "--out", str(tmp_path / "cmp")]) == 0
    printed = capsys.readouterr().out
    assert "| | memory-r1 | rag |" in printed and "overall F1" in printed and "memories in bank" in printed
    assert "Paired against memory-r1" in printed and "| rag | " in printed  # rag vs memory-r1, per question
    assert preds.read_bytes() == torn  # comparing only reads the runs
    assert (tmp_path / "cmp" / "comparison.png").stat().st_size > 0
    assert main(["eval", "compare", str(tmp_path / "nothing")]) == 1
    assert "no summary.json" in capsys.readouterr().err


def test_cli_rejects_bad_values(tmp_path, capsys):
    from app.cli import main

    with pytest.raises(SystemExit):
        main(["eval", "locomo", "--data", "x.json", "--max-sessions", "0"])
    assert main(["eval", "locomo", "--data", str(tmp_path / "nope.json"), "--system", "rag"]) == 1
    assert "not found" in capsys.readouterr().err


SMOKE_TURNS = 3  # the first turns of session 1: up to the evidence of its first two questions (D1:2, D1:3)


@pytest.mark.slow
def test_smoke_real_embedded_model_on_two_validation_questions(tmp_path, capsys):
    """The real pipeline end to end through the CLI: SmolLM2-135M manager + answerer, MiniLM,
    real banks, `--max-sessions 1`, the first 2 questions of the validation conversation.

    To stay within a few minutes on 2 shared cores, session 1 is cut to its first SMOKE_TURNS
    turns (a copy in tmp_path; the data never enters the repo)."""
    if not VAL.exists():
        pytest.skip(f"LoCoMo validation file {VAL} is absent (CC BY-NC data, not in the repo)")
    from app.cli import main

    raw = json.loads(VAL.read_text(encoding="utf-8"))[0]
    conv = raw["conversation"]
    small = {**raw, "conversation": {"speaker_a": conv["speaker_a"], "speaker_b": conv["speaker_b"],
                                     "session_1_date_time": conv["session_1_date_time"],
                                     "session_1": conv["session_1"][:SMOKE_TURNS]}}
    data = tmp_path / "val-smoke.json"
    data.write_text(json.dumps([small]), encoding="utf-8")
    out = tmp_path / "smoke"
    rc = main(["eval", "locomo", "--data", str(data), "--max-sessions", "1", "--max-questions", "2",
               "--system", "memory-r1,rag", "--out", str(out), "--no-progress", "--n-ctx", "2048"])
    assert rc == 0
    printed = capsys.readouterr().out
    assert "memory-r1" in printed and "F1" in printed
    golds = [q["answer"] for q in raw["qa"][:2]]
    for system in ("memory-r1", "rag"):
        preds = lines(out / system / "predictions.jsonl")
        assert [p["gold"] for p in preds] == golds
        assert all(p["prompt_tokens"] > 0 and p["latency_s"] > 0 for p in preds)
        summary = json.loads((out / system / "summary.json").read_text())
        assert summary["n_questions"] == 2 and 0.0 <= summary["overall"]["f1"] <= 1.0
        assert (out / system / "report.md").exists() and (out / system / "scores_by_category.png").exists()
    ing = json.loads((out / "memory-r1" / "summary.json").read_text())["ingestion"]
    assert ing["turns"] == SMOKE_TURNS and ing["manager_turn_s"]["n"] == SMOKE_TURNS
    rag = lines(out / "rag" / "predictions.jsonl")
    assert all(len(p["retrieved_ids"]) == SMOKE_TURNS for p in rag)  # every turn fits in 30 + 30
    assert (out / "comparison.md").exists()

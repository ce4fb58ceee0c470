"""Extraction quality against LoCoMo's gold facts (training/eval/extraction.py): hand-computed
precision/recall, the standalone extractor run with a scripted model and its baselines, the
"written" view from a bank's source links inside `eval locomo`, and `memory-r1 eval extraction`
with a scripted backend in place of llama.cpp."""

from __future__ import annotations

import json

import pytest

from core.fakes import FakeBackend, HashEmbedder, router
from tests.training.locomo_fixtures import T1, T2, locomo_sample, with_observation, write_locomo
from training.data.gold_facts import load_gold
from training.eval.extraction import merge_scores, run_extraction, score_turns, written_score

SAMPLE = with_observation(locomo_sample("conv-x", [
    (T1, [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob! I adopted a dog named Rex yesterday. I love rain."},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice! I moved to Oslo in 2022 and I started a bakery."},
          {"speaker": "Ann", "dia_id": "D1:3", "text": "Haha ok."},
          {"speaker": "Bob", "dia_id": "D1:4", "text": "I play jazz piano on weekends."}]),
    (T2, [{"speaker": "Ann", "dia_id": "D2:1", "text": "I went hiking with my sister."}]),
], [{"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4}]), {
    1: {"Ann": [["Ann adopted a dog named Rex on 7 May, 2023.", "D1:1"]],
        "Bob": [["Bob moved to Oslo in 2022.", "D1:2"], ["Bob owns a bakery in the town centre now.", "D1:2"]]},
    2: {"Ann": [["Ann went hiking with her sister.", "D2:1"]]},
})


@pytest.fixture
def data(tmp_path):
    return write_locomo(tmp_path, SAMPLE)


def test_precision_and_recall_are_counted_per_turn():
    s = score_turns([
        (["Sam adopted a dog named Rex.", "Sam is hungry."], ["Sam adopted a dog, Rex.", "Sam lives in Oslo."]),
        (["Sam lives in Oslo."], []),  # a fact of a turn without gold facts is a false positive
        ([], ["Sam plays chess."]),
    ])
    assert (s["proposed"], s["correct"], s["gold"], s["recalled"]) == (3, 1, 3, 1)
    assert s["precision"] == pytest.approx(1 / 3, abs=1e-4) and s["recall"] == pytest.approx(1 / 3, abs=1e-4)
    assert s["turns"] == 3 and s["turns_with_gold"] == 2 and s["f1"] == pytest.approx(1 / 3, abs=1e-3)
    empty = score_turns([([], [])])
    assert empty["precision"] is None and empty["recall"] is None and empty["f1"] is None
    merged = merge_scores([s, score_turns([(["Sam plays chess."], ["Sam plays chess."])])])
    assert (merged["correct"], merged["proposed"], merged["recalled"], merged["gold"]) == (2, 4, 2, 4)


def test_standalone_run_scores_the_model_and_the_two_baselines(data):
    # the scripted chooser keeps the first statement of every turn
    backend = FakeBackend(default='{"keep": [1]}')
    result = run_extraction(load_gold(data), backend, extraction="extractive")
    assert result["extraction"] == "extractive" and len(result["turns"]) == 5
    rows = {r["id"]: r for r in result["turns"]}
    assert rows["conv-x/D1:1"]["model"] == ["Ann adopted a dog named Rex on 7 May 2023."]
    assert rows["conv-x/D1:1"]["keep_all"] == ["Ann adopted a dog named Rex on 7 May 2023.", "Ann loves rain."]
    # gold: D1:1 1, D1:2 2, D2:1 1 = 4; the bakery fact matches no candidate (token F1 < 0.5)
    m = result["model"]  # D1:1 ok, D1:2 Oslo ok, D1:4 piano wrong, D2:1 ok
    assert (m["proposed"], m["correct"], m["gold"], m["recalled"]) == (4, 3, 4, 3)
    k = result["keep_all"]  # + "Ann loves rain." and "Bob started a bakery." wrong
    assert (k["proposed"], k["correct"], k["recalled"]) == (6, 3, 3)
    o = result["oracle"]
    assert (o["proposed"], o["correct"], o["recalled"], o["precision"]) == (3, 3, 3, 1.0)
    assert len(backend.calls) == 4  # "Haha ok." has no candidate: no call
    assert run_extraction(load_gold(data), backend, extraction="extractive", max_turns=2)["model"]["turns"] == 2


def test_free_mode_scores_the_written_facts_and_has_no_baselines(data):
    backend = FakeBackend(default=router(facts=["Bob moved to Oslo in 2022."]))
    result = run_extraction(load_gold(data), backend, extraction="free")
    assert "oracle" not in result and result["model"]["proposed"] == 5
    assert result["model"]["correct"] == 1 and result["model"]["recalled"] == 1


def test_a_failing_model_counts_the_turn_with_no_fact(data):
    result = run_extraction(load_gold(data), FakeBackend(default="not json"), extraction="extractive",
                            baselines=False, max_turns=1)
    assert result["model"]["failures"] == 1 and result["model"]["proposed"] == 0


def test_eval_locomo_keeps_the_written_view_in_summary_json(tmp_path, data):
    from training.eval.runner import Components, EvalConfig, run_locomo

    def facts(user):
        said = user.split("Message: ", 1)[1]
        known = {"I moved": ["Bob moved to Oslo in 2022."], "I went": ["Ann went hiking with her sister."],
                 "I play": ["Bob plays jazz piano on weekends."]}
        return next((f for start, f in known.items() if start in said), [])

    manager = FakeBackend(default=router(facts=facts), name="fake-manager")
    answer = FakeBackend(default="**Answer:** Oslo", name="fake-answer")
    comps = Components(HashEmbedder(), answer=lambda: answer, manager=lambda: manager,
                       ids={"manager": "m1", "answer": "a1"})
    out = tmp_path / "run"
    run_locomo(EvalConfig(data=str(data), out=str(out), cache_dir=str(tmp_path / "cache"), progress=False,
                          systems=("memory-r1",), manager_extraction="free"), comps)
    ex = json.loads((out / "summary.json").read_text())["ingestion"]["extraction"]
    assert (ex["proposed"], ex["correct"], ex["gold"], ex["recalled"]) == (3, 2, 4, 2)
    assert "facts kept per turn against LoCoMo's gold facts" in (out / "report.md").read_text()
    # the same figure straight from the cached bank
    from core.memory import MemoryBank

    bank = MemoryBank(next((tmp_path / "cache").rglob("bank.sqlite3")), HashEmbedder())
    try:
        [(sample, gold)] = load_gold(data)
        assert written_score(bank, sample, gold) == ex
    finally:
        bank.close()


def test_cli_eval_extraction_with_a_scripted_model(tmp_path, data, monkeypatch, capsys):
    from app.cli import main
    from core.llm import runtime

    backend = FakeBackend(default='{"keep": [1]}')
    monkeypatch.setattr(runtime, "load_backend", lambda spec=None: backend)
    out = tmp_path / "extraction.json"
    assert main(["eval", "extraction", "--data", str(data), "--manager-extraction", "extractive", "--max-turns", "4",
                 "--no-progress", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "extraction extractive: 4 turns, 2 with gold facts (3 gold facts" in printed
    assert "model     P  66.67% (2/3)  R  66.67% (2/3)" in printed
    assert "oracle    P 100.00% (2/2)" in printed
    saved = json.loads(out.read_text())
    assert saved["model"]["correct"] == 2 and len(saved["turns"]) == 4
    assert main(["eval", "extraction", "--data", str(tmp_path / "none.json"), "--no-progress"]) == 1

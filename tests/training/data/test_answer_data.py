"""Answer Agent training examples: the project's Memory Manager builds the bank (cached like
the evaluation's), the app's retrieval picks the memories, the app's prompt module writes the
prompt. Real SQLite + sqlite-vec banks; the manager model is scripted (FakeBackend)."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError
from core.fakes import FakeBackend, HashEmbedder
from tests.training.locomo_fixtures import ANSWER_SESSIONS, T1, T2, add_every_fact, locomo_sample, write_locomo

CONV = locomo_sample("conv-t", ANSWER_SESSIONS, [
    {"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4},
    {"question": "When did Bob move to Oslo?", "answer": 2022, "evidence": ["D1:2"], "category": 2},
    {"question": "What does Rex love?", "answer": "the beach", "evidence": ["D1:3"], "category": 1},
    {"question": "What did Bob start?", "answer": "a bakery", "evidence": ["D2:1"], "category": 3},
    {"question": "What did Ann adopt?", "adversarial_answer": "a cat", "evidence": ["D1:1"], "category": 5},
])
manager_script = add_every_fact


def _components(manager_factory):
    from training.eval.runner import Components

    def no_answer():
        raise AssertionError("building examples must not load the answer model")

    return Components(HashEmbedder(), answer=no_answer, manager=manager_factory,
                      ids={"manager": "fake-manager-v1", "answer": "none"})


@pytest.fixture
def data(tmp_path):
    return write_locomo(tmp_path, CONV)


def test_examples_use_the_managers_bank_the_app_prompt_and_the_cache(data, tmp_path):
    from core.agents.answer import AnswerAgent
    from core.memory import MemoryBank
    from core.agents.prompts import ANSWER_SYSTEM, answer_messages
    from training.data.answer import build_examples

    manager = FakeBackend(default=manager_script, name="fake-manager")
    cache = tmp_path / "cache"
    examples = build_examples(data, k=60, cache_dir=cache, components=_components(lambda: manager),
                              progress=False)
    assert [e["question"] for e in examples] == [q["question"] for q in CONV["qa"][:4]]  # category 5 dropped
    assert [e["answer"] for e in examples] == ["Oslo", "2022", "the beach", "a bakery"]
    assert manager.calls, "the Memory Manager built the bank"
    first = examples[0]
    texts = [m["text"] for m in first["memories"]]
    assert "Bob said: I moved to Oslo in 2022." in texts and len(texts) == 4
    assert all(m["observed_at"] in (T1, T2) and m["speaker"] in ("Ann", "Bob") for m in first["memories"])
    assert first["bank"] == "memory" and first["evidence_retrieved"] is True
    # the prompt is the app's, over exactly those memories in rank order
    assert first["prompt"][0]["content"] == ANSWER_SYSTEM
    from core.types import Memory

    mems = [Memory(i, m["text"], speaker=m["speaker"], observed_at=m["observed_at"])
            for i, m in enumerate(first["memories"])]
    assert first["prompt"] == answer_messages(first["question"], AnswerAgent.group(mems, ["Ann", "Bob"]))

    # each memory carries its source links, so the GRPO trainer rebuilds the app's prompt with
    # the same source quotes the evaluation sends (`prompt_sources`)
    from training.config import TrainConfig
    from training.grpo.answer import example_messages, prompt_layout

    assert all(m["sources"] and m["sources"][0]["text"] for m in first["memories"])
    assert prompt_layout(examples, TrainConfig()) == "sources"
    assert example_messages(first, len(first["memories"]), k=60) == first["prompt_sources"]

    # a second build reuses the cached bank: no manager model is even created
    def must_not_load():
        raise AssertionError("cached bank: the manager must not load")

    again = build_examples(data, k=60, cache_dir=cache, components=_components(must_not_load), progress=False)
    assert [e["memories"] for e in again] == [e["memories"] for e in examples]
    banks = list(cache.glob("memory-conv-t-*/bank.sqlite3"))
    assert len(banks) == 1
    with MemoryBank(banks[0], HashEmbedder()) as bank:
        assert bank.count() == 4


def test_turns_bank_and_max_sessions(data, tmp_path):
    from training.data.answer import build_examples

    def must_not_load():
        raise AssertionError("the turns bank runs no manager")

    examples = build_examples(data, k=2, bank="turns", max_sessions=1, cache_dir=tmp_path / "c",
                              components=_components(must_not_load), progress=False)
    assert [e["question"] for e in examples] == ["Where does Bob live?", "When did Bob move to Oslo?",
                                                 "What does Rex love?"]  # evidence in session 1 only
    assert all(e["bank"] == "turns" and len(e["memories"]) == 2 for e in examples)  # k=2: 1 per speaker
    assert {m["speaker"] for m in examples[0]["memories"]} == {"Ann", "Bob"}
    with pytest.raises(InvalidInputError, match="unknown bank"):
        build_examples(data, bank="nope", components=_components(must_not_load))
    with pytest.raises(InvalidInputError, match="not found"):
        build_examples(tmp_path / "missing.json", components=_components(must_not_load))


def test_examples_jsonl_round_trip_and_bad_lines(tmp_path):
    from training.data.answer import examples_from, load_examples, save_examples

    rows = [{"question": "q?", "answer": "a", "memories": [{"text": "m"}], "category": 4}]
    path = save_examples(rows, tmp_path / "ex.jsonl")
    assert load_examples(path) == rows and examples_from(path) == rows
    path.write_text(json.dumps(rows[0]) + "\n{not json\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r"ex.jsonl:2: not JSON"):
        load_examples(path)
    path.write_text(json.dumps({"question": "q"}) + "\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match=r":1: an example needs"):
        load_examples(path)
    path.write_text("\n", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="no examples"):
        load_examples(path)

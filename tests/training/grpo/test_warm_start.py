"""GRPO from a warm start (`--init-adapter`), the run's no-gradient summary, and the answer
prompts in the app's layout (source quotes). Fast tests use plain files, a real in-memory
MemoryBank with the HashEmbedder and the FakeBackend; the slow ones run TRL for real on a tiny
random-weight LLaMA (with the real SmolLM2 tokenizer) starting from a PEFT LoRA saved here."""

from __future__ import annotations

import dataclasses
import json
import logging

import pytest

from core.agents import prompts
from core.errors import InvalidInputError
from core.fakes import FakeBackend

TINY_BASE = {"kind": "test", "path": "tiny"}


def adapter_folder(path, *, meta: dict | None, meta_name: str = "meta.json"):
    """A folder that looks like a saved PEFT adapter (config + weights + meta)."""
    path.mkdir(parents=True)
    (path / "adapter_config.json").write_text("{}", encoding="utf-8")
    (path / "adapter_model.safetensors").write_bytes(b"weights")
    if meta is not None:
        (path / meta_name).write_text(json.dumps(meta), encoding="utf-8")
    return path


def good_meta(**over) -> dict:
    return {"role": "answer", "prompt_version": prompts.PROMPT_VERSION, "base": dict(TINY_BASE), **over}


# --------------------------------------------------------------------------- the adapter's meta


def test_a_matching_adapter_is_recorded_with_its_digest(tmp_path):
    from core.fileio import sha256_file
    from training.grpo.loop import check_init_adapter

    folder = adapter_folder(tmp_path / "sft", meta=good_meta())
    rec = check_init_adapter(folder, role="answer", base_info=TINY_BASE)
    assert rec["path"] == str(folder.resolve()) and rec["meta_file"] == "meta.json"
    assert rec["sha256"] == sha256_file(folder / "adapter_model.safetensors")
    assert rec["prompt_version"] == prompts.PROMPT_VERSION and rec["role"] == "answer"
    # a GRPO run's own adapter (memory_r1_train.json) chains too; no "role" there = an answer adapter
    grpo = adapter_folder(tmp_path / "grpo", meta={"prompt_version": prompts.PROMPT_VERSION, "base": TINY_BASE},
                          meta_name="memory_r1_train.json")
    assert check_init_adapter(grpo, role="answer", base_info=TINY_BASE)["meta_file"] == "memory_r1_train.json"
    # sha256 on both sides decides, whatever the paths say
    sha = {"kind": "gguf", "path": "/a/model.gguf", "sha256": "ab" * 32}
    hashed = adapter_folder(tmp_path / "h", meta=good_meta(base=sha))
    assert check_init_adapter(hashed, role="answer", base_info=dict(sha, path="/elsewhere/model.gguf"))


@pytest.mark.parametrize("meta, message", [
    (good_meta(role="manager"), "a manager adapter cannot start `train answer`"),
    (good_meta(prompt_version="mr1-prompts-0"), "trained on prompts mr1-prompts-0"),
    (good_meta(prompt_version=None), "(not recorded)"),
    (good_meta(base={"kind": "test", "path": "other"}), "base other is not this run's tiny"),
    (good_meta(base={"kind": "gguf", "path": "x", "sha256": "cd" * 32}), "base sha256"),
    (good_meta(base=None), "records no base model"),
])
def test_a_mismatched_adapter_is_refused_clearly(tmp_path, meta, message):
    from training.grpo.loop import check_init_adapter

    folder = adapter_folder(tmp_path / "a", meta=meta)
    base = {"kind": "gguf", "path": "x", "sha256": "ab" * 32} if "sha256" in message else TINY_BASE
    with pytest.raises(InvalidInputError, match=message.replace("(", r"\(").replace(")", r"\)")):
        check_init_adapter(folder, role="answer", base_info=base)


def test_a_folder_that_is_no_adapter_or_has_no_meta_is_refused(tmp_path):
    from training.grpo.loop import check_init_adapter

    with pytest.raises(InvalidInputError, match="no such folder"):
        check_init_adapter(tmp_path / "missing", role="answer", base_info=TINY_BASE)
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match="no adapter_config.json"):
        check_init_adapter(tmp_path / "empty", role="answer", base_info=TINY_BASE)
    with pytest.raises(InvalidInputError, match="cannot be checked"):
        check_init_adapter(adapter_folder(tmp_path / "nometa", meta=None), role="answer", base_info=TINY_BASE)
    bad = adapter_folder(tmp_path / "bad", meta=None)
    (bad / "meta.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(InvalidInputError, match="unreadable meta"):
        check_init_adapter(bad, role="answer", base_info=TINY_BASE)


def test_the_cli_refuses_a_bad_init_adapter_before_reading_any_data(tmp_path, capsys):
    from app.cli import main

    rc = main(["train", "answer", "--data", str(tmp_path / "none.jsonl"), "--out", str(tmp_path / "o"),
               "--init-adapter", str(tmp_path / "nothing")])
    assert rc != 0
    assert "no such folder" in capsys.readouterr().err


# --------------------------------------------------------------------------- the run's signal


def test_the_summary_says_how_much_of_the_run_had_no_gradient():
    from training.grpo.loop import describe_signal, reward_description, signal_summary
    from training.rewards.answer import em_reward, f1_reward

    records = [{"step": 1, "reward": 0.0, "frac_reward_zero_std": 1.0}, {"step": 1, "val_f1": 0.2},
               {"step": 2, "reward": 0.25, "frac_reward_zero_std": 0.5},
               {"step": 3, "reward": 0.5, "frac_reward_zero_std": 0.0}]
    sig = signal_summary(records)
    assert sig == {"steps": 3, "frac_reward_zero_std_mean": 0.5, "steps_all_tied": round(1 / 3, 4),
                   "reward_mean": 0.25, "reward_first": 0.0, "reward_last": 0.5}
    assert signal_summary([])["frac_reward_zero_std_mean"] is None
    reward = reward_description([em_reward, f1_reward], [1.0, 0.5])
    assert reward["functions"] == ["em_reward", "f1_reward"] and reward["paper"] is False
    assert reward_description([em_reward], [1.0])["paper"] is True
    line = describe_signal({"signal": sig, "reward": reward})
    assert "1 x em_reward + 0.5 x f1_reward" in line and "50% on average" in line and "33% of 3 steps" in line


def test_the_curve_shows_the_share_of_tied_groups(tmp_path):
    from training.grpo.loop import plot_curve

    records = [{"step": i, "reward": i / 10, "frac_reward_zero_std": 1 - i / 10, "completion_length": 10}
               for i in range(1, 6)]
    png = plot_curve(records, tmp_path / "curve.png")
    assert png is not None and png.stat().st_size > 1000


# --------------------------------------------------------------------------- the answer prompt


def _bank_with_sources(hash_embedder):
    """A real bank whose memories came from turns with text (the app's provenance links)."""
    from core.memory import MemoryBank
    from core.types import MemoryOp, SourceTurn

    bank = MemoryBank(":memory:", hash_embedder)
    turns = [("Ann", "1 May, 2023", "I adopted a beagle named Rex at the shelter yesterday!",
              ["Ann adopted a dog named Rex."]),
             ("Bob", "2 May, 2023", "We moved to Oslo last spring, I love it.", ["Bob lives in Oslo."]),
             ("Ann", "3 May, 2023", "Rex loves the beach, we go every weekend.", ["Ann's dog loves the beach."])]
    for i, (who, when, text, facts) in enumerate(turns):
        ref = f"locomo:t-1/D1:{i + 1}"
        bank.apply([MemoryOp("ADD", text=f, speaker=who, observed_at=when, source=ref) for f in facts],
                   source=SourceTurn(text, speaker=who, said_at=when, ref=ref))
    return bank


def _example_from(bank, question: str, memories) -> dict:
    links = bank.sources([m.id for m in memories])
    return {"question": question, "answer": "the beach", "speakers": ["Ann", "Bob"],
            "memories": [{"text": m.text, "speaker": m.speaker, "observed_at": m.observed_at, "source": m.source,
                          "sources": [dataclasses.asdict(s) for s in links[m.id]]} for m in memories]}


def test_the_trainers_prompt_is_the_apps_prompt_with_source_quotes(hash_embedder):
    from core.agents.answer import AnswerAgent
    from training.grpo.answer import example_messages

    bank = _bank_with_sources(hash_embedder)
    try:
        agent = AnswerAgent(bank, FakeBackend(default="**Answer:** the beach"), k=60)
        q = "What does Rex love?"
        mems = agent.retrieve(q, speakers=["Ann", "Bob"])
        app = agent.build_prompt(q, mems).messages
        ex = _example_from(bank, q, mems)
        assert example_messages(ex, len(mems), k=60) == app  # the very messages the app sends
        assert prompts.ANSWER_SOURCES_NOTE in app[0]["content"] and '(said #1: "' in app[1]["content"]
        # the paper's layout on request, and for examples written before the source fields
        paper = AnswerAgent(bank, None, k=60, sources=False).build_prompt(q, mems).messages
        assert example_messages(ex, len(mems), sources=False, k=60) == paper
        old = {**ex, "memories": [{k: v for k, v in m.items() if k != "sources"} for m in ex["memories"]]}
        assert example_messages(old, len(mems), k=60) == paper
        assert paper[0]["content"] == prompts.ANSWER_SYSTEM
        # a memory's turn text alone (`source_text`) is enough for the quote
        slim = {**old, "memories": [dict(m, source_text=s["text"]) for m, s in
                                    zip(old["memories"], [x["sources"][0] for x in ex["memories"]])]}
        assert '(said #1: "' in example_messages(slim, len(mems), k=60)[1]["content"]
    finally:
        bank.close()


def test_examples_without_source_texts_fall_back_to_the_paper_layout_with_a_note(caplog):
    from training.config import TrainConfig
    from training.grpo.answer import prompt_layout

    old = [{"question": "q", "answer": "a", "memories": [{"text": "Ann has a cat.", "speaker": "Ann"}]}]
    new = [{"question": "q", "answer": "a", "memories": [{"text": "Ann has a cat.", "speaker": "Ann",
                                                          "source_text": "I have a cat."}]}]
    with caplog.at_level(logging.WARNING, logger="training.grpo.answer"):
        assert prompt_layout(old, TrainConfig()) == "paper"
    assert "no source-turn texts" in caplog.text
    assert prompt_layout(new, TrainConfig()) == "sources"
    assert prompt_layout(new, TrainConfig(answer_sources=False)) == "paper"


def test_the_managers_frozen_answerer_uses_the_apps_prompt_with_the_turns_quote(hash_embedder):
    from training.data.manager import ManagerState
    from training.rewards.manager import FrozenAnswerer, snapshot_bank

    import numpy as np

    vec = hash_embedder.embed(["Ann adopted a dog named Rex."])
    state = ManagerState(
        id="t-1/D1:3", sample_id="t-1", dia_id="D1:3", speaker="Ann", time="3 May, 2023",
        turn_text="Rex loves the beach, we go every weekend.", source="locomo:t-1/D1:3", speakers=["Ann", "Bob"],
        kind="decision", facts=["Ann's dog loves the beach."], duplicates=[],
        decision_facts=["Ann's dog loves the beach."], shown_ids=[1],
        prompt=[], questions=[{"question": "What does Rex love?", "answer": "the beach", "category": 1,
                               "qa_index": 0}],
        snapshot=[{"id": 1, "text": "Ann adopted a dog named Rex.", "speaker": "Ann", "observed_at": "1 May, 2023",
                   "source": "locomo:t-1/D1:1", "v": 0, "source_text": "I adopted a beagle named Rex!"}],
        vector_table=np.asarray(vec, dtype=np.float32))
    add = json.dumps({"memory": [{"id": "0", "text": "Ann adopted a dog named Rex.", "event": "NONE"},
                                 {"id": "1", "text": "Ann's dog loves the beach.", "event": "ADD"}]})
    seen = []

    def script(messages, schema):
        seen.append(messages)
        return "**Answer:** the beach"

    for sources in (True, False):
        seen.clear()
        answerer = FrozenAnswerer(FakeBackend(default=script), hash_embedder, k=60, max_tokens=32, sources=sources)
        assert answerer.score(add, state).reward == 1.0
        system, user = seen[-1][0]["content"], seen[-1][1]["content"]
        if sources:
            assert prompts.ANSWER_SOURCES_NOTE in system
            assert "Rex loves the beach, we go every weekend." in user  # this turn's text, quoted
            assert "I adopted a beagle named Rex!" in user  # the snapshot memory's own turn
        else:
            assert system == prompts.ANSWER_SYSTEM and "said #" not in user
    bank, _ = snapshot_bank(state, hash_embedder)  # sources off: no links at all
    try:
        assert all(not v for v in bank.sources([m.id for m in bank.list()]).values())
    finally:
        bank.close()


# --------------------------------------------------------------------------- for real (TRL + PEFT)


def _examples(n: int) -> list[dict]:
    return [{"question": f"Where did Ann go on trip {i}?", "answer": "the beach", "category": 4,
             "speakers": ["Ann", "Bob"],
             "memories": [{"text": f"Ann went to the beach on trip {j}.", "speaker": "Ann" if j % 2 else "Bob",
                           "observed_at": f"{j + 1} May, 2023", "source": f"locomo:t/D1:{j}",
                           "source_text": f"We went to the beach, trip {j}!"} for j in range(3)]}
            for i in range(n)]


def vowel_reward(completions, **_):
    from training.rewards.answer import completion_text

    return [sum(ch in "aeiou" for ch in completion_text(c)) / (1 + len(completion_text(c))) for c in completions]


@pytest.fixture
def saved_lora(tmp_path):
    """A random-init LoRA on the tiny model (B non-zero), saved as `train sft` saves one."""
    pytest.importorskip("peft")
    from peft import LoraConfig, get_peft_model

    from training.models import tiny_llama

    model, _ = tiny_llama(layers=2, hidden=64, seed=0)
    peft_model = get_peft_model(model, LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"],
                                                  init_lora_weights=False, task_type="CAUSAL_LM"))
    folder = tmp_path / "sft" / "best"
    peft_model.save_pretrained(str(folder), save_embedding_layers=False)
    (folder / "meta.json").write_text(json.dumps(good_meta()), encoding="utf-8")
    return folder


@pytest.mark.slow
def test_grpo_starts_from_the_saved_adapter_and_records_it(saved_lora, tmp_path):
    pytest.importorskip("trl")
    import torch
    from safetensors.torch import load_file

    from training.config import TrainConfig
    from training.grpo.answer import train_answer_agent
    from training.models import tiny_llama

    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    config = TrainConfig(num_generations=2, prompts_per_step=1, max_steps=1, max_completion_length=6,
                         max_prompt_length=400, eval_every=0, learning_rate=1e-2, threads=1, seed=3)
    out = tmp_path / "run"
    result = train_answer_agent(config, _examples(2), [], out_dir=out, model=model, tokenizer=tok,
                                base_meta=dict(TINY_BASE), reward_funcs=[vowel_reward], progress=False,
                                init_adapter=saved_lora)
    assert result.steps == 1
    saved = load_file(str(saved_lora / "adapter_model.safetensors"))
    key = next(k for k in saved if "lora_B" in k)
    live = key.replace(".lora_B.weight", ".lora_B.default.weight")
    assert torch.equal(result.lora_before[live], saved[key])  # step 0 = the saved warm start
    assert not torch.equal(saved[key], torch.zeros_like(saved[key]))
    assert set(result.lora_before) == {k.replace(".weight", ".default.weight") for k in saved}  # no second LoRA
    summary = json.loads((out / "summary.json").read_text(encoding="utf-8"))
    assert summary["init_adapter"]["path"] == str(saved_lora.resolve())
    assert len(summary["init_adapter"]["sha256"]) == 64
    assert summary["signal"]["steps"] == 1 and summary["signal"]["frac_reward_zero_std_mean"] is not None
    assert summary["reward"]["functions"] == ["vowel_reward"]
    assert summary["answer_prompt"]["train"] == "sources" and summary["prompt_version"] == prompts.PROMPT_VERSION
    final_meta = json.loads((out / "final" / "memory_r1_train.json").read_text(encoding="utf-8"))
    assert final_meta["init_adapter"]["sha256"] == summary["init_adapter"]["sha256"]
    assert (out / "curve.png").is_file()
    # the KL reference is the warm start: TRL's frozen "ref" copy, neither trained nor saved
    assert "ref" in result.model.peft_config and not (out / "final" / "ref").exists()
    print(f"seconds per GRPO step (tiny model, 1 thread): {summary['seconds_per_step']}")


@pytest.mark.slow
def test_a_mismatched_warm_start_is_refused_before_training(saved_lora, tmp_path):
    pytest.importorskip("trl")
    from training.config import TrainConfig
    from training.grpo.answer import train_answer_agent
    from training.models import tiny_llama

    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    config = TrainConfig(num_generations=2, prompts_per_step=1, max_steps=1, threads=1)
    with pytest.raises(InvalidInputError, match="base tiny is not this run's other"):
        train_answer_agent(config, _examples(1), [], out_dir=tmp_path / "r", model=model, tokenizer=tok,
                           base_meta={"kind": "test", "path": "other"}, init_adapter=saved_lora,
                           progress=False)
    (saved_lora / "meta.json").write_text(json.dumps(good_meta(role="manager")), encoding="utf-8")
    with pytest.raises(InvalidInputError, match="a manager adapter cannot start"):
        train_answer_agent(config, _examples(1), [], out_dir=tmp_path / "r", model=model, tokenizer=tok,
                           base_meta=dict(TINY_BASE), init_adapter=saved_lora, progress=False)
    assert not (tmp_path / "r" / "final").exists()

"""Memory Manager training: states, the reward, the GRPO trainer, the CLI and the
staged chain. Logic tests use the scripted FakeBackend and the HashEmbedder over real SQLite +
sqlite-vec banks; one reward test runs the real embedded SmolLM2 answerer through llama.cpp;
the trainer and the staged smoke run TRL for real on a tiny random-weight LLaMA."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from core.agents import prompts
from core.fakes import FakeBackend
from core.locomo import parse_sample

TIME = "1:00 pm on 1 May, 2023"
CONV = [  # (speaker, text, facts the fake extractor returns)
    ("Ann", "I adopted a dog named Rex.", ["Ann adopted a dog named Rex."]),
    ("Bob", "Nice! I live in Oslo.", ["Bob lives in Oslo."]),
    ("Ann", "Rex loves the beach.", ["Ann's dog Rex loves the beach."]),
    ("Bob", "Cool.", []),
    ("Ann", "Rex also loves swimming.", ["Ann's dog Rex loves swimming."]),
]
QA = [
    {"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4},
    {"question": "What does Rex love?", "answer": "the beach", "evidence": ["D1:3; D1:5"], "category": 1},
    {"question": "Adversarial?", "answer": "x", "evidence": ["D1:4"], "category": 5},
]


def sample_raw(conv=CONV, qa=QA) -> dict:
    return {"sample_id": "t-1", "qa": qa, "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": TIME,
        "session_1": [{"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t, _) in enumerate(conv)]}}


def manager_script(messages, schema):
    """The fake manager: facts from CONV for extraction; NONE for shown, ADD for new facts."""
    system, user = messages[0]["content"], messages[-1]["content"]
    if system == prompts.FACT_EXTRACTION_SYSTEM:
        text = re.search(r"Message: (.*)", user).group(1).strip()
        return json.dumps({"facts": next(f for _, t, f in CONV if t == text)})
    shown = json.loads(re.search(r"Existing memories:\n(.*)\n", user).group(1))
    facts = json.loads(re.search(r"New facts:\n(.*)", user).group(1))
    items = [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in shown]
    items += [{"id": str(len(shown) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]
    return json.dumps({"memory": items})


@pytest.fixture
def states(tmp_path, hash_embedder):
    from training.data.manager import build_states

    backend = FakeBackend(default=manager_script)
    made, report = build_states(parse_sample(sample_raw()), tmp_path / "states", hash_embedder, lambda: backend)
    return {s.dia_id: s for s in made}, report, backend


def answer_script(messages, schema):
    """The fake answerer: right only when the needed memory is in its prompt."""
    user = messages[-1]["content"]
    if "Where does Bob live" in user:
        return "**Answer:** Oslo" if "Oslo" in user else "**Answer:** unknown"
    return "**Answer:** the beach" if "beach" in user else "**Answer:** no idea"


@pytest.fixture
def answerer(hash_embedder):
    from training.rewards.manager import FrozenAnswerer

    # the paper's prompt (memories only): these tests are about what the decision puts in the
    # bank; with the app's prompt (sources, the default) a memory the decision links to the turn
    # (a NONE naming it: "repeated") may carry the turn's quote (tests/training/grpo/test_warm_start.py)
    return FrozenAnswerer(FakeBackend(default=answer_script), hash_embedder, k=60, max_tokens=64, sources=False)


def decision(*items) -> str:
    return json.dumps({"memory": [dict(zip(("id", "text", "event"), it)) for it in items]})


# --------------------------------------------------------------------------- states


def test_evidence_ids_are_read_leniently_and_only_scored_categories_link():
    from training.data.manager import evidence_map

    ev = evidence_map(parse_sample(sample_raw()))
    assert sorted(ev) == ["D1:2", "D1:3", "D1:5"]  # D1:4 only backs a category-5 question
    assert [q.question for q in ev["D1:5"]] == ["What does Rex love?"]


def test_states_snapshot_the_preceding_turns_and_carry_the_apps_exact_prompt(states):
    by_dia, report, backend = states
    assert set(by_dia) == {"D1:2", "D1:3", "D1:5"} and report.turns == 5 and report.states == 3
    s2, s3, s5 = by_dia["D1:2"], by_dia["D1:3"], by_dia["D1:5"]
    assert [m["text"] for m in s2.snapshot] == ["Ann adopted a dog named Rex."]
    assert s2.kind == "no-related"  # nothing of Bob's to show: the app ADDs without a call
    assert s3.kind == "decision" and s3.speaker == "Ann" and s3.time == TIME
    assert [m["text"] for m in s3.snapshot] == ["Ann adopted a dog named Rex.", "Bob lives in Oslo."]
    assert [m.text for m in s3.shown_memories()] == ["Ann adopted a dog named Rex."]
    assert s3.decision_facts == ["Ann's dog Rex loves the beach."]
    assert s3.questions == [{"question": "What does Rex love?", "answer": "the beach", "category": 1,
                             "qa_index": 1}]
    decide_calls = [c["messages"] for c in backend.calls if c["messages"][0]["content"] == prompts.MANAGER_SYSTEM]
    assert s3.prompt in decide_calls  # the very messages the app sent
    # what the (fake) current manager applied there: NONE for the shown memory, ADD of the fact
    assert s3.app_ops == {"ADD": 1, "UPDATE": 0, "DELETE": 0, "NOOP": 1}
    assert json.loads(s3.app_decision) == {"memory": [{"id": "1", "text": s3.decision_facts[0], "event": "ADD"}]}
    assert s2.app_ops["ADD"] == 1 and s2.app_decision is not None  # ADDed without a decision call
    assert len(s5.snapshot) == 3 and s5.kind == "decision"
    # one generation per model call: the state builder's extraction was replayed to the app
    assert len(backend.calls) == 5 + 2  # five extractions, two decisions (D1:3, D1:5)
    vecs = s5.snapshot_vectors()
    assert vecs.shape == (3, 384) and abs(float((vecs[0] ** 2).sum()) - 1.0) < 1e-5


def test_states_are_cached_and_resumed_without_the_model(tmp_path, hash_embedder, states):
    from training.data.manager import build_states, load_states

    sample = parse_sample(sample_raw())
    folder = tmp_path / "again"
    fresh = lambda: FakeBackend(default=manager_script)  # noqa: E731  (the builder closes what it gets)
    first, _ = build_states(sample, folder, hash_embedder, fresh, max_states=2)
    assert [s.dia_id for s in first] == ["D1:2", "D1:3"]  # the pass stopped at the second state
    # cut the last progress line: the turn is redone on resume, its state not duplicated
    prog = folder / "progress.jsonl"
    prog.write_text("".join(prog.read_text().splitlines(keepends=True)[:-1]))
    again, _ = build_states(sample, folder, hash_embedder, fresh, max_states=2)
    assert [s.id for s in again] == ["t-1/D1:2", "t-1/D1:3"]
    cached, _ = build_states(sample, folder, hash_embedder, lambda: pytest.fail("model loaded"), max_states=2)
    assert [s.to_json() for s in cached] == [s.to_json() for s in load_states(folder)]
    assert cached[1].snapshot_vectors().shape == (2, 384)


# --------------------------------------------------------------------------- reward


def test_reward_invalid_json_is_zero_without_answering(states, answerer):
    from training.rewards.manager import manager_reward

    s3 = states[0]["D1:3"]
    for bad in ("not json", '{"memory": "x"}', '{"facts": []}', ""):
        assert manager_reward(bad, s3, answerer) == 0.0
    assert answerer.stats["generations"] == 0 and answerer.stats["invalid"] == 4


def test_reward_invented_or_unknown_ids_are_zero(states, answerer):
    from training.rewards.manager import manager_reward

    s3 = states[0]["D1:3"]  # one shown memory (alias "0"), one new fact (id "1")
    fact = s3.decision_facts[0]
    assert manager_reward(decision(("7", "Rex is a cat.", "UPDATE")), s3, answerer) == 0.0
    assert manager_reward(decision(("1", fact, "DELETE")), s3, answerer) == 0.0  # a fact id, not a memory
    assert manager_reward(decision(("x", fact, "NONE")), s3, answerer) == 0.0
    assert manager_reward(decision(("2", fact, "FORGET")), s3, answerer) == 0.0
    assert answerer.stats["generations"] == 0


def test_reward_is_one_when_a_valid_add_makes_the_answer_right(states, answerer):
    from training.rewards.manager import manager_reward

    s3 = states[0]["D1:3"]
    fact = s3.decision_facts[0]
    snapshot_before = json.dumps(s3.to_json())
    assert manager_reward(decision(("0", "Ann adopted a dog named Rex.", "NONE"), ("1", fact, "ADD")),
                          s3, answerer) == 1.0
    assert manager_reward(decision(("0", "Ann adopted a dog named Rex.", "NONE"), ("1", fact, "NONE")),
                          s3, answerer) == 0.0
    # an UPDATE that merges the fact into the shown memory works too; a DELETE loses the dog
    merged = "Ann adopted a dog named Rex, who loves the beach."
    assert manager_reward(decision(("0", merged, "UPDATE")), s3, answerer) == 1.0
    assert manager_reward(decision(("0", "", "DELETE")), s3, answerer) == 0.0
    assert json.dumps(s3.to_json()) == snapshot_before  # the state's snapshot is never touched
    # the answer prompt held the snapshot + the op (30 per speaker): Bob's memory too
    prompt = answerer.backend.calls[0]["messages"][-1]["content"]
    assert "Memories for Ann:" in prompt and "Bob lives in Oslo." in prompt and fact in prompt


def test_reward_is_the_mean_over_linked_questions_and_caches(states, answerer, hash_embedder):
    import dataclasses

    from training.rewards.manager import FrozenAnswerer, manager_reward

    s3 = states[0]["D1:3"]
    two = dataclasses.replace(s3, questions=s3.questions + [{"question": "Where does Bob live?",
                                                             "answer": "Oslo", "category": 4, "qa_index": 0}])
    two.vector_table = s3.vector_table
    add = decision(("1", s3.decision_facts[0], "ADD"))
    assert manager_reward(decision(("1", s3.decision_facts[0], "NONE")), two, answerer) == 0.5
    assert manager_reward(add, two, answerer) == 1.0
    calls = len(answerer.backend.calls)
    # the same ops written differently: served from the cache, no generation
    assert manager_reward(add.replace(", ", ",   "), two, answerer) == 1.0
    assert len(answerer.backend.calls) == calls and answerer.stats["result_cache_hits"] == 1
    # F1 weight adds the answerer's token F1 (paper: EM only)
    f1 = FrozenAnswerer(FakeBackend(default="**Answer:** at the beach"), hash_embedder, f1_weight=1.0)
    assert manager_reward(add, s3, f1) == pytest.approx(0.0 + 0.8)  # EM 0, F1 {at,the,beach} vs {the,beach}


def test_trl_reward_function_reads_the_state_id_column(states, answerer):
    from training.rewards.manager import ManagerRewardFunc

    s3 = states[0]["D1:3"]
    func = ManagerRewardFunc([s3], answerer)
    metrics = {}
    out = func(prompts=[s3.prompt] * 3,
               completions=[[{"role": "assistant", "content": decision(("1", s3.decision_facts[0], "ADD"))}],
                            "garbage", decision(("0", "x", "DELETE"))],
               state_id=[s3.id] * 3, log_metric=lambda k, v: metrics.__setitem__(k, v))
    assert out == [1.0, 0.0, 0.0]
    assert metrics["manager/valid"] == pytest.approx(2 / 3) and metrics["manager/ADD"] == pytest.approx(1 / 3)
    assert func.__name__ == "manager_em"


def test_lenient_reward_scores_the_complete_valid_items_of_a_broken_output(states, hash_embedder):
    from training.rewards.manager import FrozenAnswerer, InvalidCompletion, salvage_completion

    s3 = states[0]["D1:3"]  # one shown memory (alias "0"), one new fact (id "1")
    fact = s3.decision_facts[0]
    strict = FrozenAnswerer(FakeBackend(default=answer_script), hash_embedder, sources=False)
    lenient = FrozenAnswerer(FakeBackend(default=answer_script), hash_embedder, lenient=True, sources=False)
    add = json.dumps({"id": "1", "text": fact, "event": "ADD"})
    cut_off = '{"memory": [' + add + ', {"id": "0", "text": "Ann adopted a dog named Rex. She loves'
    bad_neighbour = "{'memory': [" + add + ', {"id": "5", "text": "x", "event": "DELETE"}]}'
    for broken in (cut_off, bad_neighbour):
        assert strict.score(broken, s3).reward == 0.0
        d = lenient.score(broken, s3)
        assert d.valid and d.reward == 1.0 and d.ops["ADD"] == 1 and d.ops["DELETE"] == 0
    assert json.loads(salvage_completion(bad_neighbour, s3)) == {"memory": [json.loads(add)]}
    # nothing complete and valid: still 0, without answering
    calls = len(lenient.backend.calls)
    for junk in ("not json", '{"memory": [{"id": "7", "text": "x", "event": "UPDATE"}', '{"memory": [{"id": "1"'):
        assert lenient.score(junk, s3).reward == 0.0
        with pytest.raises(InvalidCompletion):
            salvage_completion(junk, s3)
    assert len(lenient.backend.calls) == calls
    # a well-formed output scores the same either way (a NONE for the fact loses the answer)
    keep_none = decision(("0", "Ann adopted a dog named Rex.", "NONE"), ("1", fact, "NONE"))
    assert lenient.score(keep_none, s3).reward == strict.score(keep_none, s3).reward == 0.0


@pytest.mark.slow
def test_reward_with_the_real_embedded_answerer(states, hash_embedder):
    from training.rewards.manager import FrozenAnswerer

    s3 = states[0]["D1:3"]
    answerer = FrozenAnswerer.load(embedder=hash_embedder, threads=2, n_ctx=2048, max_tokens=48)
    try:
        add = decision(("1", s3.decision_facts[0], "ADD"))
        d1 = answerer.score(add, s3)
        assert d1.valid and d1.reward in (0.0, 1.0) and d1.answers and d1.ops["ADD"] == 1
        assert answerer.stats["generations"] == 1
        d2 = answerer.score(add, s3)  # deterministic and cached
        assert d2.cached and d2.answers == d1.answers and answerer.stats["generations"] == 1
        assert answerer.score("{oops", s3).reward == 0.0 and answerer.stats["generations"] == 1
    finally:
        answerer.close()


# --------------------------------------------------------------------------- trainer


def vowel_reward(completions, **_):
    """A reward with spread on random text (the manager reward is always 0 for a random model)."""
    from training.rewards.answer import completion_text

    return [sum(ch in "aeiou" for ch in completion_text(c)) / (1 + len(completion_text(c))) for c in completions]


@pytest.mark.slow
def test_grpo_trains_the_manager_lora_on_the_app_prompt(states, answerer, tmp_path):
    pytest.importorskip("trl")
    import csv

    import torch

    from training.grpo.manager import ManagerTrainConfig, select_states, train_manager
    from training.models import tiny_llama

    by_dia = states[0]
    assert [s.dia_id for s in select_states(list(by_dia.values()))] == ["D1:3", "D1:5"]
    assert len(select_states(list(by_dia.values()), "with-facts")) == 3  # + D1:2 (nothing to show)
    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    base_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = ManagerTrainConfig(num_generations=4, prompts_per_step=2, max_steps=2, max_completion_length=12,
                                max_prompt_length=1500, eval_every=1, eval_max_new_tokens=8, learning_rate=5e-3,
                                lora_r=4, lora_alpha=8, threads=1, seed=3)
    out = tmp_path / "run"
    result = train_manager(config, list(by_dia.values()), [by_dia["D1:3"]], out_dir=out, answerer=answerer,
                           model=model, tokenizer=tok, base_meta={"kind": "test", "path": "tiny"},
                           extra_reward_funcs=[vowel_reward], progress=False)
    assert result.steps == 2
    trained = dict(result.model.named_parameters())
    changed = [k for k in result.lora_before if "lora_B" in k
               and not torch.equal(result.lora_before[k], trained[k].detach().float().cpu())]
    assert changed, "no LoRA B matrix moved"
    base_after = {k.replace(".base_layer", ""): v for k, v in result.model.get_base_model().state_dict().items()
                  if "lora_" not in k}
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    # every sampled completion was scored by the manager reward (random text: invalid, 0)
    assert answerer.stats["samples"] >= 2 * 2 * 4 and answerer.stats["invalid"] >= 1
    rows = list(csv.DictReader(open(out / "log.csv", encoding="utf-8")))
    assert [int(r["step"]) for r in rows if r["reward"]] == [1, 2]
    assert {int(r["step"]) for r in rows if r["val_f1"]} == {0, 1, 2}
    records = json.loads((out / "log.json").read_text())
    assert any("rewards/manager_em/mean" in r for r in records)
    assert any("manager/valid" in r for r in records) and any("val_valid" in r for r in records)
    for sub in ("best", "final"):
        assert (out / sub / "adapter_model.safetensors").is_file()
        meta = json.loads((out / sub / "memory_r1_train.json").read_text())
        assert meta["role"] == "manager" and meta["train_states"] == 2 and meta["val_states"] == 1
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["baseline"]["n"] == 1 and "samples" in summary["reward_stats"]
    assert summary["signal"]["steps"] == 2 and summary["reward"]["functions"] == ["manager_em", "vowel_reward"]
    assert summary["prompt_version"] == prompts.PROMPT_VERSION and "init_adapter" not in summary


@pytest.mark.slow
def test_manager_grpo_starts_from_a_manager_adapter_and_refuses_an_answer_one(states, answerer, tmp_path):
    pytest.importorskip("trl")
    import torch
    from peft import LoraConfig, get_peft_model
    from safetensors.torch import load_file

    from core.errors import InvalidInputError
    from training.grpo.manager import ManagerTrainConfig, train_manager
    from training.models import tiny_llama

    lora = get_peft_model(tiny_llama(layers=2, hidden=64, seed=0)[0],
                          LoraConfig(r=2, lora_alpha=4, target_modules=["q_proj"], init_lora_weights=False,
                                     task_type="CAUSAL_LM"))
    folder = tmp_path / "sft"
    lora.save_pretrained(str(folder), save_embedding_layers=False)
    base = {"kind": "test", "path": "tiny"}
    meta = {"role": "manager", "prompt_version": prompts.PROMPT_VERSION, "base": base}
    (folder / "meta.json").write_text(json.dumps(meta), encoding="utf-8")
    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    config = ManagerTrainConfig(num_generations=2, prompts_per_step=1, max_steps=1, max_completion_length=8,
                                max_prompt_length=1500, eval_every=0, threads=1, seed=3)
    result = train_manager(config, list(states[0].values()), [], out_dir=tmp_path / "run", answerer=answerer,
                           model=model, tokenizer=tok, base_meta=base, extra_reward_funcs=[vowel_reward],
                           progress=False, init_adapter=folder)
    saved = load_file(str(folder / "adapter_model.safetensors"))
    key = next(k for k in saved if "lora_B" in k)
    assert torch.equal(result.lora_before[key.replace(".weight", ".default.weight")], saved[key])
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["init_adapter"]["role"] == "manager" and summary["signal"]["steps"] == 1
    (folder / "meta.json").write_text(json.dumps(dict(meta, role="answer")), encoding="utf-8")
    with pytest.raises(InvalidInputError, match="an answer adapter cannot start `train manager`"):
        train_manager(config, list(states[0].values()), [], out_dir=tmp_path / "r2", answerer=answerer,
                      model=tiny_llama(layers=2, hidden=64, seed=0)[0], tokenizer=tok, base_meta=base,
                      init_adapter=folder, progress=False)


class _FakeModel:
    """Stands in for the PEFT model where only the loop's bookkeeping runs."""

    def named_parameters(self):
        return iter(())

    def save_pretrained(self, path, **_):
        Path(path).mkdir(parents=True, exist_ok=True)


class _FakeAccelerator:
    is_main_process = True

    def wait_for_everyone(self):
        pass

    def unwrap_model(self, model):
        return model


def test_manager_time_budget_does_not_count_validation(states, answerer, tmp_path, monkeypatch):
    """--time-budget counts training time only, for the manager as for the answer trainer: a
    validation of 2 minutes (fake clock) between 20-second steps must not stop a 60 s budget."""
    from types import SimpleNamespace

    from training.grpo import manager as mgr
    from training.grpo.loop import make_callback

    now = [0.0]

    def slow_validation(*_, **__):
        now[0] += 120.0
        return {"f1": 0.0, "bleu1": 0.0, "em": 0.0, "valid": 1.0, "ops": {}, "completion_length": 1.0,
                "n": 1, "samples": []}

    monkeypatch.setattr(mgr, "validate_manager", slow_validation)
    s3 = states[0]["D1:3"]
    run = mgr.ManagerRun(mgr.ManagerTrainConfig(eval_every=1, threads=1), tmp_path,
                         [{"prompt": s3.prompt, "state_id": s3.id}], None, {}, time_budget_s=60.0,
                         states={s3.id: s3}, answerer=answerer, clock=lambda: now[0])
    run.trainer = SimpleNamespace(accelerator=_FakeAccelerator(), model=_FakeModel())
    callback = make_callback(run)
    control = SimpleNamespace(should_training_stop=False)
    callback.on_train_begin(None, SimpleNamespace(global_step=0, max_steps=4), control)  # validates
    for step in (1, 2):  # each step validates too (eval_every=1)
        now[0] += 20.0
        callback.on_step_end(None, SimpleNamespace(global_step=step, max_steps=4), control)
        assert not control.should_training_stop, f"stopped at step {step}: validation time counted"
    assert run.eval_seconds == 360.0 and run.training_seconds() == 40.0
    now[0] += 30.0  # step 3: 70 s of training, over the budget
    callback.on_step_end(None, SimpleNamespace(global_step=3, max_steps=4), control)
    assert control.should_training_stop
    assert [r["step"] for r in run.records] == [0, 1, 2, 3] and "val_valid" in run.records[0]


def test_manager_config_extends_the_answer_config(tmp_path):
    from core.errors import InvalidInputError
    from training.grpo.manager import ManagerTrainConfig, config_from

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"num_generations": 4, "answer_max_tokens": 64, "states": "with-facts",
                             "lenient_parse": True}))
    c = config_from(str(p), max_steps=3, threads=None)
    assert (c.num_generations, c.answer_max_tokens, c.states, c.max_steps, c.beta) == (4, 64, "with-facts", 3, 0.001)
    assert c.lenient_parse and not ManagerTrainConfig().lenient_parse  # the paper's strict 0 by default
    # the CPU run's settings stay loadable
    shipped = config_from(str(Path(__file__).resolve().parents[3] / "training/configs/manager_cpu.json"))
    assert shipped.lenient_parse and shipped.reward_f1_weight == 1.0
    assert ManagerTrainConfig().retrieve_k == 60  # the answerer's 30 per speaker
    for bad in ({"states": "all"}, {"answer_max_tokens": 0}, {"nope": 1}):
        p.write_text(json.dumps(bad))
        with pytest.raises(InvalidInputError):
            config_from(str(p))


# --------------------------------------------------------------------------- CLI


def test_cli_registers_train_manager_without_heavy_imports():
    import argparse
    import subprocess
    import sys

    from app.cli.train_manager_cmd import register_manager

    parser = argparse.ArgumentParser()
    register_manager(parser.add_subparsers(dest="train_command"))
    args = parser.parse_args(["manager", "--data", "train.json", "--out", "o", "--answer-adapter", "a.gguf",
                              "--max-steps", "3", "--config", "c.json"])
    assert (args.data, args.base, args.answer_adapter, args.max_steps, args.config) == \
        ("train.json", "embedded", "a.gguf", 3, "c.json")
    assert args.func.__name__ == "run_train_manager"
    with pytest.raises(SystemExit):
        parser.parse_args(["manager", "--data", "x", "--out", "o", "--max-steps", "0"])
    code = ("import sys, argparse; from app.cli.train_manager_cmd import register_manager;"
            "register_manager(argparse.ArgumentParser().add_subparsers());"
            "bad=[m for m in ('torch','trl','peft','llama_cpp','training') if m in sys.modules]; print(bad);"
            "sys.exit(1 if bad else 0)")
    from pathlib import Path

    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


def test_cli_manager_states_prints_the_op_distribution(tmp_path, hash_embedder, monkeypatch, capsys):
    import argparse

    from app.cli.train_manager_cmd import register_manager
    from training.data import manager as manager_data
    data = tmp_path / "conv.json"
    data.write_text(json.dumps([sample_raw()]))
    real = manager_data.states_from

    def fake_states_from(path, **kw):  # the CLI's own arguments, with the fakes in place of the models
        kw.pop("manager_model")
        return real(path, embedder=hash_embedder, backend_factory=lambda: FakeBackend(default=manager_script),
                    manager_id="fake", **kw)

    monkeypatch.setattr(manager_data, "states_from", fake_states_from)
    parser = argparse.ArgumentParser()
    register_manager(parser.add_subparsers())
    args = parser.parse_args(["manager-states", "--data", str(data), "--out", str(tmp_path / "st"), "--no-progress"])
    assert args.func(args) == 0
    out = capsys.readouterr().out
    assert "3 states from 5 turns" in out and '"decision": 2' in out
    assert '"ADD": 2' in out  # the two decision states each ADDed their fact


# --------------------------------------------------------------------------- staged chain


@pytest.mark.slow
def test_staged_chain_smoke_runs_end_to_end(tmp_path):
    pytest.importorskip("trl")
    from core.fakes import HashEmbedder
    from core.llm.runtime import LlamaBackend
    from training.runs.staged import SmokeStandIns, run_staged, scripted_manager

    out = tmp_path / "staged"
    stand_ins = SmokeStandIns(HashEmbedder(), lambda: FakeBackend(default=scripted_manager))
    record = run_staged(["--smoke", "--out", str(out), "--no-progress"], stand_ins=stand_ins)
    assert record["states"]["train_states"] == 4 and record["states"]["val_states"] == 4
    assert record["states"]["ops_before"]["kinds"] == {"no-related": 2, "decision": 2}
    assert record["manager"]["steps"] == 1 and record["answer"]["steps"] == 1
    assert record["answer"]["train_examples"] == 4  # banks built by the trained manager, one example per question
    for name in ("manager-lora.gguf", "answer-lora.gguf"):
        assert (out / name).stat().st_size > 1000
        with LlamaBackend(path=out / "tiny-f32.gguf", adapter=out / name, n_ctx=256, n_threads=1) as b:
            assert isinstance(b.count_tokens("hello"), int)
    assert json.loads((out / "staged.json").read_text())["finished"]
    assert len(record["eval_commands"]) == 4 and "--manager-adapter" in record["eval_commands"][3]


def test_reward_applies_the_facts_the_app_adds_without_a_call(states, answerer):
    import dataclasses

    from training.rewards.manager import manager_reward

    s3 = states[0]["D1:3"]
    none = decision(("0", "Ann adopted a dog named Rex.", "NONE"), ("1", s3.decision_facts[0], "NONE"))
    assert manager_reward(none, s3, answerer) == 0.0
    # the same decision at a state where the app also ADDs an unrelated fact about the beach
    auto = dataclasses.replace(s3, id=s3.id + "+auto", auto_added=["Ann goes to the beach with Rex."])
    assert manager_reward(none, auto, answerer) == 1.0
    from training.data.manager import ManagerState

    assert ManagerState.from_json(auto.to_json()).auto_added == ["Ann goes to the beach with Rex."]


def test_greedy_decisions_are_the_apps_constrained_calls_on_bank_copies(states, hash_embedder):
    from training.rewards.manager import greedy_decisions

    by_dia = states[0]
    decision_states = [s for s in by_dia.values() if s.kind == "decision"]
    before = [json.dumps(s.to_json()) for s in decision_states]
    backend = FakeBackend(default=manager_script)
    d = greedy_decisions(decision_states, backend, hash_embedder)
    # the fake manager (NONE for shown memories, ADD for new facts) at D1:3 and D1:5
    assert d["states"] == 2 and d["facts"] == 2 and d["failed"] == 0
    assert d["ops"]["ADD"] == 2 and d["ops"]["UPDATE"] == d["ops"]["DELETE"] == 0
    assert all(c["schema"] is not None for c in backend.calls)  # grammar-constrained, as in the app
    assert [json.dumps(s.to_json()) for s in decision_states] == before  # the states are never touched
    broken = greedy_decisions(decision_states[:1], FakeBackend(default="not json"), hash_embedder)
    assert broken["failed"] == 1 and broken["rows"][0]["error"]

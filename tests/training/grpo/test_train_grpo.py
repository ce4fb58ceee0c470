"""GRPO + LoRA training of the Answer Agent, for real: TRL's GRPOTrainer on a tiny random-weight
LLaMA (2 layers, hidden 64) that uses the REAL SmolLM2 tokenizer read from the embedded GGUF."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("trl")
pytest.importorskip("peft")

pytestmark = pytest.mark.slow


def _examples(n: int, n_memories: int = 6) -> list[dict]:
    return [{
        "question": f"Where did Ann go on trip {i}?", "answer": "the beach" if i % 2 else 2022,
        "category": 4, "speakers": ["Ann", "Bob"],
        "memories": [{"text": f"Ann went to the beach on trip {j}.", "speaker": "Ann" if j % 2 else "Bob",
                      "observed_at": f"{j + 1} May, 2023"} for j in range(n_memories)],
    } for i in range(n)]


def vowel_reward(completions, **_):
    """A reward with spread on random text (EM is always 0 for a random model)."""
    from training.rewards.answer import completion_text

    out = []
    for c in completions:
        text = completion_text(c)
        out.append(sum(ch in "aeiou" for ch in text) / (1 + len(text)))
    return out


@pytest.fixture(scope="module")
def tiny():
    from training.models import tiny_llama

    return tiny_llama(layers=2, hidden=64, seed=0)


def test_fit_prompt_uses_the_app_prompt_and_drops_lowest_ranked_memories(tiny):
    from core.agents.prompts import ANSWER_SYSTEM
    from training.grpo.answer import fit_prompt
    from training.grpo.loop import prompt_tokens

    _, tok = tiny
    ex = _examples(1, n_memories=40)[0]
    full, kept_all = fit_prompt(ex, tok, k=60, max_tokens=100_000)
    assert kept_all == 40 and full[0]["content"] == ANSWER_SYSTEM
    assert "Memories for Ann:" in full[1]["content"] and ex["question"] in full[1]["content"]
    budget = prompt_tokens(tok, full) - 50
    fitted, kept = fit_prompt(ex, tok, k=60, max_tokens=budget)
    assert 0 < kept < 40 and prompt_tokens(tok, fitted) <= budget
    # the kept memories are the best-ranked ones
    assert "trip 0." in fitted[1]["content"] and "trip 39." not in fitted[1]["content"]
    _, kept_k = fit_prompt(ex, tok, k=5, max_tokens=100_000)
    assert kept_k == 5


def test_two_grpo_steps_change_lora_weights_but_not_the_base(tiny, tmp_path):
    import torch

    from training.config import TrainConfig
    from training.grpo.answer import train_answer_agent
    from training.rewards.answer import em_reward

    model, tok = tiny
    base_before = {k: v.detach().clone() for k, v in model.state_dict().items()}
    config = TrainConfig(num_generations=4, prompts_per_step=2, max_steps=2, max_completion_length=12,
                         max_prompt_length=800, eval_every=1, eval_max_new_tokens=6, learning_rate=5e-3,
                         lora_r=4, lora_alpha=8, threads=1, seed=3)
    out = tmp_path / "run"
    result = train_answer_agent(config, _examples(4), _examples(2), out_dir=out, model=model, tokenizer=tok,
                                reward_funcs=[em_reward, vowel_reward], progress=False,
                                base_meta={"kind": "test", "path": "tiny"})
    assert result.steps == 2

    trained = dict(result.model.named_parameters())
    lora_names = [k for k in trained if "lora_" in k]
    assert lora_names and set(lora_names) == set(result.lora_before)
    changed = [k for k in lora_names if not torch.equal(result.lora_before[k], trained[k].detach().float().cpu())]
    assert any("lora_B" in k for k in changed), "no LoRA B matrix moved"
    # the base weights are untouched (PEFT keeps them as `base_layer`)
    base_after = {k.replace(".base_layer", ""): v for k, v in result.model.get_base_model().state_dict().items()
                  if "lora_" not in k}
    assert set(base_after) == set(base_before)
    assert all(torch.equal(base_before[k], base_after[k]) for k in base_before)
    assert all(not p.requires_grad for k, p in trained.items() if "lora_" not in k)

    # logs: one row per step with reward and completion length, validation rows, a curve
    rows = list(csv.DictReader(open(out / "log.csv", encoding="utf-8")))
    steps = [r for r in rows if r["reward"]]
    assert [int(r["step"]) for r in steps] == [1, 2]
    assert all(float(r["completion_length"]) > 0 for r in steps)
    assert {int(r["step"]) for r in rows if r["val_f1"]} == {0, 1, 2}
    records = json.loads((out / "log.json").read_text())
    assert any("rewards/em_reward/mean" in r for r in records)
    assert (out / "curve.png").stat().st_size > 1000
    for sub in ("best", "final"):
        assert (out / sub / "adapter_model.safetensors").is_file()
        meta = json.loads((out / sub / "memory_r1_train.json").read_text())
        assert meta["train_config"]["num_generations"] == 4 and meta["base"]["path"] == "tiny"
        assert "baseline" in meta["validation"]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["steps"] == 2 and summary["baseline"]["n"] == 2


def test_config_file_overrides_and_rejects_unknown_keys(tmp_path):
    from core.errors import InvalidInputError
    from training.config import TrainConfig

    p = tmp_path / "c.json"
    p.write_text(json.dumps({"num_generations": 4, "lora_targets": ["q_proj"], "threads": 1}))
    c = TrainConfig.from_file(p)
    assert c.num_generations == 4 and c.lora_targets == ("q_proj",) and c.cpu_threads() == 1
    p.write_text(json.dumps({"num_generations": 1}))
    with pytest.raises(InvalidInputError, match="at least 2"):
        TrainConfig.from_file(p)
    p.write_text("[1]")
    with pytest.raises(InvalidInputError):
        TrainConfig.from_file(p)
    with pytest.raises(InvalidInputError, match="no such file"):
        TrainConfig.from_file(tmp_path / "missing.json")

"""The SFT loop for real: the embedded SmolLM2-135M (read from its GGUF) learns a small fixed
set of short answer pairs on one CPU thread — the loss falls, the LoRA weights change, the
prompt is masked with the real tokenizer and chat template, and the run folder has what
export and the lead's reports read."""

from __future__ import annotations

import csv
import json

import pytest

pytest.importorskip("peft")
pytest.importorskip("transformers")

pytestmark = pytest.mark.slow

PAIRS = [{"id": f"p{i}", "messages": [
    {"role": "system", "content": "Answer from the memories."},
    {"role": "user",
     "content": f"Memories for Ann:\n- 8 May, 2023: Ann has a {pet}.\n\nQuestion: What pet does Ann have?"}],
    "completion": f"**Memories selected as relevant:**\n- 8 May, 2023: Ann has a {pet}.\n**Answer:** a {pet}"}
    for i, pet in enumerate(("cat", "dog", "parrot", "hamster"))]


def test_loss_falls_and_the_lora_changes_on_the_real_base(tmp_path):
    from core.agents.prompts import ANSWER_SOURCES_VERSION, PROMPT_VERSION
    from training.sft.loop import SFTConfig, encode_pair, lora_state, train_sft

    config = SFTConfig(epochs=3, batch_size=2, grad_accum=1, learning_rate=1e-3, eval_every=2, patience=0,
                       threads=1, seed=0, max_completion_tokens=64)
    out = tmp_path / "sft"
    res = train_sft(config, PAIRS, out, val_pairs=PAIRS, data_notes={"balance": {"empty_kept": 0}})
    assert res["steps"] == 6 and res["examples_seen"] == 12 and res["stop"] == "done"
    base, best = res["validation"]["baseline"], res["validation"]["best"]
    assert best["val_loss"] < 0.7 * base["val_loss"], (base, best)  # the fixed set is learnt
    assert res["last_loss"] < res["first_loss"]
    after = lora_state(res["model"])
    changed = [k for k in after if "lora_B" in k and float((after[k] - res["lora_before"][k]).abs().max()) > 0]
    assert len(changed) == len([k for k in after if "lora_B" in k]) > 0  # every B moved off zero
    # the prompt as the app renders it for inference; the target ends the assistant turn
    tokenizer = res["tokenizer"]
    enc, _ = encode_pair(tokenizer, PAIRS[0], config)
    prompt = tokenizer.apply_chat_template(PAIRS[0]["messages"], add_generation_prompt=True, tokenize=False)
    assert tokenizer.decode(enc.ids[:enc.prompt_len]) == prompt
    assert set(enc.labels[:enc.prompt_len]) == {-100}
    assert tokenizer.decode(enc.labels[enc.prompt_len:]) == PAIRS[0]["completion"] + tokenizer.eos_token
    # the run folder
    for folder in ("best", "final"):
        meta = json.loads((out / folder / "memory_r1_train.json").read_text())
        assert (meta["role"], meta["prompt_version"], meta["answer_sources_version"]) == \
            ("answer", PROMPT_VERSION, ANSWER_SOURCES_VERSION)
        assert meta["base"]["sha256"] and meta["data"]["train_digest"]
        assert meta["data"]["built"] == {"balance": {"empty_kept": 0}}  # how the pairs were built
        assert (out / folder / "adapter_config.json").is_file()
    rows = list(csv.DictReader((out / "log.csv").open()))
    assert [r["step"] for r in rows if r["loss"]] == ["1", "2", "3", "4", "5", "6"]
    assert [r["step"] for r in rows if r["val_loss"]] == ["0", "2", "4", "6"]
    summary = json.loads((out / "summary.json").read_text())
    assert set(summary["seconds"]) == {"load", "tokenise", "train", "validation", "save", "total"}
    assert summary["seconds_per_example"] > 0 and summary["data"]["train"]["used"] == 4
    assert summary["data"]["built"] == {"balance": {"empty_kept": 0}}

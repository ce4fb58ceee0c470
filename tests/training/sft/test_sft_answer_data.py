"""The Answer Agent's SFT pairs: the prompt is byte for byte what the `memory-r1` evaluation
sends (the same cached bank, question and retrieval, source quotes on), the target is the
evidence turns' memories as the selection then the gold answer, and the SFT loop masks the
prompt out of the loss. Real SQLite + sqlite-vec banks; the manager is scripted (FakeBackend)."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError
from core.fakes import FakeBackend, HashEmbedder
from tests.training.locomo_fixtures import ANSWER_SESSIONS, T1, add_every_fact, locomo_sample, write_locomo

CONV = locomo_sample("conv-t", ANSWER_SESSIONS, [
    {"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4},
    {"question": "What does Rex love?", "answer": "the beach", "evidence": ["D1:3", "D1:1"], "category": 1},
    {"question": "What did Bob start?", "answer": "a bakery", "evidence": ["D2:1"], "category": 3},
    {"question": "What is Ann's job?", "answer": "nurse", "evidence": ["D3:1"], "category": 1},
])


def _components(answer=None, manager=None):
    from training.eval.runner import Components

    def must_not_load():
        raise AssertionError("this step must not load that model")

    return Components(HashEmbedder(), answer=answer or must_not_load, manager=manager or must_not_load,
                      ids={"manager": "fake-manager-v1", "answer": "fake-answer-v1"})


@pytest.fixture
def built(tmp_path):
    from training.data.answer import build_examples

    data = write_locomo(tmp_path, CONV)
    cache = tmp_path / "cache"
    manager = FakeBackend(default=add_every_fact, name="fake-manager")
    examples = build_examples(data, k=60, cache_dir=cache, components=_components(manager=lambda: manager),
                              progress=False)
    return data, cache, examples


def test_pair_prompts_are_byte_identical_to_what_the_evaluation_sends(built, tmp_path):
    from training.data.sft_answer import answer_pairs
    from training.eval.runner import EvalConfig, run_locomo

    data, cache, examples = built
    pairs, counts = answer_pairs(examples)
    assert counts.pairs == 4 and counts.examples == 4
    answer = FakeBackend(default="**Answer:** Oslo", name="fake-answer")
    config = EvalConfig(data=str(data), out=str(tmp_path / "eval"), cache_dir=str(cache), systems=("memory-r1",),
                        progress=False)
    run_locomo(config, _components(answer=lambda: answer))  # the cached bank: no manager model
    sent = [c["messages"] for c in answer.calls]
    assert len(sent) == len(pairs)
    for pair, messages in zip(pairs, sent):
        assert json.dumps(pair["messages"], ensure_ascii=False) == json.dumps(messages, ensure_ascii=False)
    assert "(said #1:" in pairs[0]["messages"][1]["content"]  # the sources prompt, not the paper's
    # and the example's saved form round-trips to the same bytes
    from training.data.answer import load_examples, save_examples

    again, _ = answer_pairs(load_examples(save_examples(examples, tmp_path / "ex.jsonl")))
    assert [p["messages"] for p in again] == [p["messages"] for p in pairs]


def test_completion_selects_the_evidence_memories_then_the_gold_answer(built):
    from core.agents.prompts import parse_answer
    from training.data.sft_answer import answer_pairs

    _, _, examples = built
    pairs, counts = answer_pairs(examples)
    oslo = pairs[0]["completion"]
    assert oslo == ("**Memories selected as relevant:**\n"
                    f"- {T1}: Bob said: I moved to Oslo in 2022.\n"
                    "**Answer:** Oslo")
    parsed = parse_answer(oslo)
    assert parsed.answer == "Oslo" and parsed.selected_lines == [f"{T1}: Bob said: I moved to Oslo in 2022."]
    # two evidence turns: both memories, in the prompt's order (as shown to the model)
    rex = pairs[1]
    lines = parse_answer(rex["completion"]).selected_lines
    assert sorted(lines) == sorted([f"{T1}: Ann said: I adopted a dog named Rex yesterday.",
                                    f"{T1}: Ann said: Rex loves the beach."])
    content = rex["messages"][1]["content"]
    assert [content.index(line) for line in lines] == sorted(content.index(line) for line in lines)
    # every selected line is a memory line of the prompt, copied exactly
    for p in pairs:
        for line in parse_answer(p["completion"]).selected_lines:
            assert f"- {line}" in p["messages"][1]["content"]
    # no shown memory from the evidence turn (D3:1 does not exist): the empty selection, counted
    job = pairs[3]
    assert job["completion"] == "**Memories selected as relevant:**\n- none\n**Answer:** nurse"
    assert parse_answer(job["completion"]).selected_lines == [] and job["evidence_selected"] == 0
    assert (counts.with_evidence, counts.no_evidence_empty, counts.selected_lines) == (3, 1, 4)
    skipped, c2 = answer_pairs(examples, no_evidence="skip")
    assert [p["id"] for p in skipped] == [p["id"] for p in pairs[:3]] and c2.no_evidence_skipped == 1


def test_pairs_from_examples_without_the_sources_prompt_or_memories():
    from training.data.sft_answer import answer_pairs, evidence_lines

    ex = {"id": "c/0", "question": "q?", "answer": "  a  b ", "memories": [], "evidence": ["D1:2"],
          "prompt_sources": [], "shown": []}
    pairs, counts = answer_pairs([ex])
    assert pairs == [] and counts.no_memories_skipped == 1  # the app answers without the model
    shown = [{"line": "x", "source": "locomo:c/D1:2", "refs": []},
             {"line": "y", "source": None, "refs": ["locomo:c/D9:9", "locomo:c/D1:2"]},
             {"line": "z", "source": "locomo:c/D1:20", "refs": []}]
    assert evidence_lines(dict(ex, shown=shown)) == ["x", "y"]  # own source or a content link; not D1:20
    pairs, _ = answer_pairs([dict(ex, shown=shown, prompt_sources=[{"role": "user", "content": "m"}])])
    assert pairs[0]["completion"].endswith("\n**Answer:** a b")
    with pytest.raises(InvalidInputError, match="rebuild the examples"):
        answer_pairs([{"id": "old", "question": "q", "answer": "a", "memories": []}])
    with pytest.raises(InvalidInputError, match="no_evidence"):
        answer_pairs([], no_evidence="guess")


class CharTokenizer:
    """A character tokenizer with a ChatML-like template (the SmolLM2 shape), for the masking."""

    eos_token = "\x03"
    eos_token_id = 3
    pad_token_id = 0

    def apply_chat_template(self, messages, add_generation_prompt=False, tokenize=False):
        text = "".join(f"<{m['role']}>{m['content']}\x03\n" for m in messages)
        return text + ("<assistant>" if add_generation_prompt else "")

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [ord(c) for c in text]}


def test_loss_masks_the_prompt_and_keeps_the_end_of_turn():
    from training.sft.loop import SFTConfig, encode_all, encode_pair, prompt_text

    tok = CharTokenizer()
    pair = {"id": "1", "messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Q?"}],
            "completion": "**Answer:** A"}
    enc, note = encode_pair(tok, pair, SFTConfig())
    prompt = prompt_text(tok, pair["messages"])
    assert prompt == "<system>S\x03\n<user>Q?\x03\n<assistant>" and note == ""
    assert enc.prompt_len == len(prompt) and enc.labels[:enc.prompt_len] == [-100] * len(prompt)
    target = "".join(chr(i) for i in enc.labels[enc.prompt_len:])
    assert target == "**Answer:** A\x03"  # the completion then the template's end of turn, not the "\n"
    assert "".join(chr(i) for i in enc.ids) == prompt + target
    cut, note = encode_pair(tok, pair, SFTConfig(max_completion_tokens=4))
    assert note == "completion_cut" and len(cut.ids) == len(prompt) + 4
    none, note = encode_pair(tok, pair, SFTConfig(max_prompt_tokens=10))
    assert none is None and note == "prompt_too_long"
    encoded, counts = encode_all(tok, [pair, pair], SFTConfig(max_prompt_tokens=10))
    assert encoded == [] and counts["prompt_too_long"] == 2


def test_collate_pads_with_masked_labels():
    pytest.importorskip("torch")
    from training.sft.loop import Encoded, collate

    a, b = Encoded([5, 6, 7], [-100, 6, 7], 1), Encoded([8, 9], [-100, 9], 1)
    ids, mask, labels = collate([a, b], 0, "cpu")
    assert ids.tolist() == [[5, 6, 7], [8, 9, 0]] and mask.tolist() == [[1, 1, 1], [1, 1, 0]]
    assert labels.tolist() == [[-100, 6, 7], [-100, 9, -100]]


def test_sft_config_checks_its_settings(tmp_path):
    from training.sft.loop import SFTConfig

    assert SFTConfig.from_dict({"epochs": 1, "lora_targets": ["q_proj"]}).lora_targets == ("q_proj",)
    with pytest.raises(InvalidInputError, match="unknown SFT setting"):
        SFTConfig.from_dict({"epoch": 1})
    for bad in ({"role": "judge"}, {"batch_size": 0}, {"learning_rate": 0}, {"patience": -1},
                {"time_budget_s": 0}, {"lora_targets": []}):
        with pytest.raises(InvalidInputError):
            SFTConfig.from_dict(bad)
    from core.paths import repo_root

    cpu = SFTConfig.from_file(repo_root() / "training" / "configs" / "sft_cpu.json")
    assert cpu.threads == 1
    (tmp_path / "c.json").write_text("[1]")
    with pytest.raises(InvalidInputError, match="JSON object"):
        SFTConfig.from_file(tmp_path / "c.json")


def test_the_loss_scores_only_completion_positions_and_matches_full_logits():
    torch = pytest.importorskip("torch")
    pytest.importorskip("transformers")
    import torch.nn.functional as F
    from transformers import LlamaConfig, LlamaForCausalLM

    from training.sft.loop import Encoded, collate, token_loss

    torch.manual_seed(0)
    model = LlamaForCausalLM(LlamaConfig(vocab_size=64, hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                         num_attention_heads=2, num_key_value_heads=1, pad_token_id=0))
    a = Encoded(list(range(10, 30)), [-100] * 15 + list(range(25, 30)), 15)
    b = Encoded(list(range(40, 52)), [-100] * 6 + list(range(46, 52)), 6)
    loss, n = token_loss(model, [a, b], 0, "cpu")
    ids, mask, labels = collate([a, b], 0, "cpu")
    logits = model(input_ids=ids, attention_mask=mask).logits
    ref = F.cross_entropy(logits[:, :-1].reshape(-1, 64), labels[:, 1:].reshape(-1), ignore_index=-100,
                          reduction="sum")
    assert n == 5 + 6 and abs(float(loss) - float(ref)) < 1e-4  # every completion token, the first included

"""LoRA adapter -> GGUF export, for real: the exported files load in llama.cpp (through the app's
own runtime) and the adapter's effect on the logits is the same in llama.cpp as in PyTorch.

The tiny model is a random-weight LLaMA (2 layers, hidden 64) with the real SmolLM2 tokenizer,
written as an F32 GGUF by our own writer; one test uses the real embedded SmolLM2-135M."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

pytest.importorskip("peft")
pytest.importorskip("llama_cpp")

pytestmark = pytest.mark.slow

PROMPT = "<|im_start|>user\nWhere did Ann go last summer?<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(model, tokenizer, base GGUF path) of the tiny LLaMA."""
    from core.paths import embedded_gguf
    from training.export.gguf_io import write_hf_model_gguf
    from training.models import tiny_llama

    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    base = tmp_path_factory.mktemp("tiny") / "tiny-f32.gguf"
    write_hf_model_gguf(model, base, tokenizer_gguf=embedded_gguf(), dtype="f32")
    return model, tok, base


def _peft(model, r=4, alpha=8, targets=("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")):
    from peft import get_peft_model

    from training.config import TrainConfig
    from training.grpo.loop import lora_config

    config = lora_config(TrainConfig(lora_r=r, lora_alpha=alpha, lora_targets=targets))
    return get_peft_model(copy.deepcopy(model), config)


def _set_lora(pm, scale: float, seed: int = 0):
    """Large, known LoRA weights (B is zero after PEFT's init, so the adapter would be a no-op)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if "lora_" in name:
                p.copy_(torch.randn(p.shape, generator=g) * scale)


def _hf_logits(pm, ids, adapter=True):
    import torch

    pm.eval()
    with torch.no_grad():
        if adapter:
            return pm(torch.tensor([ids])).logits[0].float().numpy()
        with pm.disable_adapter():
            return pm(torch.tensor([ids])).logits[0].float().numpy()


def _llama_logits(model_path, ids, lora=None):
    from llama_cpp import Llama

    llm = Llama(str(model_path), lora_path=str(lora) if lora else None, n_ctx=256, logits_all=True,
                n_threads=1, verbose=False)
    try:
        llm.eval(ids)
        return np.array(llm.scores[: len(ids)], dtype=np.float32)
    finally:
        llm.close()


def _ids(tok):
    return tok(PROMPT, add_special_tokens=False)["input_ids"]


def test_lora_adapter_gguf_reproduces_the_pytorch_logits(tiny, tmp_path):
    from training.export.gguf import export_lora
    from training.export.gguf_io import field_value, open_reader

    model, tok, base = tiny
    pm = _peft(model)
    _set_lora(pm, 0.3)
    pm.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    out = export_lora(tmp_path / "adapter", tmp_path / "tiny-lora.gguf", base=base)

    reader = open_reader(out)
    assert field_value(reader, "general.type") == "adapter"
    assert field_value(reader, "adapter.type") == "lora"
    assert field_value(reader, "adapter.lora.alpha") == pytest.approx(8.0)
    names = {t.name for t in reader.tensors}
    assert {"blk.0.attn_q.weight.lora_a", "blk.1.ffn_down.weight.lora_b"} <= names and len(names) == 2 * 7 * 2

    ids = _ids(tok)
    hf_lora, hf_base = _hf_logits(pm, ids), _hf_logits(pm, ids, adapter=False)
    cpp_lora = _llama_logits(base, ids, out)
    effect = np.abs(hf_lora - hf_base).max()
    assert effect > 0.5  # the adapter matters...
    assert np.abs(cpp_lora - hf_lora).max() < 0.02 * max(1.0, effect)  # ...and llama.cpp applies it as PyTorch does
    assert (cpp_lora.argmax(-1) == hf_lora.argmax(-1)).all()

    meta = json.loads((tmp_path / "tiny-lora.meta.json").read_text())
    from training.export.gguf import sha256_file

    assert meta["kind"] == "lora" and meta["base"]["sha256"] == sha256_file(base)
    assert meta["lora"]["r"] == 4 and meta["sha256"] == sha256_file(out) and "git_revision" in meta


def test_grpo_trained_adapter_exports_and_runs_in_the_app_runtime(tiny, tmp_path):
    from core.llm.runtime import LlamaBackend
    from core.types import GenParams
    from training.config import TrainConfig
    from training.export.gguf import export_lora
    from training.grpo.answer import train_answer_agent

    model, tok, base = tiny
    examples = [{"question": f"Where did Ann go on trip {i}?", "answer": "beach", "category": 4,
                 "speakers": ["Ann"], "memories": [{"text": "Ann went to the beach.", "speaker": "Ann",
                                                    "observed_at": "1 May, 2023"}]} for i in range(2)]

    def length_reward(completions, **_):
        from training.rewards.answer import completion_text

        return [len(completion_text(c)) / 100 for c in completions]

    config = TrainConfig(num_generations=4, prompts_per_step=2, max_steps=2, max_completion_length=10,
                         max_prompt_length=800, eval_every=0, eval_max_new_tokens=4, learning_rate=5e-3,
                         lora_r=4, lora_alpha=8, threads=1)
    result = train_answer_agent(config, examples, examples[:1], out_dir=tmp_path / "run",
                                model=copy.deepcopy(model), tokenizer=tok, reward_funcs=[length_reward],
                                progress=False, base_meta={"kind": "gguf", "path": str(base)})
    # no base given: the exporter reads the base the trainer recorded
    out = export_lora(result.final_dir, tmp_path / "trained.gguf")
    meta = json.loads((tmp_path / "trained.meta.json").read_text())
    assert meta["training_config"]["num_generations"] == 4 and meta["validation"]["baseline"]["n"] == 1

    ids = _ids(tok)
    trained = result.model
    assert np.abs(_llama_logits(base, ids, out) - _hf_logits(trained, ids)).max() < 0.02

    backend = LlamaBackend(path=base, adapter=out, n_ctx=512, n_threads=1)
    try:
        text = "".join(backend.complete([{"role": "user", "content": "Hello"}],
                                        params=GenParams(temperature=0.0, max_tokens=8)))
    finally:
        backend.close()
    assert isinstance(text, str) and backend.name.endswith("+trained")


def test_merged_export_f16_matches_and_quantised_loads(tiny, tmp_path):
    from core.llm.runtime import LlamaBackend
    from core.types import GenParams
    from training.export.gguf import export_merged
    from training.export.gguf_io import field_value, open_reader

    model, tok, base = tiny
    pm = _peft(model)
    _set_lora(pm, 0.3, seed=1)
    pm.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    ids = _ids(tok)
    hf_lora = _hf_logits(pm, ids)

    f16 = export_merged(tmp_path / "adapter", tmp_path / "merged-f16.gguf", base=base, quant="F16")
    assert np.abs(_llama_logits(f16, ids) - hf_lora).max() < 0.05

    q8 = export_merged(tmp_path / "adapter", tmp_path / "merged-q8.gguf", base=base, quant="Q8_0", threads=1)
    reader, base_reader = open_reader(q8), open_reader(base)
    assert field_value(reader, "general.file_type") == 7  # MOSTLY_Q8_0
    assert field_value(reader, "tokenizer.ggml.tokens") == field_value(base_reader, "tokenizer.ggml.tokens")
    assert field_value(reader, "tokenizer.chat_template") == field_value(base_reader, "tokenizer.chat_template")
    q8_logits = _llama_logits(q8, ids)
    assert np.corrcoef(q8_logits[-1], hf_lora[-1])[0, 1] > 0.99
    meta = json.loads((tmp_path / "merged-q8.meta.json").read_text())
    assert meta["kind"] == "merged" and meta["quant"] == "Q8_0" and meta["mean_relative_delta"] > 0

    backend = LlamaBackend(path=q8, n_ctx=512, n_threads=1)
    try:
        pieces = list(backend.complete([{"role": "user", "content": "Hi"}],
                                       params=GenParams(temperature=0.0, max_tokens=6)))
    finally:
        backend.close()
    assert pieces is not None


def test_exporter_refuses_what_it_cannot_do(tiny, tmp_path):
    from core.errors import InvalidInputError
    from core.paths import embedded_gguf
    from training.export.gguf import export_lora, export_merged, quantize

    model, _, base = tiny
    with pytest.raises(InvalidInputError, match="no such file"):
        export_lora(tmp_path / "nope", tmp_path / "x.gguf", base=base)
    pm = _peft(model, targets=("q_proj",))
    pm.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    with pytest.raises(InvalidInputError, match="does not record its base"):
        export_lora(tmp_path / "adapter", tmp_path / "x.gguf")
    with pytest.raises(InvalidInputError, match="does not match"):  # a SmolLM2 base for a tiny adapter
        export_lora(tmp_path / "adapter", tmp_path / "x.gguf", base=embedded_gguf())
    with pytest.raises(InvalidInputError, match="unknown quantisation"):
        export_merged(tmp_path / "adapter", tmp_path / "x.gguf", base=base, quant="Q3_XX")
    q8_base = tmp_path / "base-q8.gguf"
    quantize(base, q8_base, "Q8_0", threads=1)
    with pytest.raises(InvalidInputError, match="already Q8_0"):
        export_merged(tmp_path / "adapter", tmp_path / "x.gguf", base=q8_base, quant="Q8_0")
    assert not (tmp_path / "x.gguf").exists()


def test_real_smollm2_adapter_moves_llama_cpp_logits_like_pytorch(tmp_path):
    """The embedded Q4_1 SmolLM2 (9 query / 3 key-value heads: the Q/K row permutation matters).

    llama.cpp computes Q4_1 matmuls on 8-bit-quantised activations, so its logits differ from
    PyTorch's (dequantised weights) by ~1-2; the adapter's EFFECT on the logits must still agree.
    """
    import torch

    from training.export.gguf import export_lora
    from training.models import load_base

    torch.set_num_threads(1)
    model, tok, spec = load_base("embedded")
    pm = _peft(model, r=4, alpha=8, targets=("q_proj", "k_proj"))  # the rows llama.cpp permutes
    _set_lora(pm, 0.1)
    pm.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    out = export_lora(tmp_path / "adapter", tmp_path / "smol-lora.gguf", base="embedded")
    ids = _ids(tok)
    hf_delta = (_hf_logits(pm, ids) - _hf_logits(pm, ids, adapter=False)).ravel()
    cpp_delta = (_llama_logits(spec.path, ids, out) - _llama_logits(spec.path, ids)).ravel()
    corr = np.corrcoef(hf_delta, cpp_delta)[0, 1]
    print(f"adapter effect: max |dlogit| {np.abs(hf_delta).max():.2f}, llama.cpp vs PyTorch corr {corr:.4f}")
    assert np.abs(hf_delta).max() > 2.0
    assert corr > 0.95


def test_export_command_line(tiny, tmp_path, capsys):
    from app.cli import main
    from training.export.gguf_io import field_value, open_reader

    model, _, base = tiny
    pm = _peft(model, targets=("q_proj", "v_proj"))
    _set_lora(pm, 0.1)
    pm.save_pretrained(str(tmp_path / "adapter"), save_embedding_layers=False)
    out = tmp_path / "cli-lora.gguf"
    assert main(["export", "--adapter", str(tmp_path / "adapter"), "--out", str(out), "--base", str(base),
                 "--dtype", "f16"]) == 0
    assert field_value(open_reader(out), "adapter.type") == "lora"
    printed = capsys.readouterr().out
    assert (tmp_path / "cli-lora.meta.json").is_file() and "wrote" in printed and "--answer-adapter" in printed
    assert json.loads((tmp_path / "cli-lora.meta.json").read_text())["role"] == "answer"
    from training.export.gguf import TRAIN_META

    (tmp_path / "adapter" / TRAIN_META).write_text(json.dumps({"role": "manager"}))
    assert main(["export", "--adapter", str(tmp_path / "adapter"), "--out", str(tmp_path / "m.gguf"), "--base",
                 str(base), "--dtype", "f16"]) == 0
    assert "--manager-adapter" in capsys.readouterr().out
    assert json.loads((tmp_path / "m.meta.json").read_text())["role"] == "manager"
    merged = tmp_path / "cli-merged.gguf"
    assert main(["export", "--adapter", str(tmp_path / "adapter"), "--out", str(merged), "--base", str(base),
                 "--merge", "--quant", "Q8_0", "--threads", "1"]) == 0
    assert field_value(open_reader(merged), "general.file_type") == 7
    assert main(["export", "--adapter", str(tmp_path / "missing"), "--out", str(out)]) == 1
    assert "error:" in capsys.readouterr().err

"""Load the base answer model for training: an HF folder, or straight from a GGUF file.

`load_base("embedded")` trains the shipped SmolLM2-135M without any download: transformers
reads the GGUF and dequantises it (`from_pretrained(dir, gguf_file=name)`), then
`hf_quantizer.remove_quantization_config(model)` clears the GGUF marker that otherwise makes
`save_pretrained` and TRL's GRPOTrainer refuse the model. The tokenizer comes from the same
file (`tokenizer.ggml.*` + its chat template).

`tiny_llama` builds a random-weight 2-layer LLaMA around the REAL SmolLM2 tokenizer: what the
test-suite trains and exports in seconds.

Heavy imports (torch, transformers) happen inside the functions. Call from one thread.
Raises `ModelLoadError` (one sentence) for a base that is missing or unreadable.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInputError, ModelLoadError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BaseSpec:
    """Where a base model comes from: kind "gguf" (a file) or "hf" (a folder)."""

    kind: str
    path: Path

    @property
    def label(self) -> str:
        return f"{self.kind}:{self.path}"


def resolve_base(base: str | os.PathLike) -> BaseSpec:
    """"embedded" -> the shipped SmolLM2 GGUF; a `.gguf` file; or an HF folder with config.json.

    >>> resolve_base("/nonexistent/model.gguf")
    Traceback (most recent call last):
    ...
    core.errors.ModelLoadError: base model /nonexistent/model.gguf does not exist
    """
    if str(base) == "embedded":
        from core.paths import embedded_gguf

        return BaseSpec("gguf", embedded_gguf())
    p = Path(base).expanduser()
    if not p.exists():
        raise ModelLoadError(f"base model {p} does not exist")
    if p.is_file():
        with open(p, "rb") as fh:
            if fh.read(4) != b"GGUF":
                raise ModelLoadError(f"{p} is not a GGUF file")
        return BaseSpec("gguf", p.resolve())
    if (p / "config.json").is_file():
        return BaseSpec("hf", p.resolve())
    raise ModelLoadError(f"{p} is neither a GGUF file nor a Hugging Face model folder (no config.json)")


def pick_dtype(bf16: bool | None):
    """bf16 on a CUDA GPU (or when asked), float32 otherwise (CPU bf16 matmuls are slow)."""
    import torch

    if bf16 is None:
        bf16 = bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())
    return torch.bfloat16 if bf16 else torch.float32


def load_tokenizer(spec: BaseSpec):
    """The tokenizer of a base model, left-padded for batched generation, with a pad token."""
    from transformers import AutoTokenizer

    try:
        if spec.kind == "gguf":
            tok = AutoTokenizer.from_pretrained(str(spec.path.parent), gguf_file=spec.path.name)
        else:
            tok = AutoTokenizer.from_pretrained(str(spec.path))
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the tokenizer of {spec.path}: {exc}") from exc
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = "left"
    if not getattr(tok, "chat_template", None):
        raise ModelLoadError(f"{spec.path} has no chat template: the answer prompt is a chat")
    return tok


def load_model(spec: BaseSpec, *, bf16: bool | None = None):
    """The causal LM in float32 (CPU) or bf16 (GPU), on the CPU; the trainer moves it."""
    from transformers import AutoModelForCausalLM

    dtype = pick_dtype(bf16)
    try:
        if spec.kind == "gguf":
            model = AutoModelForCausalLM.from_pretrained(str(spec.path.parent), gguf_file=spec.path.name,
                                                         dtype=dtype)
        else:
            model = AutoModelForCausalLM.from_pretrained(str(spec.path), dtype=dtype)
    except (OSError, ValueError) as exc:
        raise ModelLoadError(f"could not load the model {spec.path}: {exc}") from exc
    quantizer = getattr(model, "hf_quantizer", None)
    if quantizer is not None and spec.kind == "gguf":
        # the weights are already dequantised: drop the marker that blocks saving/training
        quantizer.remove_quantization_config(model)
    return model


def load_base(base: str | os.PathLike, *, bf16: bool | None = None):
    """(model, tokenizer, spec) for a base given as in `resolve_base`."""
    spec = resolve_base(base)
    tok = load_tokenizer(spec)
    model = load_model(spec, bf16=bf16)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    log.info("loaded base %s (%s, %.1fM parameters)", spec.label, model.dtype,
             sum(p.numel() for p in model.parameters()) / 1e6)
    return model, tok, spec


def tiny_llama(*, layers: int = 2, hidden: int = 64, heads: int = 4, kv_heads: int = 2,
               intermediate: int = 128, seed: int = 0, tokenizer_gguf: str | os.PathLike | None = None):
    """(model, tokenizer): a random-weight LLaMA with the real SmolLM2 tokenizer (tests, smoke runs).

    Tied embeddings and the tokenizer's vocabulary, like SmolLM2; float32.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from core.paths import embedded_gguf

    gguf_path = Path(tokenizer_gguf) if tokenizer_gguf else embedded_gguf()
    tok = load_tokenizer(BaseSpec("gguf", gguf_path))
    config = LlamaConfig(
        vocab_size=len(tok), hidden_size=hidden, intermediate_size=intermediate, num_hidden_layers=layers,
        num_attention_heads=heads, num_key_value_heads=kv_heads, max_position_embeddings=2048,
        tie_word_embeddings=True, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id, rms_norm_eps=1e-5,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.float32)
    return model, tok


def model_id(spec) -> str:
    """The fingerprint of a `ModelSpec`'s model (+ adapter) files, as the evaluation and the
    manager's training states key their caches. Raises InvalidInputError for a missing file."""
    from core.fileio import file_fingerprint
    from core.paths import embedded_gguf

    path = spec.path or str(embedded_gguf())
    if not Path(path).is_file():
        raise InvalidInputError(f"Model file not found: {path}")
    if spec.adapter and not Path(spec.adapter).is_file():
        raise InvalidInputError(f"Adapter file not found: {spec.adapter}")
    return "|".join(x for x in (file_fingerprint(path), file_fingerprint(spec.adapter)) if x)

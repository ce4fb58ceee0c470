"""Low-level GGUF helpers for the exporter, on the `gguf` package (GGUFReader / GGUFWriter).

- tensor naming: Hugging Face module names -> llama.cpp tensor names, through the `gguf`
  package's own `TensorNameMap` (`model.layers.3.self_attn.q_proj` -> `blk.3.attn_q`);
- the Q/K row permutation llama.cpp's LLaMA graph expects (its rotary embedding pairs
  neighbouring rows; Hugging Face pairs the two halves of each head): applied to Q and K
  weights, and so to the LoRA B matrix of those projections (the permutation acts on rows,
  the output side);
- reading a GGUF's metadata and dequantised tensors; copying metadata into a writer;
- `write_hf_model_gguf`: an HF LLaMA-family model written as an F32/F16 GGUF with the
  tokenizer metadata copied from a reference GGUF (used for test models and as the reference
  layout of the merged export).

Reference for names/transposition only: llama.cpp's convert_hf_to_gguf.py and
convert_lora_to_gguf.py (not copied). Pure numpy; torch is only touched through `.numpy()` on
tensors the caller passes. Any thread; no shared state.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np

from core.errors import InvalidInputError, ModelLoadError

# GGUF architectures whose Q/K weights convert_hf_to_gguf permutes (the LLaMA rope layout)
PERMUTE_QK_ARCHS = frozenset({"llama"})


def _gguf():
    import gguf

    return gguf


# --------------------------------------------------------------------------- reading


@dataclass
class BaseInfo:
    """What the exporter needs to know about a base model."""

    arch: str
    n_layers: int
    n_head: int
    n_head_kv: int
    file_type: int | None = None  # gguf.LlamaFileType value of a GGUF base


def open_reader(path: str | os.PathLike):
    """A GGUFReader, or ModelLoadError with one sentence when the file is not a readable GGUF."""
    p = Path(path)
    if not p.is_file():
        raise ModelLoadError(f"{p}: no such GGUF file")
    try:
        return _gguf().GGUFReader(p)
    except (ValueError, OSError, IndexError) as exc:
        raise ModelLoadError(f"{p}: not a readable GGUF file ({exc})") from exc


def field_value(reader, key: str, default: Any = None) -> Any:
    """A metadata value (scalar, string or list), or `default` when absent."""
    f = reader.get_field(key)
    return f.contents() if f is not None else default


def base_info_from_gguf(reader) -> BaseInfo:
    arch = field_value(reader, "general.architecture")
    if not arch:
        raise ModelLoadError("the base GGUF has no general.architecture")
    n_layers = field_value(reader, f"{arch}.block_count")
    n_head = field_value(reader, f"{arch}.attention.head_count")
    n_kv = field_value(reader, f"{arch}.attention.head_count_kv", n_head)
    if n_layers is None or n_head is None:
        raise ModelLoadError(f"the base GGUF lacks {arch}.block_count or head_count")
    return BaseInfo(str(arch), int(n_layers), int(n_head), int(n_kv), field_value(reader, "general.file_type"))


def base_info_from_hf_config(config: Mapping[str, Any]) -> BaseInfo:
    """BaseInfo from an HF `config.json` dict (LLaMA-family model_type only)."""
    model_type = str(config.get("model_type", ""))
    arch = {"llama": "llama", "mistral": "llama", "qwen2": "qwen2", "qwen3": "qwen3"}.get(model_type)
    if arch is None:
        raise InvalidInputError(f"cannot export an adapter for model type {model_type!r} (LLaMA-family only)")
    n_head = int(config["num_attention_heads"])
    return BaseInfo(arch, int(config["num_hidden_layers"]), n_head,
                    int(config.get("num_key_value_heads") or n_head))


def dequantized(tensor) -> np.ndarray:
    """A GGUFReader tensor as float32 numpy, shaped like PyTorch (rows = `ne[1]`)."""
    gguf = _gguf()
    qtype = tensor.tensor_type
    if qtype == gguf.GGMLQuantizationType.F32:
        return np.array(tensor.data, dtype=np.float32)
    if qtype in (gguf.GGMLQuantizationType.F16, gguf.GGMLQuantizationType.F64):
        return np.asarray(tensor.data).astype(np.float32)
    return np.asarray(gguf.quants.dequantize(tensor.data, qtype), dtype=np.float32)


def copy_metadata(reader, writer, *, skip: Iterable[str] = (), skip_prefixes: Iterable[str] = ()) -> None:
    """Copy every key/value of `reader` into `writer` except the virtual `GGUF.*` fields,
    `general.architecture` (the writer adds its own) and the keys in `skip`."""
    gguf = _gguf()
    skip = set(skip) | {gguf.Keys.General.ARCHITECTURE}
    prefixes = ("GGUF.",) + tuple(skip_prefixes)
    for f in reader.fields.values():
        if f.name in skip or f.name.startswith(prefixes):
            continue
        vtype = f.types[0]
        sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)


# --------------------------------------------------------------------------- names & layout


def tensor_name_map(arch: str, n_layers: int):
    """The `gguf` package's HF -> GGUF tensor name map for an architecture name."""
    gguf = _gguf()
    by_name = {name: a for a, name in gguf.MODEL_ARCH_NAMES.items()}
    if arch not in by_name:
        raise InvalidInputError(f"unknown GGUF architecture {arch!r}")
    return gguf.get_tensor_name_map(by_name[arch], n_layers)


def gguf_tensor_name(name_map, hf_module: str) -> str:
    """GGUF base name (no `.weight`) of one HF module path; InvalidInputError if unmapped.

    `hf_module` may carry PEFT's `base_model.model.` prefix.
    """
    key = hf_module.removeprefix("base_model.model.")
    mapped = name_map.get_name(key)
    if mapped is None:
        raise InvalidInputError(f"no llama.cpp tensor for module {hf_module!r}")
    return mapped


def permute_rows(w: np.ndarray, n_head: int) -> np.ndarray:
    """LLaMA Q/K rows from the HF rope layout (halves) to llama.cpp's (interleaved pairs).

    Rows are grouped per head as [first half | second half]; the result interleaves them.

    >>> permute_rows(np.arange(8).reshape(8, 1), 2)[:, 0].tolist()
    [0, 2, 1, 3, 4, 6, 5, 7]
    """
    rows = w.shape[0]
    return (w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:])
            .swapaxes(1, 2).reshape(w.shape))


def qk_heads(info: BaseInfo, gguf_name: str) -> int | None:
    """How many heads to permute a Q/K tensor over (None = no permutation)."""
    if info.arch not in PERMUTE_QK_ARCHS:
        return None
    if gguf_name.endswith(".attn_q"):
        return info.n_head
    if gguf_name.endswith(".attn_k"):
        return info.n_head_kv
    return None


# --------------------------------------------------------------------------- writing a model


def _hf_config_value(config, *names, default=None):
    for n in names:
        v = getattr(config, n, None)
        if v is not None:
            return v
    return default


def _rope_theta(config) -> float:
    params = getattr(config, "rope_parameters", None) or {}
    if isinstance(params, Mapping) and params.get("rope_theta") is not None:
        return float(params["rope_theta"])
    return float(_hf_config_value(config, "rope_theta", default=10000.0))


def write_hf_model_gguf(model, out: str | os.PathLike, *, tokenizer_gguf: str | os.PathLike,
                        dtype: str = "f32", name: str = "memory-r1 model") -> Path:
    """Write an HF LLaMA-architecture `model` (its state dict) as a GGUF file.

    Hyper-parameters come from `model.config`; every `tokenizer.*` key is copied from
    `tokenizer_gguf` (the vocabularies must match). 2-D weights are written as `dtype`
    ("f32" or "f16"), norms as f32; Q/K rows are permuted as llama.cpp expects.
    Raises InvalidInputError for an unsupported model.
    """
    gguf = _gguf()
    config = model.config
    if getattr(config, "model_type", None) != "llama":
        raise InvalidInputError("only LLaMA-architecture models can be written (model_type 'llama')")
    n_layers = int(config.num_hidden_layers)
    n_head = int(config.num_attention_heads)
    n_kv = int(config.num_key_value_heads or n_head)
    head_dim = int(_hf_config_value(config, "head_dim", default=config.hidden_size // n_head))
    info = BaseInfo("llama", n_layers, n_head, n_kv)
    ref = open_reader(tokenizer_gguf)
    vocab = len(field_value(ref, "tokenizer.ggml.tokens", []))
    if vocab and vocab != int(config.vocab_size):
        raise InvalidInputError(f"tokenizer has {vocab} tokens but the model {config.vocab_size}")
    out = Path(out)
    writer = gguf.GGUFWriter(out, "llama")
    writer.add_name(name)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32 if dtype == "f32" else gguf.LlamaFileType.MOSTLY_F16)
    writer.add_context_length(int(config.max_position_embeddings))
    writer.add_embedding_length(int(config.hidden_size))
    writer.add_block_count(n_layers)
    writer.add_feed_forward_length(int(config.intermediate_size))
    writer.add_head_count(n_head)
    writer.add_head_count_kv(n_kv)
    writer.add_rope_dimension_count(head_dim)
    writer.add_key_length(head_dim)
    writer.add_value_length(head_dim)
    writer.add_rope_freq_base(_rope_theta(config))
    writer.add_layer_norm_rms_eps(float(config.rms_norm_eps))
    writer.add_vocab_size(int(config.vocab_size))
    for f in ref.fields.values():
        if f.name.startswith("tokenizer."):
            vtype = f.types[0]
            sub = f.types[-1] if vtype == gguf.GGUFValueType.ARRAY else None
            writer.add_key_value(f.name, f.contents(), vtype, sub_type=sub)
    name_map = tensor_name_map("llama", n_layers)
    tied = bool(getattr(config, "tie_word_embeddings", False))
    for key, tensor in model.state_dict().items():
        if key == "lm_head.weight" and tied:
            continue
        mapped = name_map.get_name(key, try_suffixes=(".weight", ".bias"))
        if mapped is None:
            if "rotary_emb" in key:
                continue
            raise InvalidInputError(f"no llama.cpp tensor for {key!r}")
        w = tensor.detach().float().cpu().numpy()
        heads = qk_heads(info, mapped.rsplit(".", 1)[0])
        if heads:
            w = permute_rows(w, heads)
        if w.ndim >= 2 and dtype == "f16":
            w = w.astype(np.float16)
        writer.add_tensor(mapped, np.ascontiguousarray(w))
    write_and_close(writer)
    return out


def write_and_close(writer) -> None:
    """Write a filled `gguf.GGUFWriter` (header, metadata, tensors) to its file and close it."""
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()

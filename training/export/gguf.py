"""Export a trained PEFT LoRA adapter for llama.cpp: a GGUF LoRA adapter, or a merged model.

Primary route, `export_lora`: a GGUF adapter served as `Llama(model_path=<base GGUF>,
lora_path=<adapter>)`. Tensors `blk.N.<tensor>.lora_a` (PEFT's A, `[r, in]`) and
`.lora_b` (PEFT's B, `[out, r]`, rows permuted for LLaMA Q/K like the base weights), with
`general.type=adapter`, `adapter.type=lora`, `adapter.lora.alpha`. llama.cpp scales the
product by `alpha / r`; per-module ranks/alphas and rsLoRA are folded into B so the scale
comes out right for every module.

`export_merged`: the base GGUF dequantised, `W + scale * B @ A` added, written as F16 with
the base's metadata and tokenizer copied (file type changed), then quantised by llama.cpp's
`llama_model_quantize` to a type different from the base's (re-quantising to the base's own
type, e.g. Q4_1, rounds a small trained change away).

Each export writes `<name>.meta.json` beside it: base path + sha256, LoRA config, training
config and validation scores (from the adapter's `memory_r1_train.json`), git revision.
Raises `InvalidInputError`/`ModelLoadError` (one sentence) for an adapter or base it cannot
use. Runs in the calling thread; CPU only; peak memory ~ one dequantised tensor (LoRA) or
the F16 model (merge).
"""

from __future__ import annotations

import json
import logging
import math
import os
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.errors import InvalidInputError
from core.fileio import read_json, sha256_file
from core.llm.variant import LLAMA_FILE_TYPES, quantize_gguf

from training.export import gguf_io
log = logging.getLogger(__name__)

TRAIN_META = "memory_r1_train.json"  # written by the trainer into every saved adapter dir
# the --quant choices, with their gguf.LlamaFileType values
QUANT_TYPES = {q: LLAMA_FILE_TYPES[q] for q in ("Q4_K_M", "Q5_K_M", "Q8_0", "F16")}


@dataclass
class LoraModule:
    hf_module: str  # e.g. "base_model.model.model.layers.0.self_attn.q_proj"
    a: np.ndarray  # [r, in]
    b: np.ndarray  # [out, r], already multiplied by the module's scale / (alpha / r)


@dataclass
class Adapter:
    path: Path
    config: dict
    alpha: float  # the alpha written to the GGUF
    modules: list[LoraModule]
    train_meta: dict

    @property
    def role(self) -> str:
        """"manager" or "answer" (what the trainer recorded; older runs: answer)."""
        return "manager" if self.train_meta.get("role") == "manager" else "answer"


# --------------------------------------------------------------------------- adapter reading


def _module_scale(config: dict, module: str, rank: int) -> float:
    """PEFT's scaling for one module (alpha / r, per-module patterns, rsLoRA)."""
    alpha = float(config.get("lora_alpha", rank))
    for pattern, value in (config.get("alpha_pattern") or {}).items():
        if module.endswith(pattern) or pattern in module:
            alpha = float(value)
    return alpha / math.sqrt(rank) if config.get("use_rslora") else alpha / rank


def load_adapter(adapter_dir: str | os.PathLike) -> Adapter:
    """Read a PEFT LoRA adapter folder (adapter_config.json + adapter_model.safetensors)."""
    path = Path(adapter_dir)
    config = read_json(path / "adapter_config.json")
    if str(config.get("peft_type", "LORA")).upper() != "LORA":
        raise InvalidInputError(f"{path}: not a LoRA adapter (peft_type {config.get('peft_type')})")
    if config.get("use_dora"):
        raise InvalidInputError(f"{path}: DoRA adapters cannot be exported to llama.cpp")
    if config.get("fan_in_fan_out"):
        raise InvalidInputError(f"{path}: fan_in_fan_out adapters are not supported")
    if config.get("bias", "none") != "none" or config.get("modules_to_save"):
        raise InvalidInputError(f"{path}: adapters with trained biases or full modules are not supported")
    weights = path / "adapter_model.safetensors"
    if not weights.is_file():
        raise InvalidInputError(f"{path}: no adapter_model.safetensors")
    from safetensors.numpy import load_file

    tensors = load_file(str(weights))
    alpha = float(config.get("lora_alpha", config.get("r", 8)))
    modules = []
    for key in sorted(k for k in tensors if k.endswith(".lora_A.weight")):
        module = key[: -len(".lora_A.weight")]
        b_key = module + ".lora_B.weight"
        if b_key not in tensors:
            raise InvalidInputError(f"{path}: {module} has lora_A but no lora_B")
        a = tensors[key].astype(np.float32)
        b = tensors[b_key].astype(np.float32)
        rank = a.shape[0]
        fold = _module_scale(config, module, rank) / (alpha / rank)
        modules.append(LoraModule(module, a, b * np.float32(fold) if fold != 1.0 else b))
    if any("lora_embedding" in k for k in tensors):
        raise InvalidInputError(f"{path}: embedding LoRA is not supported")
    if not modules:
        raise InvalidInputError(f"{path}: the adapter holds no LoRA weights")
    meta_path = path / TRAIN_META
    train_meta = read_json(meta_path) if meta_path.is_file() else {}
    return Adapter(path, config, alpha, modules, train_meta)


def resolve_base(adapter: Adapter, base: str | os.PathLike | None) -> Path:
    """The base model: `base` if given ("embedded" = the shipped SmolLM2), else the one the
    trainer recorded. InvalidInputError when neither names an existing file or folder."""
    if base is None:
        base = (adapter.train_meta.get("base") or {}).get("path")
        if not base:
            raise InvalidInputError("the adapter does not record its base model: pass --base PATH")
    if str(base) == "embedded":
        from core.paths import embedded_gguf

        return embedded_gguf()
    p = Path(base).expanduser()
    if not p.exists():
        raise InvalidInputError(f"base model {p} does not exist")
    return p


def _base_info(base: Path):
    if base.is_dir():
        return gguf_io.base_info_from_hf_config(read_json(base / "config.json")), None
    reader = gguf_io.open_reader(base)
    return gguf_io.base_info_from_gguf(reader), reader


def _lora_b_for_gguf(info, gguf_name: str, b: np.ndarray) -> np.ndarray:
    heads = gguf_io.qk_heads(info, gguf_name)
    return gguf_io.permute_rows(b, heads) if heads else b


# --------------------------------------------------------------------------- LoRA adapter


def export_lora(adapter_dir: str | os.PathLike, out: str | os.PathLike, *,
                base: str | os.PathLike | None = None, dtype: str = "f32") -> Path:
    """Write the adapter as a GGUF LoRA adapter for `base` (a GGUF or an HF folder) + meta.json.

    Checks every tensor against the base GGUF's shapes when the base is a GGUF.
    """
    import gguf

    if dtype not in ("f32", "f16"):
        raise InvalidInputError("adapter dtype must be f32 or f16")
    adapter = load_adapter(adapter_dir)
    base_path = resolve_base(adapter, base)
    info, reader = _base_info(base_path)
    shapes = {t.name: tuple(int(x) for x in t.shape) for t in reader.tensors} if reader else None
    name_map = gguf_io.tensor_name_map(info.arch, info.n_layers)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.part")
    writer = gguf.GGUFWriter(tmp, info.arch)
    writer.add_type(gguf.GGUFType.ADAPTER)
    writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
    writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, adapter.alpha)
    writer.add_name(f"memory-r1 LoRA ({adapter.path.name})")
    np_dtype = np.float32 if dtype == "f32" else np.float16
    for m in adapter.modules:
        name = gguf_io.gguf_tensor_name(name_map, m.hf_module)
        if shapes is not None:
            ne = shapes.get(f"{name}.weight")
            if ne is None:
                raise InvalidInputError(f"{name}.weight is not in the base model: wrong base?")
            if ne != (m.a.shape[1], m.b.shape[0]):
                raise InvalidInputError(f"{name}: adapter shape does not match the base model")
        b = _lora_b_for_gguf(info, name, m.b)
        writer.add_tensor(f"{name}.weight.lora_a", np.ascontiguousarray(m.a.astype(np_dtype)))
        writer.add_tensor(f"{name}.weight.lora_b", np.ascontiguousarray(b.astype(np_dtype)))
    gguf_io.write_and_close(writer)
    os.replace(tmp, out)
    write_meta(out, adapter, base_path, kind="lora", extra={"dtype": dtype})
    return out


# --------------------------------------------------------------------------- merged model


def merge_to_f16(adapter: Adapter, base_gguf: Path, out_f16: Path) -> dict[str, float]:
    """Base GGUF dequantised + LoRA delta -> an F16 GGUF (norms F32). Returns the relative
    size of each delta (|dW| / |W|, for the log and the meta)."""
    import gguf

    reader = gguf_io.open_reader(base_gguf)
    info = gguf_io.base_info_from_gguf(reader)
    name_map = gguf_io.tensor_name_map(info.arch, info.n_layers)
    deltas = {}
    for m in adapter.modules:
        name = gguf_io.gguf_tensor_name(name_map, m.hf_module)
        deltas[f"{name}.weight"] = (name, m)
    writer = gguf.GGUFWriter(out_f16, info.arch)
    gguf_io.copy_metadata(reader, writer, skip=(gguf.Keys.General.FILE_TYPE,))
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    scale = np.float32(adapter.alpha)
    changed: dict[str, float] = {}
    for t in reader.tensors:
        w = gguf_io.dequantized(t)
        if t.name in deltas:
            name, m = deltas.pop(t.name)
            b = _lora_b_for_gguf(info, name, m.b)
            delta = (b @ m.a) * (scale / m.a.shape[0])
            if delta.shape != w.shape:
                raise InvalidInputError(f"{name}: adapter shape does not match the base model")
            changed[name] = float(np.linalg.norm(delta) / (np.linalg.norm(w) or 1.0))
            w = w + delta
        writer.add_tensor(t.name, np.ascontiguousarray(w.astype(np.float16) if w.ndim >= 2 else w))
    if deltas:
        raise InvalidInputError(f"{sorted(deltas)[0]} is not in the base model: wrong base?")
    gguf_io.write_and_close(writer)
    return changed


def quantize(src: Path, dst: Path, quant: str, *, threads: int | None = None) -> None:
    """llama.cpp's `llama_model_quantize`: `src` GGUF -> `dst` with file type `quant`
    (`core.llm.variant.quantize_gguf`; ModelLoadError when llama.cpp fails)."""
    quantize_gguf(src, dst, quant, threads=threads)


def export_merged(adapter_dir: str | os.PathLike, out: str | os.PathLike, *,
                  base: str | os.PathLike | None = None, quant: str = "Q4_K_M",
                  threads: int | None = None) -> Path:
    """One GGUF model file: base + LoRA delta, quantised to `quant` (F16 = not quantised)."""
    quant = quant.upper()
    if quant not in QUANT_TYPES:
        raise InvalidInputError(f"unknown quantisation {quant}: use one of {', '.join(QUANT_TYPES)}")
    adapter = load_adapter(adapter_dir)
    base_path = resolve_base(adapter, base)
    if base_path.is_dir():
        raise InvalidInputError("--merge needs a GGUF base model (got a folder)")
    base_type = gguf_io.field_value(gguf_io.open_reader(base_path), "general.file_type")
    if base_type is not None and int(base_type) == QUANT_TYPES[quant] and quant != "F16":
        raise InvalidInputError(f"the base is already {quant}: re-quantising to the same type rounds "
                                "the trained change away; choose another --quant")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out.parent, prefix=".merge-") as tmp:
        f16 = Path(tmp) / "merged-f16.gguf"
        changed = merge_to_f16(adapter, base_path, f16)
        if quant == "F16":
            os.replace(f16, out)
        else:
            part = Path(tmp) / "merged-q.gguf"
            quantize(f16, part, quant, threads=threads)
            os.replace(part, out)
    mean_delta = float(np.mean(list(changed.values()))) if changed else 0.0
    write_meta(out, adapter, base_path, kind="merged",
               extra={"quant": quant, "mean_relative_delta": mean_delta})
    return out


# --------------------------------------------------------------------------- meta.json




def git_revision() -> str | None:
    """`git describe --always --dirty` of the checkout, or None outside one."""
    from core.paths import repo_root

    try:
        res = subprocess.run(["git", "describe", "--always", "--dirty", "--abbrev=40"], cwd=repo_root(),
                             capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):
        return None
    return res.stdout.strip() or None if res.returncode == 0 else None


def meta_path(out: Path) -> Path:
    """`answer-lora.gguf` -> `answer-lora.meta.json`, beside the export."""
    return out.with_suffix(".meta.json")


def write_meta(out: Path, adapter: Adapter, base_path: Path, *, kind: str, extra: dict | None = None) -> Path:
    lora_keys = ("r", "lora_alpha", "lora_dropout", "target_modules", "use_rslora", "rank_pattern",
                 "alpha_pattern", "base_model_name_or_path", "peft_version")
    meta = {
        "format": "memory-r1-export/1",
        "kind": kind,
        "role": adapter.role,
        "file": out.name,
        "sha256": sha256_file(out),
        "base": {"path": str(base_path),
                 "sha256": sha256_file(base_path) if base_path.is_file() else None},
        "adapter_dir": str(adapter.path),
        "lora": {k: adapter.config.get(k) for k in lora_keys if k in adapter.config},
        "training_config": adapter.train_meta.get("train_config"),
        "validation": adapter.train_meta.get("validation"),
        "trained_base": adapter.train_meta.get("base"),
        # the prompt the adapter was trained on (SFT adapters record it; GRPO ones may not)
        "method": adapter.train_meta.get("method"),
        "prompt_version": adapter.train_meta.get("prompt_version"),
        "answer_sources_version": adapter.train_meta.get("answer_sources_version"),
        "git_revision": git_revision(),
        **(extra or {}),
    }
    path = meta_path(out)
    path.write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")
    return path

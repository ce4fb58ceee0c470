"""The Answer Agent's GRPO + LoRA training settings, in one dataclass.

Every default is either the paper's reported setting (Yan et al., arXiv 2508.19828, §4 and
appendix; method.md §2) or, where the paper is silent, our choice, marked "ours" with the
reason. A JSON file with a subset of the field names overrides the defaults
(`TrainConfig.from_file`); an unknown key is an error, not silently ignored.

Pure data: no torch import here (the CLI reads it before deciding to load anything heavy).

>>> c = TrainConfig()
>>> c.num_generations, c.beta, c.temperature, c.retrieve_k
(8, 0.001, 1.0, 60)
>>> c.prompts_per_step * c.num_generations   # the paper's total batch of 128
128
>>> TrainConfig.from_dict({"num_generations": 4}).num_generations
4
>>> TrainConfig.from_dict({"group": 4})
Traceback (most recent call last):
...
core.errors.InvalidInputError: unknown training setting(s): group
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInputError
from core.fileio import read_json

LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


def _h(text: str) -> dict:
    return {"help": text}


@dataclass
class TrainConfig:
    """GRPO + LoRA settings for the Answer Agent (method.md §2)."""

    # --- GRPO ---------------------------------------------------------------------------
    num_generations: int = field(default=8, metadata=_h(
        "group size G: completions sampled per question. Paper: unreported; ours 8 (5-8 is usual)."))
    prompts_per_step: int = field(default=16, metadata=_h(
        "questions per optimizer step. Paper: total batch 128, read by us as 128 completions = "
        "16 questions x 8 completions."))
    prompts_per_device: int = field(default=1, metadata=_h(
        "questions per forward/backward micro-batch on one device; gradient accumulation makes up "
        "the rest of prompts_per_step (ours; memory bound)."))
    beta: float = field(default=0.001, metadata=_h(
        "KL coefficient against the frozen base (the adapter disabled). Paper: unreported; ours "
        "0.001 (DeepSeek-R1's value)."))
    epsilon: float = field(default=0.2, metadata=_h("PPO/GRPO ratio clip. Ours: 0.2 (standard)."))
    loss_type: str = field(default="grpo", metadata=_h(
        "TRL loss aggregation. 'grpo' = the paper's algorithm (per-sequence mean); TRL's own "
        "default is 'dapo'."))
    temperature: float = field(default=1.0, metadata=_h("rollout temperature. Paper: 1.0."))
    learning_rate: float = field(default=1e-5, metadata=_h(
        "AdamW learning rate. Paper: 1e-6 for FULL fine-tuning; LoRA updates far fewer weights "
        "and is usually run ~10x higher, so ours is 1e-5."))
    num_train_epochs: float = field(default=2.0, metadata=_h(
        "passes over the training questions. Paper: unreported; ours 2 (152 questions)."))
    max_steps: int = field(default=-1, metadata=_h("stop after this many optimizer steps; -1 = use epochs."))
    warmup_ratio: float = field(default=0.0, metadata=_h(
        "linear warm-up as a share (< 1) of the steps (ours: none)."))
    max_grad_norm: float = field(default=1.0, metadata=_h("gradient clipping (TRL default)."))

    # --- lengths and prompt ---------------------------------------------------------------
    max_prompt_length: int = field(default=4096, metadata=_h(
        "longest prompt in tokens. Paper: 4096. Memories that do not fit are dropped from the "
        "lowest-ranked end, as the app does."))
    max_completion_length: int = field(default=2048, metadata=_h(
        "longest sampled completion in tokens. Paper: 2048."))
    retrieve_k: int = field(default=60, metadata=_h(
        "memories retrieved per question (paper: 60 = 30 per speaker)."))
    answer_sources: bool = field(default=True, metadata=_h(
        "answer prompts with quotes of the memories' source turns, the app's default prompt "
        "(core/agents/evidence.py; examples without source texts fall back to the paper's, "
        "logged); false = the paper's layout. The manager's frozen answerer follows it too."))

    # --- reward ------------------------------------------------------------------------------
    reward_f1_weight: float = field(default=0.0, metadata=_h(
        "weight of an extra token-F1 reward. Paper: EM only (0). Raise only if EM gives no signal."))
    reward_format_weight: float = field(default=0.0, metadata=_h(
        "weight of an extra reward for emitting the **Answer:** marker. Paper: none (0)."))

    # --- LoRA (ours: the paper fine-tunes all weights) -----------------------------------------
    lora_r: int = field(default=16, metadata=_h("LoRA rank (ours)."))
    lora_alpha: int = field(default=32, metadata=_h("LoRA alpha; scale = alpha / r (ours: 2 x r)."))
    lora_dropout: float = field(default=0.05, metadata=_h("LoRA dropout (ours)."))
    lora_targets: tuple[str, ...] = field(default=LORA_TARGETS, metadata=_h(
        "Linear modules that get adapters: all attention and MLP projections (ours). Every name "
        "here maps to a llama.cpp tensor, so the adapter exports to GGUF."))

    # --- validation, logging, runtime ----------------------------------------------------------
    eval_every: int = field(default=10, metadata=_h(
        "validation F1 every N optimizer steps (and at the start and the end); 0 = only start/end."))
    eval_max_questions: int = field(default=0, metadata=_h(
        "validation questions used (a fixed, seeded subset); 0 = all (81 for conv-30)."))
    eval_max_new_tokens: int = field(default=256, metadata=_h("greedy tokens per validation answer."))
    eval_batch_size: int = field(default=4, metadata=_h("validation prompts generated together."))
    seed: int = field(default=42, metadata=_h("seed for data order, sampling and the LoRA init."))
    threads: int | None = field(default=None, metadata=_h(
        "torch CPU threads; None = the physical core count. Set it below the core count when "
        "another process needs a core: oversubscription makes a step 10-40x slower."))
    bf16: bool | None = field(default=None, metadata=_h("bf16 weights/compute; None = on a CUDA GPU only."))
    gradient_checkpointing: bool = field(default=True, metadata=_h(
        "recompute activations in the backward pass: ~30% more compute, a fraction of the memory "
        "(TRL's default too). Without it one group of 4 x 750 tokens of the 135M model peaked at "
        "12 GB of RAM on the CPU and was OOM-killed; turn it off only with memory to spare."))

    # ------------------------------------------------------------------------------------------
    def validate(self) -> None:
        """Raise InvalidInputError for a value that cannot work."""
        positive = ("num_generations", "prompts_per_step", "prompts_per_device", "max_prompt_length",
                    "max_completion_length", "retrieve_k", "lora_r", "lora_alpha", "eval_max_new_tokens",
                    "eval_batch_size")
        for name in positive:
            if getattr(self, name) < 1:
                raise InvalidInputError(f"training setting {name} must be at least 1.")
        if self.num_generations < 2:
            raise InvalidInputError("num_generations must be at least 2: GRPO compares completions in a group.")
        if self.prompts_per_step % self.prompts_per_device:
            raise InvalidInputError("prompts_per_step must be a multiple of prompts_per_device.")
        if self.beta < 0 or self.learning_rate <= 0 or self.temperature <= 0:
            raise InvalidInputError("beta must be >= 0, learning_rate and temperature > 0.")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError("threads must be at least 1.")
        if not self.lora_targets:
            raise InvalidInputError("lora_targets must name at least one module.")
        if self.eval_every < 0 or self.eval_max_questions < 0:
            raise InvalidInputError("eval_every and eval_max_questions must be >= 0.")

    def cpu_threads(self) -> int:
        """The thread count to give torch: `threads`, else the physical cores (at least 1)."""
        if self.threads:
            return self.threads
        try:
            import psutil

            return max(1, psutil.cpu_count(logical=False) or 1)
        except ImportError:  # pragma: no cover - psutil is a dependency
            return max(1, (os.cpu_count() or 2) // 2)

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "TrainConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise InvalidInputError(f"unknown training setting(s): {', '.join(unknown)}")
        values = dict(raw)
        if "lora_targets" in values:
            values["lora_targets"] = tuple(values["lora_targets"])
        try:
            config = cls(**values)
        except TypeError as exc:  # pragma: no cover - guarded by the name check
            raise InvalidInputError(f"bad training settings: {exc}") from exc
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "TrainConfig":
        """Defaults overridden by a JSON object file; InvalidInputError on a bad file."""
        p = Path(path)
        raw = read_json(p)
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{p}: expected a JSON object of training settings")
        return cls.from_dict(raw)

    def with_overrides(self, **changes) -> "TrainConfig":
        """A validated copy with some fields changed (None values are ignored)."""
        config = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        config.validate()
        return config

"""Supervised fine-tuning with LoRA: the warm start before GRPO (issue 16), for any agent role.

`train_sft(config, pairs, out_dir, val_pairs=...)` trains a PEFT LoRA adapter on pairs
`{"id", "messages", "completion"}`: the prompt is the app's chat prompt rendered by the base
model's chat template with the generation prompt (`add_generation_prompt=True`, exactly as
the GRPO trainers and llama.cpp render it for inference), the target is `completion` followed
by the template's end of the assistant turn (the model learns to stop). The loss is the mean
cross-entropy over completion tokens only: prompt and padding positions carry label -100.

A short loop of our own on torch + PEFT (no TRL): AdamW on the LoRA weights, micro-batches of
`batch_size` right-padded pairs, `grad_accum` of them per optimizer step, linear warm-up then a
constant rate, gradient clipping; the pairs shuffled per epoch with `seed`. The same LoRA
settings and conventions as the GRPO trainers (`training.grpo.loop.lora_config`, all attention
and MLP projections, exportable to GGUF), the same thread rule (`threads`; oversubscribed cores
make a step 10-40x slower), bf16 on a CUDA GPU and float32 on the CPU (`training.models`).

Validation: the mean completion-token loss on `val_pairs` (LoCoMo val conv-30 only; nothing
else is read) before the first step, every `eval_every` optimizer steps and after the last;
the lowest keeps `<out>/best`; `patience` validations without improvement stop the run.
`time_budget_s` counts training time only (validation excluded). A pair whose prompt is longer
than `max_prompt_tokens` is skipped and counted (the app's prompt is never cut: a builder
that wants shorter prompts builds them); a completion longer than `max_completion_tokens` is
cut (counted).

Writes `<out>/final` and `<out>/best` (PEFT adapters with `memory_r1_train.json`: role, base,
PROMPT_VERSION, ANSWER_SOURCES_VERSION, data digests, the config, validation losses; what
`memory-r1 export` reads), `log.csv` / `log.json` (loss per optimizer step, validation rows)
and `summary.json` (wall times: load, tokenise, train, validation, save; seconds per example).
Runs in the calling thread; raises UserError subclasses for bad settings or data.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from core.errors import InvalidInputError
from core.fileio import atomic_write_text, read_json

from training.config import LORA_TARGETS, TrainConfig
from training.grpo import loop as grpo_loop
from training.grpo.loop import lora_state

log = logging.getLogger(__name__)

ROLES = ("answer", "manager")
TRAIN_META = "memory_r1_train.json"  # training.export.gguf.TRAIN_META
CSV_FIELDS = ("step", "epoch", "elapsed_s", "train_s", "loss", "tokens", "grad_norm", "learning_rate",
              "val_loss", "val_tokens")


def _h(text: str) -> dict:
    return {"help": text}


@dataclass
class SFTConfig:
    """Supervised LoRA fine-tuning settings (ours; the paper's Memory-SFT baseline gives none)."""

    role: str = field(default="answer", metadata=_h("the agent the adapter is for: answer or manager."))
    base: str = field(default="embedded", metadata=_h(
        "base model: 'embedded' (SmolLM2-135M from its GGUF), a GGUF file or an HF folder."))
    epochs: float = field(default=3.0, metadata=_h("passes over the pairs (a fraction stops mid-pass)."))
    max_steps: int = field(default=-1, metadata=_h("stop after this many optimizer steps; -1 = use epochs."))
    learning_rate: float = field(default=2e-4, metadata=_h(
        "AdamW learning rate (LoRA SFT is usually run at 1e-4..3e-4)."))
    warmup_steps: int = field(default=0, metadata=_h("linear warm-up steps, then a constant rate."))
    weight_decay: float = field(default=0.0, metadata=_h("AdamW weight decay."))
    max_grad_norm: float = field(default=1.0, metadata=_h("gradient clipping (0 = none)."))
    batch_size: int = field(default=1, metadata=_h("pairs per forward/backward micro-batch."))
    grad_accum: int = field(default=8, metadata=_h("micro-batches per optimizer step."))
    max_prompt_tokens: int = field(default=4096, metadata=_h(
        "longest prompt in tokens; a longer pair is skipped (counted), never cut."))
    max_completion_tokens: int = field(default=512, metadata=_h(
        "longest target in tokens (end-of-turn included); a longer one is cut (counted)."))
    lora_r: int = field(default=16, metadata=_h("LoRA rank (as the GRPO trainers)."))
    lora_alpha: int = field(default=32, metadata=_h("LoRA alpha; scale = alpha / r."))
    lora_dropout: float = field(default=0.05, metadata=_h("LoRA dropout."))
    lora_targets: tuple[str, ...] = field(default=LORA_TARGETS, metadata=_h(
        "Linear modules with adapters: all attention and MLP projections (GGUF-exportable)."))
    eval_every: int = field(default=10, metadata=_h(
        "validation loss every N optimizer steps (and at the start and the end); 0 = start/end only."))
    patience: int = field(default=3, metadata=_h(
        "stop after this many validations without a lower loss; 0 = never stop early."))
    time_budget_s: float | None = field(default=None, metadata=_h(
        "stop after this many seconds of training (validation excluded); None = no limit."))
    max_val_pairs: int = field(default=0, metadata=_h(
        "validate on at most N pairs, evenly spaced over the validation set (the same ones every time; "
        "0 = all): a CPU run's validation cost."))
    seed: int = field(default=42, metadata=_h(
        "seed for the data order, the LoRA init and which empty manager pairs max_empty_share keeps."))
    max_empty_share: float = field(default=1.0, metadata=_h(
        "manager role: the largest share of the pairs (training and validation) whose target is the "
        "empty choice {\"keep\": []}; the other empty pairs are dropped (a seeded sample is kept; "
        "training.data.sft_manager.balance_empty). 1 = keep all (conv-26: 309 of 396 are empty)."))
    match_threshold: float = field(default=0.5, metadata=_h(
        "manager role: the token F1 from which a candidate matches a gold fact and is chosen "
        "(training.data.gold_facts.MATCH_F1 = 0.5; 0.4 gives 117 non-empty pairs on conv-26)."))
    threads: int | None = field(default=None, metadata=_h("torch CPU threads; None = the physical cores."))
    bf16: bool | None = field(default=None, metadata=_h("bf16 weights/compute; None = on a CUDA GPU only."))
    gradient_checkpointing: bool = field(default=True, metadata=_h(
        "recompute activations in the backward pass (less memory for ~3k-token prompts)."))

    def cpu_threads(self) -> int:
        """The thread count to give torch: the GRPO trainers' rule (`TrainConfig.cpu_threads`)."""
        return TrainConfig(threads=self.threads).cpu_threads()

    def validate(self) -> None:
        if self.role not in ROLES:
            raise InvalidInputError(f"role must be one of {', '.join(ROLES)}, not {self.role!r}")
        for name in ("batch_size", "grad_accum", "max_prompt_tokens", "max_completion_tokens", "lora_r",
                     "lora_alpha"):
            if getattr(self, name) < 1:
                raise InvalidInputError(f"SFT setting {name} must be at least 1.")
        if self.epochs <= 0 and self.max_steps < 1:
            raise InvalidInputError("epochs must be more than 0 (or max_steps at least 1).")
        if self.learning_rate <= 0:
            raise InvalidInputError("learning_rate must be more than 0.")
        if min(self.warmup_steps, self.eval_every, self.patience) < 0 or self.max_grad_norm < 0:
            raise InvalidInputError("warmup_steps, eval_every, patience and max_grad_norm must be >= 0.")
        if self.time_budget_s is not None and self.time_budget_s <= 0:
            raise InvalidInputError("time_budget_s must be more than 0 (or null).")
        if self.threads is not None and self.threads < 1:
            raise InvalidInputError("threads must be at least 1.")
        if not self.lora_targets:
            raise InvalidInputError("lora_targets must name at least one module.")
        if not 0.0 <= self.max_empty_share <= 1.0:
            raise InvalidInputError("max_empty_share must be between 0 and 1.")
        if not 0.0 < self.match_threshold <= 1.0:
            raise InvalidInputError("match_threshold must be more than 0 and at most 1.")

    def to_dict(self) -> dict:
        out = dataclasses.asdict(self)
        out["lora_targets"] = list(self.lora_targets)
        return out

    @classmethod
    def from_dict(cls, raw: dict) -> "SFTConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(raw) - names)
        if unknown:
            raise InvalidInputError(f"unknown SFT setting(s): {', '.join(unknown)}")
        values = dict(raw)
        if "lora_targets" in values:
            values["lora_targets"] = tuple(values["lora_targets"])
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> "SFTConfig":
        raw = read_json(Path(path))
        if not isinstance(raw, dict):
            raise InvalidInputError(f"{path}: expected a JSON object of SFT settings")
        return cls.from_dict(raw)

    def with_overrides(self, **changes) -> "SFTConfig":
        config = dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})
        config.validate()
        return config


# --------------------------------------------------------------------------- data


def data_digest(pairs: Sequence[dict]) -> str:
    """A short hash of the pairs' ids, prompts and targets (the adapter's metadata records it)."""
    h = hashlib.sha256()
    for p in pairs:
        h.update(json.dumps([p.get("id"), p["messages"], p["completion"]], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def check_pairs(pairs: Sequence[dict], what: str = "training") -> None:
    for n, p in enumerate(pairs):
        if not isinstance(p, dict) or not isinstance(p.get("messages"), list) or not p["messages"] \
                or not isinstance(p.get("completion"), str):
            raise InvalidInputError(f"{what} pair {n} needs non-empty 'messages' (a list) and 'completion' (text)")


def prompt_text(tokenizer, messages: list[dict]) -> str:
    """The prompt as the model sees it at inference: the chat template with the generation prompt."""
    return tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)


def target_text(tokenizer, messages: list[dict], completion: str) -> str:
    """`completion` plus the template's end of the assistant turn (rendered with the template
    itself, the text after the generation prompt, up to and including the end-of-turn token;
    the tokenizer's eos token when the template does not render the turn as a suffix)."""
    head = prompt_text(tokenizer, messages)
    full = tokenizer.apply_chat_template([*messages, {"role": "assistant", "content": completion}],
                                         tokenize=False)
    eos = tokenizer.eos_token or ""
    if full.startswith(head) and completion in full[len(head):]:
        rest = full[len(head):]
        if eos and eos in rest[rest.index(completion) + len(completion):]:
            cut = rest.index(eos, rest.index(completion) + len(completion)) + len(eos)
            return rest[:cut]
        return rest
    return completion + eos


@dataclass
class Encoded:
    ids: list[int]
    labels: list[int]  # -100 on prompt positions
    prompt_len: int


def encode_pair(tokenizer, pair: dict, config: SFTConfig) -> tuple[Encoded | None, str]:
    """(encoded, "") or (None, why) for a pair whose prompt does not fit `max_prompt_tokens`;
    why is "cut" when the completion was cut to `max_completion_tokens`."""
    p_ids = tokenizer(prompt_text(tokenizer, pair["messages"]), add_special_tokens=False)["input_ids"]
    if len(p_ids) > config.max_prompt_tokens:
        return None, "prompt_too_long"
    c_ids = tokenizer(target_text(tokenizer, pair["messages"], pair["completion"]),
                      add_special_tokens=False)["input_ids"]
    note = ""
    if len(c_ids) > config.max_completion_tokens:
        c_ids, note = c_ids[:config.max_completion_tokens], "completion_cut"
    return Encoded(list(p_ids) + list(c_ids), [-100] * len(p_ids) + list(c_ids), len(p_ids)), note


def encode_all(tokenizer, pairs: Sequence[dict], config: SFTConfig) -> tuple[list[Encoded], dict]:
    out: list[Encoded] = []
    counts: dict[str, float] = {"pairs": len(pairs), "prompt_too_long": 0, "completion_cut": 0}
    for p in pairs:
        enc, note = encode_pair(tokenizer, p, config)
        if note:
            counts[note] += 1
        if enc is not None:
            out.append(enc)
    counts["used"] = len(out)
    if out:
        counts["mean_prompt_tokens"] = round(sum(e.prompt_len for e in out) / len(out), 1)
        counts["mean_completion_tokens"] = round(sum(len(e.ids) - e.prompt_len for e in out) / len(out), 1)
    return out, counts


def collate(batch: Sequence[Encoded], pad_id: int, device):
    """Right-padded input_ids, attention_mask and labels (-100 on padding) tensors."""
    import torch

    width = max(len(e.ids) for e in batch)
    ids = torch.full((len(batch), width), pad_id, dtype=torch.long)
    labels = torch.full((len(batch), width), -100, dtype=torch.long)
    mask = torch.zeros((len(batch), width), dtype=torch.long)
    for i, e in enumerate(batch):
        n = len(e.ids)
        ids[i, :n] = torch.tensor(e.ids)
        labels[i, :n] = torch.tensor(e.labels)
        mask[i, :n] = 1
    return ids.to(device), mask.to(device), labels.to(device)


def token_loss(model, batch: Sequence[Encoded], pad_id: int, device):
    """(summed cross-entropy over the completion tokens, their count) of one micro-batch."""
    import torch.nn.functional as F

    ids, mask, labels = collate(batch, pad_id, device)
    width = ids.shape[1]
    # the LM head (a 49k-word vocabulary) only where a completion token is predicted: the last
    # `keep` positions cover every row's completion (right padding), not its prompt
    keep = width - min(e.prompt_len for e in batch) + 1
    logits = model(input_ids=ids, attention_mask=mask, use_cache=False, logits_to_keep=keep).logits
    if logits.shape[1] != keep:  # pragma: no cover - a model without logits_to_keep
        logits = logits[:, width - keep:, :]
    shift_logits = logits[:, :-1, :].float()
    shift_labels = labels[:, width - keep + 1:]
    keep = shift_labels != -100
    n = int(keep.sum())
    loss = F.cross_entropy(shift_logits[keep], shift_labels[keep], reduction="sum")
    return loss, n


def mean_loss(model, encoded: Sequence[Encoded], pad_id: int, device, batch_size: int) -> tuple[float, int]:
    """Mean completion-token loss over `encoded` (no gradient)."""
    import torch

    was = model.training
    model.eval()
    total, count = 0.0, 0
    try:
        with torch.no_grad():
            for i in range(0, len(encoded), batch_size):
                loss, n = token_loss(model, encoded[i:i + batch_size], pad_id, device)
                total += float(loss)
                count += n
    finally:
        model.train(was)
    return (total / count if count else float("nan")), count


# --------------------------------------------------------------------------- logs and saving


def write_logs(records: list[dict], out_dir: Path) -> None:
    """log.json and log.csv (this loop's CSV_FIELDS), as the GRPO loop writes them."""
    grpo_loop.write_logs(records, out_dir, CSV_FIELDS)


def save_adapter(model, path: Path, meta: dict) -> None:
    # save_embedding_layers=False: embeddings are never trained, and "auto" asks the Hub about the base
    model.save_pretrained(str(path), save_embedding_layers=False)
    atomic_write_text(path / TRAIN_META, json.dumps(meta, indent=2, default=str))


# --------------------------------------------------------------------------- the loop


def lora_config(config: SFTConfig):
    """PEFT's LoraConfig, as `training.grpo.loop.lora_config` builds it for GRPO."""
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none", task_type="CAUSAL_LM")


def _schedule(step: int, config: SFTConfig) -> float:
    if config.warmup_steps and step < config.warmup_steps:
        return config.learning_rate * (step + 1) / config.warmup_steps
    return config.learning_rate


def subset_evenly(items: list, n: int) -> list:
    """At most `n` of `items` (0 = all), evenly spaced and in order: the same subset every run.

    >>> subset_evenly(list(range(10)), 3), subset_evenly([1, 2], 0), subset_evenly([1, 2], 5)
    ([0, 3, 6], [1, 2], [1, 2])
    """
    if n <= 0 or len(items) <= n:
        return items
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def train_sft(config: SFTConfig, pairs: Sequence[dict], out_dir, *, val_pairs: Sequence[dict] | None = None,
              model=None, tokenizer=None, progress: bool = False, data_notes: dict | None = None) -> dict:
    """Train a LoRA adapter on `pairs` (see the module docstring); returns summary.json's dict
    (with "lora_before", "model" and "tokenizer" added for callers that check the weights). `model` and
    `tokenizer` override loading `config.base` (tests pass a tiny model). `data_notes` (how the
    pairs were built: counts, balancing) is kept in the metadata and summary.json as data.built."""
    import torch
    from peft import get_peft_model

    from core.agents.prompts import ANSWER_SOURCES_VERSION, PROMPT_VERSION

    from training.grpo import loop as grpo_loop

    t_start = time.perf_counter()
    config.validate()
    check_pairs(pairs)
    val_pairs = subset_evenly(list(val_pairs or []), config.max_val_pairs)
    check_pairs(val_pairs, "validation")
    if not pairs:
        raise InvalidInputError("no training pairs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = config.cpu_threads()
    torch.set_num_threads(threads)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    torch.manual_seed(config.seed)
    base_info: dict = {"kind": "given", "path": None, "sha256": None}
    if model is None:
        from training.models import load_base

        model, tokenizer, spec = load_base(config.base, bf16=config.bf16)
        base_info = grpo_loop.base_meta(spec)
    elif tokenizer is None:
        raise InvalidInputError("a model needs its tokenizer")
    on_gpu = torch.cuda.is_available()
    device = torch.device("cuda" if on_gpu else "cpu")
    use_bf16 = model.dtype == torch.bfloat16
    t_loaded = time.perf_counter()

    train_enc, train_counts = encode_all(tokenizer, pairs, config)
    val_enc, val_counts = encode_all(tokenizer, val_pairs, config)
    if not train_enc:
        raise InvalidInputError(f"no training pair fits max_prompt_tokens={config.max_prompt_tokens}")
    pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else tokenizer.eos_token_id
    t_encoded = time.perf_counter()

    model = get_peft_model(model, lora_config(config))
    model.to(device)
    if config.gradient_checkpointing:
        # transformers 5 renamed gradient_checkpointing_enable (the old name warns)
        if hasattr(model, "activation_checkpointing_enable"):
            model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        else:  # pragma: no cover - transformers 4
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=config.learning_rate, weight_decay=config.weight_decay)
    lora_before = lora_state(model)

    per_step = config.batch_size * config.grad_accum
    total_steps = config.max_steps if config.max_steps > 0 else max(1, math.ceil(len(train_enc) * config.epochs
                                                                                   / per_step))
    meta = {"role": config.role, "method": "sft", "base": base_info, "prompt_version": PROMPT_VERSION,
            "answer_sources_version": ANSWER_SOURCES_VERSION, "train_config": config.to_dict(),
            "data": {"train_digest": data_digest(pairs), "val_digest": data_digest(val_pairs) if val_pairs else None,
                     "train": train_counts, "val": val_counts, "built": data_notes},
            "device": device.type, "threads": threads, "bf16": use_bf16}
    records: list[dict] = []
    state: dict[str, Any] = {"best": None, "baseline": None, "since_best": 0, "eval_s": 0.0, "last_eval": -1}
    clock = time.perf_counter
    train_start = clock()

    def train_seconds() -> float:
        return clock() - train_start - state["eval_s"]

    def evaluate(step: int) -> None:
        t0 = clock()
        state["last_eval"] = step
        if val_enc:
            loss, n = mean_loss(model, val_enc, pad_id, device, config.batch_size)
            rec = {"step": step, "elapsed_s": round(clock() - train_start, 2), "val_loss": round(loss, 5),
                   "val_tokens": n}
            records.append(rec)
            log.info("step %d: validation loss %.4f (%d tokens)", step, loss, n)
            if state["baseline"] is None:
                state["baseline"] = rec
            if state["best"] is None or loss < state["best"]["val_loss"]:
                state["best"], state["since_best"] = rec, 0
                save_adapter(model, out / "best", dict(meta, step=step, validation={
                    "baseline": state["baseline"], "best": rec}))
            else:
                state["since_best"] += 1
            write_logs(records, out)
        state["eval_s"] += clock() - t0

    from tqdm.auto import tqdm

    rng = random.Random(config.seed)
    order: list[int] = []
    step, seen, stop_reason = 0, 0, "done"
    bar = tqdm(total=total_steps, desc="sft", disable=not progress)
    evaluate(0)
    try:
        while step < total_steps:
            optim.zero_grad(set_to_none=True)
            step_loss, step_tokens = 0.0, 0
            micro = []
            for _ in range(config.grad_accum):
                batch = []
                for _ in range(config.batch_size):
                    if not order:
                        order = list(range(len(train_enc)))
                        rng.shuffle(order)
                    batch.append(train_enc[order.pop()])
                micro.append(batch)
            n_tokens = sum(len(e.ids) - e.prompt_len for b in micro for e in b)
            for batch in micro:
                loss, n = token_loss(model, batch, pad_id, device)
                (loss / max(1, n_tokens)).backward()  # the step's mean over all its completion tokens
                step_loss += float(loss.detach())
                step_tokens += n
                seen += len(batch)
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm) if config.max_grad_norm \
                else torch.tensor(0.0)
            for g in optim.param_groups:
                g["lr"] = _schedule(step, config)
            optim.step()
            step += 1
            bar.update(1)
            records.append({"step": step, "epoch": round(seen / len(train_enc), 4),
                            "elapsed_s": round(clock() - train_start, 2), "train_s": round(train_seconds(), 2),
                            "loss": round(step_loss / max(1, step_tokens), 5), "tokens": step_tokens,
                            "grad_norm": round(float(norm), 5), "learning_rate": optim.param_groups[0]["lr"]})
            write_logs(records, out)
            if config.eval_every and step % config.eval_every == 0 and step < total_steps:
                evaluate(step)
                if config.patience and state["since_best"] >= config.patience:
                    stop_reason = "patience"
                    break
            if config.time_budget_s and train_seconds() > config.time_budget_s:
                stop_reason = "time_budget"
                log.info("time budget reached after %d steps: stopping", step)
                break
    finally:
        bar.close()
    train_s = train_seconds()
    if state["last_eval"] != step:
        evaluate(step)
    t_saved0 = clock()
    validation = {"baseline": state["baseline"], "best": state["best"]}
    save_adapter(model, out / "final", dict(meta, step=step, validation=validation))
    if state["best"] is not None:  # refresh best/'s metadata with the run's outcome
        best_meta = json.loads((out / "best" / TRAIN_META).read_text(encoding="utf-8"))
        best_meta["validation"] = validation
        atomic_write_text(out / "best" / TRAIN_META, json.dumps(best_meta, indent=2, default=str))
    write_logs(records, out)
    end = clock()
    losses = [r["loss"] for r in records if r.get("loss") is not None]
    summary = {
        **meta, "steps": step, "examples_seen": seen, "stop": stop_reason,
        "first_loss": losses[0] if losses else None, "last_loss": losses[-1] if losses else None,
        "validation": validation, "best_dir": str(out / "best") if state["best"] else None,
        "final_dir": str(out / "final"),
        "seconds": {"load": round(t_loaded - t_start, 2), "tokenise": round(t_encoded - t_loaded, 2),
                    "train": round(train_s, 2), "validation": round(state["eval_s"], 2),
                    "save": round(end - t_saved0, 2), "total": round(end - t_start, 2)},
        "seconds_per_example": round(train_s / seen, 3) if seen else None,
    }
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
    return dict(summary, lora_before=lora_before, model=model, tokenizer=tokenizer)

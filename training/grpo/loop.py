"""GRPO + LoRA training of the Answer Agent (method.md §2) on TRL's GRPOTrainer and PEFT.

`train_answer_agent(config, train_examples, val_examples, base=..., out_dir=...)`:
1. sets torch's CPU thread count deliberately (`TrainConfig.threads`; oversubscribed cores
   make a step 10-40x slower), picks bf16 on a CUDA GPU and float32 on the CPU;
2. fits each example's prompt (the app's answer prompt, `core.agents.prompts.answer_messages`, over
   the top `retrieve_k` memories) into `max_prompt_length` tokens, dropping the lowest-ranked
   memories first, as the app drops what does not fit its context;
3. runs GRPO (group-normalised advantages, KL to the frozen base = the adapter disabled) with
   the EM reward (`training.rewards.answer`);
4. every `eval_every` steps (and before the first and after the last) scores validation F1
   with greedy decoding and keeps the best adapter in `<out>/best` (the last is `<out>/final`);
5. logs reward, validation F1 and completion length per step to `<out>/log.csv` and
   `<out>/log.json`, and draws `<out>/curve.png`; tqdm progress bars throughout.

The same entry point serves one CPU, one GPU, or several GPUs under
`accelerate launch --config_file training/accelerate/multi_gpu.yaml` (data-parallel: each
process samples its share of the groups; validation and saving run on the main process
while the others wait).

Departures from the paper: LoRA instead of full fine-tuning; validation-based adapter
selection; optional F1/format reward terms (off by default). Runs in the calling thread; raises
UserError subclasses for bad inputs, anything else is a bug.
"""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import random
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Sequence

from core.errors import InvalidInputError

from training.config import TrainConfig

log = logging.getLogger(__name__)

CSV_FIELDS = ("step", "epoch", "elapsed_s", "train_s", "reward", "reward_std", "frac_reward_zero_std",
              "completion_length", "clipped_ratio", "kl", "loss", "learning_rate", "val_f1",
              "val_bleu1", "val_em", "val_completion_length")


@dataclass
class TrainResult:
    out_dir: Path
    best_dir: Path
    final_dir: Path
    baseline: dict  # validation scores before the first step
    best: dict  # best validation scores (and their step)
    steps: int
    seconds: float
    records: list[dict] = field(default_factory=list)
    lora_before: dict = field(default_factory=dict)  # LoRA tensors at step 0 (for checks)
    model: Any = None  # the trained PeftModel


# --------------------------------------------------------------------------- runtime


def set_threads(config: TrainConfig) -> int:
    """Give torch exactly `config.cpu_threads()` intra-op threads (process-wide)."""
    import torch

    n = config.cpu_threads()
    torch.set_num_threads(n)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    return n


def score_only_completions_on_cpu() -> bool:
    """Make TRL score only the completion tokens on a CPU. Returns True when patched.

    TRL's fused LM head scores EVERY position (prompt included) on devices without Triton, to
    keep tile shapes fixed for Neuron compilation; on a CPU that multiplies the LM-head work
    (49k-word vocabulary) by ~prompt/completion length (30x with 60 memories). The compact path
    gives the same values at the scored positions. Patches the private name
    `trl.trainer.utils._use_triton` (only the compact/full decision reads it there; the kernel
    choice reads its own module's copy); a TRL without that name is left alone.
    """
    try:
        from trl.trainer import utils as trl_utils
    except ImportError:  # pragma: no cover
        return False
    orig = getattr(trl_utils, "_use_triton", None)
    if orig is None:
        return False
    if getattr(orig, "_memory_r1_patch", False):
        return True

    def compact(device) -> bool:
        return device.type == "cpu" or orig(device)

    compact._memory_r1_patch = True
    trl_utils._use_triton = compact
    return True


# --------------------------------------------------------------------------- prompts


def example_messages(example: dict, n_memories: int) -> list[dict]:
    """The app's answer prompt for one example with its top `n_memories` memories."""
    from core.agents.answer import AnswerAgent
    from core.agents.prompts import answer_messages
    from core.types import Memory

    mems = [Memory(i, m["text"], speaker=m.get("speaker"), observed_at=m.get("observed_at"))
            for i, m in enumerate(example["memories"][:n_memories])]
    speakers = list(example.get("speakers") or dict.fromkeys(m.speaker for m in mems))
    return answer_messages(example["question"], AnswerAgent.group(mems, speakers))


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def fit_prompt(example: dict, tokenizer, *, k: int, max_tokens: int) -> tuple[list[dict], int]:
    """(messages, memories kept): the most memories (<= k) whose prompt fits `max_tokens`."""
    n = min(k, len(example["memories"]))
    messages = example_messages(example, n)
    if prompt_tokens(tokenizer, messages) <= max_tokens:
        return messages, n
    lo, hi = 0, n - 1  # binary search the largest n that fits
    best = example_messages(example, 0)
    kept = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        msgs = example_messages(example, mid)
        if prompt_tokens(tokenizer, msgs) <= max_tokens:
            best, kept, lo = msgs, mid, mid + 1
        else:
            hi = mid - 1
    return best, kept


def prepare_rows(examples: Sequence[dict], tokenizer, config: TrainConfig) -> list[dict]:
    """Trainer rows: {"prompt": messages, "answer": gold text, "question", "category", "n_memories"}."""
    rows = []
    for ex in examples:
        messages, kept = fit_prompt(ex, tokenizer, k=config.retrieve_k, max_tokens=config.max_prompt_length)
        rows.append({"prompt": messages, "answer": str(ex["answer"]), "question": ex["question"],
                     "category": int(ex.get("category", 0)), "n_memories": kept})
    if not rows:
        raise InvalidInputError("no training examples")
    return rows


def eval_subset(examples: Sequence[dict], config: TrainConfig) -> list[dict]:
    """The validation questions used: all, or a fixed seeded subset of `eval_max_questions`."""
    examples = list(examples)
    n = config.eval_max_questions
    if not n or n >= len(examples):
        return examples
    idx = sorted(random.Random(config.seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


# --------------------------------------------------------------------------- validation


def generate_answers(model, tokenizer, prompts: Sequence[list[dict]], *, max_new_tokens: int,
                     batch_size: int, progress: bool = False) -> list[str]:
    """Greedy completions for chat prompts (left-padded batches), in order."""
    import torch
    from tqdm.auto import tqdm

    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    outs: list[str] = []
    batches = range(0, len(prompts), batch_size)
    try:
        for start in tqdm(batches, desc="validation", disable=not progress, leave=False):
            texts = [tokenizer.apply_chat_template(p, add_generation_prompt=True, tokenize=False)
                     for p in prompts[start:start + batch_size]]
            enc = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
            with torch.no_grad():
                gen = model.generate(**enc, max_new_tokens=max_new_tokens, do_sample=False, temperature=None,
                                     top_p=None, top_k=None, pad_token_id=tokenizer.pad_token_id)
            new = gen[:, enc["input_ids"].shape[1]:]
            outs.extend(tokenizer.batch_decode(new, skip_special_tokens=True))
    finally:
        model.train(was_training)
    return outs


def validate(model, tokenizer, rows: Sequence[dict], config: TrainConfig, *, progress: bool = False) -> dict:
    """Mean F1 / BLEU-1 / EM of greedy answers over prepared validation rows."""
    from training.eval.metrics import bleu1, exact_match, f1_score, mean
    from training.rewards.answer import answer_of

    if not rows:
        return {"f1": None, "bleu1": None, "em": None, "n": 0}
    texts = generate_answers(model, tokenizer, [r["prompt"] for r in rows],
                             max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size,
                             progress=progress)
    answers = [answer_of(t) for t in texts]
    golds = [r["answer"] for r in rows]
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return {"f1": mean(f1_score(a, g) for a, g in zip(answers, golds)),
            "bleu1": mean(bleu1(a, g) for a, g in zip(answers, golds)),
            "em": mean(exact_match(a, g) for a, g in zip(answers, golds)),
            "completion_length": mean(lengths), "n": len(rows),
            "samples": [{"question": r["question"], "gold": g, "answer": a}
                        for r, g, a in list(zip(rows, golds, answers))[:5]]}


# --------------------------------------------------------------------------- logs


def write_logs(records: list[dict], out_dir: Path) -> None:
    """log.json (all keys) and log.csv (CSV_FIELDS), rewritten whole (atomic replace)."""
    tmp = out_dir / ".log.json.part"
    tmp.write_text(json.dumps(records, indent=1), encoding="utf-8")
    os.replace(tmp, out_dir / "log.json")
    tmp = out_dir / ".log.csv.part"
    with open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=CSV_FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k, "") for k in CSV_FIELDS})
    os.replace(tmp, out_dir / "log.csv")


def plot_curve(records: list[dict], png: Path, title: str = "Answer Agent GRPO training") -> Path | None:
    """Reward (and its 10-step moving mean), validation F1 and completion length per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("reward") is not None]
    evals = [r for r in records if r.get("val_f1") is not None]
    if not steps and not evals:
        return None
    fig, (ax1, ax2) = plt.subplots(2, 1, figsize=(8, 6.5), sharex=True)
    if steps:
        xs = [r["step"] for r in steps]
        ys = [r["reward"] for r in steps]
        ax1.plot(xs, ys, ".", alpha=0.4, label="reward (weighted sum, mean over the step's completions)")
        em = [r.get("rewards/em_reward/mean") for r in steps]
        if any(e is not None for e in em) and em != ys:
            ax1.plot(xs, [e if e is not None else float("nan") for e in em], "x", alpha=0.6, label="EM reward")
        win = max(1, min(10, len(ys)))
        ma = [sum(ys[max(0, i - win + 1):i + 1]) / len(ys[max(0, i - win + 1):i + 1]) for i in range(len(ys))]
        ax1.plot(xs, ma, "-", label=f"reward, {win}-step moving mean")
        ax2.plot(xs, [r.get("completion_length") for r in steps], "-", color="gray",
                 label="completion length (tokens)")
    if evals:
        ax1.plot([r["step"] for r in evals], [r["val_f1"] for r in evals], "o-", label="validation F1")
    ax1.set_ylabel("score")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("tokens")
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


# --------------------------------------------------------------------------- callbacks


def _lora_state(model) -> dict:
    return {k: v.detach().float().cpu().clone() for k, v in model.named_parameters() if "lora_" in k}


def _make_callback(ctx: "_Run"):
    from transformers import TrainerCallback

    class MemoryR1Callback(TrainerCallback):
        """Per-step logs, periodic validation with best-adapter keeping, time budget."""

        def on_train_begin(self, args, state, control, **kw):
            ctx.started = time.perf_counter()
            ctx.lora_before = _lora_state(ctx.unwrapped())
            ctx.evaluate(0)

        def on_log(self, args, state, control, logs=None, **kw):
            if not ctx.is_main or not logs or "reward" not in logs:
                return
            ctx.add_step(state, logs)

        def on_step_end(self, args, state, control, **kw):
            every = ctx.config.eval_every
            if every and state.global_step % every == 0 and state.global_step < state.max_steps:
                ctx.evaluate(state.global_step)
            budget = ctx.time_budget_s
            if budget and ctx.training_seconds() > budget:
                log.info("time budget reached after %d steps: stopping", state.global_step)
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kw):
            if ctx.last_eval_step != state.global_step:
                ctx.evaluate(state.global_step)

    return MemoryR1Callback()


class _Run:
    """State shared by the callback: the trainer, logs, best score."""

    def __init__(self, config: TrainConfig, out_dir: Path, val_rows: list[dict], tokenizer, meta: dict,
                 progress: bool, time_budget_s: float | None) -> None:
        self.config = config
        self.out_dir = out_dir
        self.val_rows = val_rows
        self.tokenizer = tokenizer
        self.meta = meta
        self.progress = progress
        self.time_budget_s = time_budget_s
        self.trainer = None
        self.records: list[dict] = []
        self.baseline: dict = {}
        self.best: dict = {}
        self.last_eval_step = -1
        self.started = time.perf_counter()
        self.eval_seconds = 0.0
        self.lora_before: dict = {}

    def training_seconds(self) -> float:
        """Wall time since the start, validation excluded (what the time budget counts)."""
        return time.perf_counter() - self.started - self.eval_seconds

    @property
    def is_main(self) -> bool:
        return self.trainer is None or self.trainer.accelerator.is_main_process

    def unwrapped(self):
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def add_step(self, state, logs: dict) -> None:
        rec = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch),
               "elapsed_s": round(time.perf_counter() - self.started, 2),
               "train_s": round(self.training_seconds(), 2), "reward": logs.get("reward"), "reward_std": logs.get("reward_std"),
               "frac_reward_zero_std": logs.get("frac_reward_zero_std"),
               "completion_length": logs.get("completions/mean_length"),
               "clipped_ratio": logs.get("completions/clipped_ratio"), "kl": logs.get("kl"),
               "loss": logs.get("loss"), "learning_rate": logs.get("learning_rate")}
        rec.update({k: v for k, v in logs.items() if k.startswith("rewards/")})
        self.records.append(rec)
        write_logs(self.records, self.out_dir)

    def evaluate(self, step: int) -> None:
        t_start = time.perf_counter()
        try:
            self._evaluate(step)
        finally:
            self.eval_seconds += time.perf_counter() - t_start

    def score(self, model) -> dict:
        """Validation scores of `model` on `val_rows` (override for another validator)."""
        return validate(model, self.tokenizer, self.val_rows, self.config, progress=self.progress)

    def eval_record(self, step: int, scores: dict) -> dict:
        """The log row of one validation (override to log more of `scores`)."""
        return {"step": step, "elapsed_s": round(time.perf_counter() - self.started, 2),
                "val_f1": scores["f1"], "val_bleu1": scores.get("bleu1"), "val_em": scores.get("em"),
                "val_completion_length": scores.get("completion_length"),
                "val_samples": scores.get("samples", [])}

    def _evaluate(self, step: int) -> None:
        self.last_eval_step = step
        acc = self.trainer.accelerator
        if acc.is_main_process and self.val_rows:
            model = self.unwrapped()
            t0 = time.perf_counter()
            scores = self.score(model)
            scores["seconds"] = round(time.perf_counter() - t0, 1)
            scores["step"] = step
            log.info("step %d: validation F1 %.4f (%d questions, %.0fs)", step, scores["f1"], scores["n"],
                     scores["seconds"])
            self.records.append(self.eval_record(step, scores))
            write_logs(self.records, self.out_dir)
            if step == 0:
                self.baseline = scores
            if not self.best or scores["f1"] > self.best["f1"]:
                self.best = scores
                self.save(model, self.out_dir / "best", step, scores)
        acc.wait_for_everyone()

    def save(self, model, path: Path, step: int, scores: dict | None) -> None:
        # save_embedding_layers=False: we never train embeddings, and "auto" asks the Hub about the base
        model.save_pretrained(str(path), save_embedding_layers=False)
        meta = dict(self.meta, step=step,
                    validation={"baseline": _public(self.baseline), "this": _public(scores or {}),
                                "best": _public(self.best)})
        (path / "memory_r1_train.json").write_text(json.dumps(meta, indent=2, default=str), encoding="utf-8")


def _public(scores: dict) -> dict:
    return {k: v for k, v in scores.items() if k not in ("samples", "val_samples")}


# --------------------------------------------------------------------------- entry point


def grpo_args(config: TrainConfig, out_dir: Path, *, num_processes: int, use_bf16: bool, on_gpu: bool,
              reward_weights: list[float], progress: bool):
    """TRL's GRPOConfig for our TrainConfig. Batches count completions in TRL: one micro-batch
    is `prompts_per_device` groups of `num_generations`."""
    import dataclasses

    from trl import GRPOConfig

    # transformers 5 renamed gradient_checkpointing (TRL defaults it to True: set it explicitly)
    names = {f.name for f in dataclasses.fields(GRPOConfig)}
    ckpt = "activation_checkpointing" if "activation_checkpointing" in names else "gradient_checkpointing"
    per_device = config.prompts_per_device * config.num_generations
    accum = max(1, config.prompts_per_step // (config.prompts_per_device * num_processes))
    return GRPOConfig(
        output_dir=str(out_dir / "trainer"), per_device_train_batch_size=per_device,
        gradient_accumulation_steps=accum, num_generations=config.num_generations,
        max_completion_length=config.max_completion_length, temperature=config.temperature,
        beta=config.beta, epsilon=config.epsilon, loss_type=config.loss_type, scale_rewards="group",
        learning_rate=config.learning_rate, num_train_epochs=config.num_train_epochs,
        max_steps=config.max_steps, warmup_steps=config.warmup_ratio, max_grad_norm=config.max_grad_norm,
        reward_weights=reward_weights, logging_steps=1, save_strategy="no", report_to="none",
        seed=config.seed, bf16=use_bf16, fp16=False, use_cpu=not on_gpu,
        **{ckpt: config.gradient_checkpointing}, disable_tqdm=not progress,
        remove_unused_columns=False, dataloader_num_workers=0, log_completions=False,
    )


def lora_config(config: TrainConfig):
    from peft import LoraConfig

    return LoraConfig(r=config.lora_r, lora_alpha=config.lora_alpha, lora_dropout=config.lora_dropout,
                      target_modules=list(config.lora_targets), bias="none", task_type="CAUSAL_LM")


def train_answer_agent(config: TrainConfig, train_examples: Sequence[dict], val_examples: Sequence[dict], *,
                       out_dir: str | os.PathLike, base: str | os.PathLike = "embedded", model=None,
                       tokenizer=None, base_meta: dict | None = None,
                       reward_funcs: Sequence[Callable] | None = None, progress: bool = True,
                       time_budget_s: float | None = None) -> TrainResult:
    """Train a LoRA adapter with GRPO; see the module docstring. `model`/`tokenizer` override
    loading `base` (tests pass a tiny model); `reward_funcs` override the EM reward (weights 1)."""
    import torch
    from accelerate import PartialState
    from trl import GRPOTrainer

    from training.rewards.answer import reward_functions

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = set_threads(config)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        score_only_completions_on_cpu()
    state = PartialState()
    if model is None:
        from training.models import load_base

        model, tokenizer, spec = load_base(base, bf16=config.bf16)
        base_meta = base_meta or _base_meta(spec)
    use_bf16 = model.dtype == torch.bfloat16
    if reward_funcs is None:
        funcs, weights = reward_functions(config.reward_f1_weight, config.reward_format_weight)
    else:
        funcs, weights = list(reward_funcs), [1.0] * len(reward_funcs)
    train_rows = prepare_rows(train_examples, tokenizer, config)
    val_rows = prepare_rows(eval_subset(val_examples, config), tokenizer, config) if val_examples else []
    log.info("GRPO: %d training prompts (%.1f memories kept on average), %d validation, %d threads, %s, %s",
             len(train_rows), sum(r["n_memories"] for r in train_rows) / len(train_rows), len(val_rows),
             threads, "GPU" if on_gpu else "CPU", "bf16" if use_bf16 else "fp32")
    from datasets import Dataset

    args = grpo_args(config, out, num_processes=state.num_processes, use_bf16=use_bf16, on_gpu=on_gpu,
                     reward_weights=weights, progress=progress)
    meta = {"base": base_meta or {}, "train_config": config.to_dict(),
            "train_examples": len(train_rows), "val_examples": len(val_rows),
            "device": "cuda" if on_gpu else "cpu", "num_processes": state.num_processes, "threads": threads}
    ctx = _Run(config, out, val_rows, tokenizer, meta, progress, time_budget_s)
    trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(train_rows),
                          processing_class=tokenizer, peft_config=lora_config(config),
                          callbacks=[_make_callback(ctx)])
    ctx.trainer = trainer
    t0 = time.perf_counter()
    trainer.train()
    seconds = time.perf_counter() - t0
    final_dir = out / "final"
    if trainer.accelerator.is_main_process:
        ctx.meta["seconds"] = round(seconds, 1)
        ctx.save(ctx.unwrapped(), final_dir, trainer.state.global_step, ctx.records[-1] if ctx.records else None)
        if ctx.best:
            # refresh best/'s meta with the final picture (baseline, best, timing)
            meta_path = out / "best" / "memory_r1_train.json"
            best_meta = json.loads(meta_path.read_text(encoding="utf-8"))
            best_meta["seconds"] = ctx.meta["seconds"]
            meta_path.write_text(json.dumps(best_meta, indent=2, default=str), encoding="utf-8")
        write_logs(ctx.records, out)
        plot_curve(ctx.records, out / "curve.png")
        summary = {"baseline": _public(ctx.baseline), "best": _public(ctx.best),
                   "steps": trainer.state.global_step, "seconds": round(seconds, 1), **meta}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()
    best_dir = out / "best" if (out / "best").is_dir() else final_dir  # no validation: the last one
    return TrainResult(out, best_dir, final_dir, _public(ctx.baseline), _public(ctx.best),
                       trainer.state.global_step, seconds, ctx.records, ctx.lora_before, trainer.model)


def _base_meta(spec) -> dict:
    from core.fileio import sha256_file

    path = Path(spec.path)
    return {"kind": spec.kind, "path": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def steps_per_epoch(n_examples: int, config: TrainConfig) -> int:
    """Optimizer steps in one pass over `n_examples` questions.

    >>> steps_per_epoch(152, TrainConfig())
    10
    """
    return max(1, math.ceil(n_examples / config.prompts_per_step))

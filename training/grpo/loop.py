"""The GRPO + LoRA training loop both trainers share (method.md §2), on TRL's GRPOTrainer and PEFT.

A trainer (`training.grpo.answer` for the Answer Agent, `training.grpo.manager` for the Memory
Manager) supplies its trainer rows, reward functions and a validator; this module does the rest:

1. `start(config, out_dir, ...)`: sets torch's CPU thread count deliberately
   (`TrainConfig.threads`; oversubscribed cores make a step 10-40x slower), picks bf16 on a CUDA
   GPU and float32 on the CPU, loads the base model unless one is given and, with
   `init_adapter`, a PEFT LoRA folder (a supervised warm start, `train sft`, or an earlier GRPO
   run) as the TRAINABLE adapter, after `check_init_adapter` has matched its meta (base model,
   role, PROMPT_VERSION) against this run;
2. `train(run, setup, rows, reward_funcs, weights)`: runs GRPO (group-normalised advantages, a
   KL penalty of weight beta) with a `Run` attached as a TRL callback. The KL reference is the
   run's STARTING policy. From a fresh LoRA (zero-initialised B) that is the base, computed
   with the adapter disabled. From a warm start TRL (>= 1.x, `GRPOTrainer` given a PeftModel
   and beta != 0) adds a frozen copy of the loaded adapter named "ref" and computes the
   reference log-probs through it, so the penalty pulls towards the SFT start, not the
   untrained base: GRPO refines the warm start instead of being pulled back from it (with the
   paper's beta 0.001 the pull is weak either way). Only the "default" adapter is trained,
   kept (`lora_state`) and saved;
3. every `eval_every` steps (and before the first and after the last) `Run.evaluate` scores the
   adapter with the trainer's validator (its "f1" picks the best adapter, kept in `<out>/best`),
   timed apart from training: `time_budget_s` counts training time only;
4. per-step logs in `<out>/log.csv` and `<out>/log.json`; `finish` saves `<out>/final`, refreshes
   best/'s metadata, and writes `<out>/curve.png` (reward, the share of tied groups, lengths) and
   `<out>/summary.json`, whose "signal" (`signal_summary`) says how much of the run had no
   gradient: TRL's `frac_reward_zero_std` (groups whose rewards all tie) averaged over steps,
   the share of steps where every group tied, and the reward's mean/first/last; "reward" names
   the reward functions and weights used.

Hooks a trainer overrides on `Run` (or passes in): `validator` / `score(model)` (the validation
scores: a dict with at least "f1" and "n"), `eval_record(step, scores)` (the log row of one
validation), `step_record(state, logs)` (the log row of one optimizer step), `describe(scores)`
(the log line of one validation).

The same loop serves one CPU, one GPU, or several GPUs under
`accelerate launch --config_file training/accelerate/multi_gpu.yaml` (data-parallel: each
process samples its share of the groups; validation and saving run on the main process while
the others wait). Runs in the calling thread; raises UserError subclasses for bad inputs,
anything else is a bug.
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
from core.fileio import atomic_path, atomic_write_text

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
    summary: dict = field(default_factory=dict)  # what summary.json holds


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


# --------------------------------------------------------------------------- rows and validation


def prompt_tokens(tokenizer, messages: list[dict]) -> int:
    ids = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def eval_subset(examples: Sequence[dict], config: TrainConfig) -> list[dict]:
    """The validation questions used: all, or a fixed seeded subset of `eval_max_questions`."""
    examples = list(examples)
    n = config.eval_max_questions
    if not n or n >= len(examples):
        return examples
    idx = sorted(random.Random(config.seed).sample(range(len(examples)), n))
    return [examples[i] for i in idx]


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


# --------------------------------------------------------------------------- logs


def write_logs(records: list[dict], out_dir: Path, fields: Sequence[str] = CSV_FIELDS) -> None:
    """log.json (all keys) and log.csv (`fields`), rewritten whole (atomic replace); the SFT
    loop writes its logs with its own fields."""
    atomic_write_text(out_dir / "log.json", json.dumps(records, indent=1, default=str))
    with atomic_path(out_dir / "log.csv") as tmp, open(tmp, "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, fieldnames=list(fields), extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: r.get(k, "") for k in fields})


def plot_curve(records: list[dict], png: Path, title: str = "Answer Agent GRPO training") -> Path | None:
    """Reward (and its 10-step moving mean) and validation F1; the share of groups whose rewards
    all tie (`frac_reward_zero_std`: no gradient from them); completion length; per step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r for r in records if r.get("reward") is not None]
    evals = [r for r in records if r.get("val_f1") is not None]
    if not steps and not evals:
        return None
    fig, (ax1, ax3, ax2) = plt.subplots(3, 1, figsize=(8, 8.5), sharex=True)
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
        zs = [_num(r.get("frac_reward_zero_std")) for r in steps]
        ax3.plot(xs, zs, ".-", color="tab:red", label="share of groups with all rewards tied (no gradient)")
        ax2.plot(xs, [r.get("completion_length") for r in steps], "-", color="gray",
                 label="completion length (tokens)")
    if evals:
        ax1.plot([r["step"] for r in evals], [r["val_f1"] for r in evals], "o-", label="validation F1")
    ax1.set_ylabel("score")
    ax1.legend(loc="best", fontsize=8)
    ax1.grid(alpha=0.3)
    ax3.set_ylabel("frac_reward_zero_std")
    ax3.set_ylim(-0.05, 1.05)
    ax3.legend(loc="best", fontsize=8)
    ax3.grid(alpha=0.3)
    ax2.set_xlabel("optimizer step")
    ax2.set_ylabel("tokens")
    ax2.legend(loc="best", fontsize=8)
    ax2.grid(alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
    return png


def _num(value) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return float("nan")


def signal_summary(records: Sequence[dict]) -> dict:
    """How much of a run could learn: over the optimizer steps' records, the mean of TRL's
    `frac_reward_zero_std` (the share of a step's groups whose rewards all tie, which give no
    gradient), the share of steps where EVERY group tied (a step that changes nothing but
    through the KL term), and the reward's mean, first and last.

    >>> s = signal_summary([{"reward": 0.0, "frac_reward_zero_std": 1.0}, {"val_f1": 0.1},
    ...                     {"reward": 0.5, "frac_reward_zero_std": 0.5}])
    >>> s["steps"], s["frac_reward_zero_std_mean"], s["steps_all_tied"], s["reward_first"], s["reward_last"]
    (2, 0.75, 0.5, 0.0, 0.5)
    """
    steps = [r for r in records if r.get("reward") is not None]
    rewards = [_num(r["reward"]) for r in steps]
    zero = [z for z in (_num(r.get("frac_reward_zero_std")) for r in steps) if not math.isnan(z)]
    return {"steps": len(steps),
            "frac_reward_zero_std_mean": round(sum(zero) / len(zero), 4) if zero else None,
            "steps_all_tied": round(sum(1 for z in zero if z >= 1.0 - 1e-9) / len(zero), 4) if zero else None,
            "reward_mean": round(sum(rewards) / len(rewards), 4) if rewards else None,
            "reward_first": round(rewards[0], 4) if rewards else None,
            "reward_last": round(rewards[-1], 4) if rewards else None}


def reward_description(funcs: Sequence[Callable], weights: Sequence[float]) -> dict:
    """What summary.json says of the reward: the functions, their weights, and a formula.

    >>> from training.rewards.answer import em_reward, f1_reward
    >>> reward_description([em_reward, f1_reward], [1.0, 0.5])["formula"]
    '1 x em_reward + 0.5 x f1_reward'
    """
    names = [getattr(f, "__name__", type(f).__name__) for f in funcs]
    return {"functions": names, "weights": [float(w) for w in weights],
            "formula": " + ".join(f"{float(w):g} x {n}" for n, w in zip(names, weights)),
            "paper": names == ["em_reward"] or names == ["manager_em"]}


def describe_signal(summary: dict) -> str:
    """The closing line about the run's signal (printed by the CLI)."""
    sig = summary.get("signal") or {}
    reward = (summary.get("reward") or {}).get("formula", "?")

    def f(v, pct=False):
        return "n/a" if v is None else (f"{100 * v:.0f}%" if pct else f"{v:.4f}")

    return (f"reward {reward}: mean {f(sig.get('reward_mean'))}, first {f(sig.get('reward_first'))}, "
            f"last {f(sig.get('reward_last'))}; tied groups (no gradient) "
            f"{f(sig.get('frac_reward_zero_std_mean'), True)} on average, "
            f"all groups tied in {f(sig.get('steps_all_tied'), True)} of {sig.get('steps', 0)} steps")


# --------------------------------------------------------------------------- the run and its callback


def lora_state(model) -> dict:
    """Copies (float32, CPU) of the LoRA tensors of `model` (TRL's frozen "ref" copy of a
    warm-start adapter left out)."""
    return {k: v.detach().float().cpu().clone() for k, v in model.named_parameters()
            if "lora_" in k and ".ref." not in k}


def public_scores(scores: dict) -> dict:
    """`scores` without the sample answers (what metadata and summaries record)."""
    return {k: v for k, v in scores.items() if k not in ("samples", "val_samples")}


def make_callback(run: "Run"):
    """The TRL callback that drives `run`: per-step logs, periodic validation with
    best-adapter keeping, the time budget (validation time excluded)."""
    from transformers import TrainerCallback

    class MemoryR1Callback(TrainerCallback):
        def on_train_begin(self, args, state, control, **kw):
            run.started = run.clock()
            run.lora_before = lora_state(run.unwrapped())
            run.evaluate(0)

        def on_log(self, args, state, control, logs=None, **kw):
            if not run.is_main or not logs or "reward" not in logs:
                return
            run.add_step(state, logs)

        def on_step_end(self, args, state, control, **kw):
            every = run.config.eval_every
            if every and state.global_step % every == 0 and state.global_step < state.max_steps:
                run.evaluate(state.global_step)
            if run.over_budget():
                log.info("time budget reached after %d steps: stopping", state.global_step)
                control.should_training_stop = True

        def on_train_end(self, args, state, control, **kw):
            if run.last_eval_step != state.global_step:
                run.evaluate(state.global_step)

    return MemoryR1Callback()


class Run:
    """One training run's state, shared with its callback: the trainer, logs, best scores.

    `validator(model) -> dict` scores the adapter on `val_rows` (greedy; the dict holds at
    least "f1", what picks the best adapter, and "n"); subclasses may override `score`,
    `eval_record`, `step_record` and `describe` instead. `clock` (seconds, monotonic) is
    `time.perf_counter` unless a test passes a fake. Called on the trainer's thread.
    """

    def __init__(self, config: TrainConfig, out_dir: Path, val_rows: list[dict], tokenizer, meta: dict, *,
                 progress: bool = False, time_budget_s: float | None = None,
                 validator: Callable[[Any], dict] | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.val_rows = val_rows
        self.tokenizer = tokenizer
        self.meta = meta
        self.progress = progress
        self.time_budget_s = time_budget_s
        self.validator = validator
        self.clock = clock
        self.trainer = None
        self.records: list[dict] = []
        self.baseline: dict = {}
        self.best: dict = {}
        self.last_eval_step = -1
        self.started = clock()
        self.eval_seconds = 0.0
        self.lora_before: dict = {}

    # --- hooks ---------------------------------------------------------------------------------

    def score(self, model) -> dict:
        """Validation scores of `model` on `val_rows` (default: the `validator` given)."""
        if self.validator is None:
            raise NotImplementedError("Run needs a validator or a score() override")
        return self.validator(model)

    def eval_record(self, step: int, scores: dict) -> dict:
        """The log row of one validation (override to log more of `scores`)."""
        return {"step": step, "elapsed_s": self.elapsed(),
                "val_f1": scores["f1"], "val_bleu1": scores.get("bleu1"), "val_em": scores.get("em"),
                "val_completion_length": scores.get("completion_length"),
                "val_samples": scores.get("samples", [])}

    def step_record(self, state, logs: dict) -> dict:
        """The log row of one optimizer step from TRL's `logs` (override to log more)."""
        rec = {"step": state.global_step, "epoch": logs.get("epoch", state.epoch),
               "elapsed_s": self.elapsed(), "train_s": round(self.training_seconds(), 2),
               "reward": logs.get("reward"), "reward_std": logs.get("reward_std"),
               "frac_reward_zero_std": logs.get("frac_reward_zero_std"),
               "completion_length": logs.get("completions/mean_length"),
               "clipped_ratio": logs.get("completions/clipped_ratio"), "kl": logs.get("kl"),
               "loss": logs.get("loss"), "learning_rate": logs.get("learning_rate")}
        rec.update({k: v for k, v in logs.items() if k.startswith("rewards/")})
        return rec

    def describe(self, scores: dict) -> str:
        """The log line of one validation (after "step N: ")."""
        return f"validation F1 {scores['f1']:.4f} ({scores['n']} questions, {scores['seconds']:.0f}s)"

    # --- the loop's side -----------------------------------------------------------------------

    def elapsed(self) -> float:
        return round(self.clock() - self.started, 2)

    def training_seconds(self) -> float:
        """Wall time since the start, validation excluded (what the time budget counts)."""
        return self.clock() - self.started - self.eval_seconds

    def over_budget(self) -> bool:
        return bool(self.time_budget_s) and self.training_seconds() > self.time_budget_s

    @property
    def is_main(self) -> bool:
        return self.trainer is None or self.trainer.accelerator.is_main_process

    def unwrapped(self):
        return self.trainer.accelerator.unwrap_model(self.trainer.model)

    def add_step(self, state, logs: dict) -> None:
        self.records.append(self.step_record(state, logs))
        write_logs(self.records, self.out_dir)

    def evaluate(self, step: int) -> None:
        """Validate at `step` (main process), keep the best adapter; the time it takes is not
        counted as training time."""
        t_start = self.clock()
        try:
            self._evaluate(step)
        finally:
            self.eval_seconds += self.clock() - t_start

    def _evaluate(self, step: int) -> None:
        self.last_eval_step = step
        acc = self.trainer.accelerator
        if acc.is_main_process and self.val_rows:
            model = self.unwrapped()
            t0 = self.clock()
            scores = self.score(model)
            scores["seconds"] = round(self.clock() - t0, 1)
            scores["step"] = step
            log.info("step %d: %s", step, self.describe(scores))
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
        # selected_adapters: the trained adapter only, not TRL's frozen "ref" copy of a warm start
        model.save_pretrained(str(path), save_embedding_layers=False, selected_adapters=["default"])
        meta = dict(self.meta, step=step,
                    validation={"baseline": public_scores(self.baseline), "this": public_scores(scores or {}),
                                "best": public_scores(self.best)})
        atomic_write_text(path / "memory_r1_train.json", json.dumps(meta, indent=2, default=str))


# --------------------------------------------------------------------------- warm start


ADAPTER_META_FILES = ("meta.json", "memory_r1_train.json")  # `train sft`'s, then this loop's own
ADAPTER_WEIGHT_FILES = ("adapter_model.safetensors", "adapter_model.bin")


def adapter_meta(path: str | os.PathLike) -> tuple[dict, Path]:
    """(meta, its file) of a PEFT adapter folder: `meta.json` (the SFT trainer's) or
    `memory_r1_train.json` (this loop's). InvalidInputError when the folder is no adapter or
    has no readable meta."""
    folder = Path(path)
    if not folder.is_dir():
        raise InvalidInputError(f"--init-adapter {folder}: no such folder (give a PEFT adapter folder, "
                                "e.g. <train out>/best)")
    if not (folder / "adapter_config.json").is_file():
        raise InvalidInputError(f"--init-adapter {folder}: not a PEFT adapter folder (no adapter_config.json)")
    for name in ADAPTER_META_FILES:
        f = folder / name
        if f.is_file():
            try:
                meta = json.loads(f.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise InvalidInputError(f"--init-adapter {f}: unreadable meta ({exc})") from None
            if not isinstance(meta, dict):
                raise InvalidInputError(f"--init-adapter {f}: the meta is not a JSON object")
            return meta, f
    raise InvalidInputError(f"--init-adapter {folder}: no {' or '.join(ADAPTER_META_FILES)}, so its base model, "
                            "role and prompt version cannot be checked")


def adapter_digest(folder: Path) -> str:
    """sha256 of the adapter's weights file."""
    from core.fileio import sha256_file

    for name in ADAPTER_WEIGHT_FILES:
        if (folder / name).is_file():
            return sha256_file(folder / name)
    raise InvalidInputError(f"--init-adapter {folder}: no {' or '.join(ADAPTER_WEIGHT_FILES)}")


def _base_mismatch(theirs, ours: dict) -> str | None:
    """Why the adapter's recorded base is not this run's base (None when they agree). A
    sha256 on both sides decides; else the paths (and kinds) must be equal."""
    if isinstance(theirs, str):
        theirs = {"path": theirs}
    if not isinstance(theirs, dict) or not (theirs.get("sha256") or theirs.get("path")):
        return "the adapter's meta records no base model"
    if theirs.get("sha256") and ours.get("sha256"):
        if theirs["sha256"] != ours["sha256"]:
            return f"base sha256 {str(theirs['sha256'])[:12]}... is not this run's {str(ours['sha256'])[:12]}..."
        return None
    if theirs.get("kind") and ours.get("kind") and theirs["kind"] != ours["kind"]:
        return f"base kind {theirs['kind']!r} is not this run's {ours['kind']!r}"
    if theirs.get("path") and ours.get("path") and str(theirs["path"]) != str(ours["path"]):
        return f"base {theirs['path']} is not this run's {ours['path']}"
    return None


def check_init_adapter(path: str | os.PathLike, *, role: str, base_info: dict) -> dict:
    """Check a warm-start adapter against this run; returns what the run records of it
    ({"path", "sha256", "meta_file", "role", "prompt_version", "base"}).

    Refused (InvalidInputError, nothing loaded): no adapter folder or meta; another role (a
    meta without "role" is an answer adapter, as `memory-r1 export` reads it); a
    "prompt_version" other than `core.agents.prompts.PROMPT_VERSION` (or none: the prompts it
    learnt cannot be known); a base model other than this run's (`_base_mismatch`)."""
    from core.agents.prompts import PROMPT_VERSION

    meta, meta_file = adapter_meta(path)
    folder = Path(path)
    theirs_role = meta.get("role") or "answer"
    if theirs_role != role:
        article = "an" if str(theirs_role)[:1].lower() in "aeiou" else "a"
        raise InvalidInputError(f"--init-adapter {folder}: {article} {theirs_role} adapter cannot start "
                                f"`train {role}`")
    version = meta.get("prompt_version") or meta.get("PROMPT_VERSION")
    if version != PROMPT_VERSION:
        raise InvalidInputError(f"--init-adapter {folder}: trained on prompts {version or '(not recorded)'}, "
                                f"the app's are {PROMPT_VERSION}; retrain it on the current prompts")
    why = _base_mismatch(meta.get("base"), base_info or {})
    if why:
        raise InvalidInputError(f"--init-adapter {folder}: {why}; give --base the model it was trained on")
    return {"path": str(folder.resolve()), "sha256": adapter_digest(folder), "meta_file": meta_file.name,
            "role": theirs_role, "prompt_version": version, "base": meta.get("base")}


def load_init_adapter(model, path: str | os.PathLike):
    """`model` with the adapter at `path` loaded TRAINABLE (PeftModel, is_trainable=True)."""
    from peft import PeftModel

    return PeftModel.from_pretrained(model, str(path), is_trainable=True)


# --------------------------------------------------------------------------- entry points


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


@dataclass
class Setup:
    """What `start` prepared: the model to train, its tokenizer and the runtime facts."""

    model: Any
    tokenizer: Any
    base_meta: dict
    threads: int
    on_gpu: bool
    use_bf16: bool
    num_processes: int
    init_adapter: dict | None = None  # `check_init_adapter`'s record of the warm start, if any

    def meta(self) -> dict:
        """The runtime part of the metadata sidecar (and the warm start, when there is one)."""
        out: dict = {"device": "cuda" if self.on_gpu else "cpu", "num_processes": self.num_processes,
                     "threads": self.threads}
        if self.init_adapter is not None:
            out["init_adapter"] = self.init_adapter
        return out


def base_meta(spec) -> dict:
    """The metadata of a loaded base model (`training.models.load_base`'s spec)."""
    from core.fileio import sha256_file

    path = Path(spec.path)
    return {"kind": spec.kind, "path": str(path), "sha256": sha256_file(path) if path.is_file() else None}


def start(config: TrainConfig, out_dir: Path, *, base: str | os.PathLike = "embedded", model=None,
          tokenizer=None, base_info: dict | None = None, init_adapter: str | os.PathLike | None = None,
          role: str = "answer") -> Setup:
    """Validate `config`, create `out_dir`, set the threads and the TRL patch, load `base`
    unless `model`/`tokenizer` are given (tests pass a tiny model); with `init_adapter`, check
    it (`check_init_adapter`, for `role`) and load it as the trainable adapter: the config's
    LoRA settings are then the adapter's own, not `lora_*`."""
    import torch
    from accelerate import PartialState

    config.validate()
    Path(out_dir).mkdir(parents=True, exist_ok=True)
    threads = set_threads(config)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        score_only_completions_on_cpu()
    state = PartialState()
    if model is None:
        from training.models import load_base

        if init_adapter is not None:
            adapter_meta(init_adapter)  # a bad folder is said before the base loads
        model, tokenizer, spec = load_base(base, bf16=config.bf16)
        base_info = base_info or base_meta(spec)
    warm = None
    if init_adapter is not None:
        warm = check_init_adapter(init_adapter, role=role, base_info=base_info or {})
        use_bf16 = model.dtype == torch.bfloat16
        model = load_init_adapter(model, init_adapter)
        log.info("warm start from %s (sha256 %s...)", warm["path"], warm["sha256"][:12])
        return Setup(model, tokenizer, base_info or {}, threads, on_gpu, use_bf16, state.num_processes, warm)
    return Setup(model, tokenizer, base_info or {}, threads, on_gpu, model.dtype == torch.bfloat16,
                 state.num_processes)


def train(run: Run, setup: Setup, train_rows: list[dict], reward_funcs: Sequence[Callable],
          weights: Sequence[float]) -> float:
    """Run GRPO on `train_rows` with `run` as the callback; returns the wall seconds."""
    from datasets import Dataset
    from trl import GRPOTrainer

    args = grpo_args(run.config, run.out_dir, num_processes=setup.num_processes, use_bf16=setup.use_bf16,
                     on_gpu=setup.on_gpu, reward_weights=list(weights), progress=run.progress)
    # a warm start is already a PeftModel with its trainable adapter: no second LoRA on top
    peft_config = None if setup.init_adapter is not None else lora_config(run.config)
    trainer = GRPOTrainer(model=setup.model, reward_funcs=list(reward_funcs), args=args,
                          train_dataset=Dataset.from_list(train_rows), processing_class=setup.tokenizer,
                          peft_config=peft_config, callbacks=[make_callback(run)])
    run.trainer = trainer
    t0 = time.perf_counter()
    trainer.train()
    return time.perf_counter() - t0


def finish(run: Run, seconds: float, *, title: str, extra_meta: dict | None = None) -> dict:
    """Save final/, refresh best/'s metadata (`seconds` and `extra_meta`), write the logs, the
    curve and summary.json (main process; the others wait). Returns the summary (with its
    "signal", `signal_summary`), which is also logged (`describe_signal`)."""
    trainer, out = run.trainer, run.out_dir
    summary: dict = {}
    if trainer.accelerator.is_main_process:
        extra = dict(seconds=round(seconds, 1), **(extra_meta or {}))
        run.meta.update(extra)
        run.save(run.unwrapped(), out / "final", trainer.state.global_step, run.records[-1] if run.records else None)
        meta_path = out / "best" / "memory_r1_train.json"
        if run.best and meta_path.is_file():
            best_meta = json.loads(meta_path.read_text(encoding="utf-8"))
            best_meta.update(extra)
            atomic_write_text(meta_path, json.dumps(best_meta, indent=2, default=str))
        write_logs(run.records, out)
        plot_curve(run.records, out / "curve.png", title)
        summary = {"baseline": public_scores(run.baseline), "best": public_scores(run.best),
                   "steps": trainer.state.global_step, "seconds": round(seconds, 1),
                   "seconds_per_step": round(run.training_seconds() / max(1, trainer.state.global_step), 2),
                   "signal": signal_summary(run.records), **run.meta}
        atomic_write_text(out / "summary.json", json.dumps(summary, indent=2, default=str))
        log.info("%s", describe_signal(summary))
    trainer.accelerator.wait_for_everyone()
    return summary


def steps_per_epoch(n_examples: int, config: TrainConfig) -> int:
    """Optimizer steps in one pass over `n_examples` questions.

    >>> steps_per_epoch(152, TrainConfig())
    10
    """
    return max(1, math.ceil(n_examples / config.prompts_per_step))

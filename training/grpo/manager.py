"""GRPO + LoRA training of the Memory Manager (method.md §2, issue 7) on the Answer Agent
trainer's building blocks (`training.grpo.loop`): same TrainConfig fields, LoRA config, TRL
arguments, CPU thread handling, per-step logs, validation with best-adapter keeping, curve and
summary, and the same adapter layout, so `memory-r1 export` turns it into a GGUF LoRA adapter.

`train_manager(config, train_states, val_states, out_dir=..., base=..., answer_adapter=...)`:
1. rows = the app's decision prompt of every trainable state (`ManagerState.prompt`, exactly
   what `MemoryManager.decide` sends) and its `state_id`; prompts longer than
   `max_prompt_length` tokens are left out (logged);
2. GRPO samples `num_generations` decisions per state at temperature 1.0, UNCONSTRAINED (the
   app decodes with a JSON-schema grammar; the paper's reward gives 0 to unparseable output,
   so the policy has to learn the format too);
3. reward = `training.rewards.manager` with a frozen Answer Agent running in-process through
   llama.cpp (the embedded model, or `answer_adapter`, a GGUF LoRA of a trained answerer);
4. validation (every `eval_every` steps, before the first and after the last): greedy decisions
   on the validation states, scored by the same frozen answerer; "f1" (what picks the best
   adapter) is the answerer's mean token F1 over the banks the decisions produce, "em" the
   mean reward; plus the share of valid outputs and the op counts.

Departures (ours, besides LoRA): validation-based adapter selection; `reward_format_weight`
here rewards a VALID decision (parseable, ids of the prompt) instead of the answer marker;
`lenient_parse` scores the valid complete items of a broken output instead of 0.
Runs in the calling thread; raises UserError subclasses for bad input.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from core.errors import InvalidInputError
from core.types import OP_EVENTS

from training.grpo import loop as grpo
from training.config import TrainConfig
from training.data.manager import ManagerState
from training.rewards.manager import FrozenAnswerer, InvalidCompletion, ManagerRewardFunc, check_completion

log = logging.getLogger(__name__)

STATE_SELECTIONS = ("decision", "with-facts")


def _h(text: str) -> dict:
    return {"help": text}


@dataclass
class ManagerTrainConfig(TrainConfig):
    """TrainConfig plus the frozen answerer's settings. `retrieve_k` is the answerer's k (60 =
    30 per speaker), `reward_f1_weight` adds its token F1 to the EM reward (paper: 0)."""

    eval_max_new_tokens: int = field(default=1024, metadata=_h(
        "greedy tokens per validation decision (a decision over 20 memories + 10 facts is long)."))
    answer_max_tokens: int = field(default=160, metadata=_h(
        "greedy tokens of the frozen answerer per question (its selection list + the answer); "
        "short to keep the reward affordable (ours; the app allows 1024)."))
    answer_n_ctx: int = field(default=4096, metadata=_h("the frozen answerer's context size."))
    lenient_parse: bool = field(default=False, metadata=_h(
        "score the valid complete operations of a broken sampled output instead of 0 (ours; the "
        "paper gives 0). The app decodes with a JSON grammar; a 135M model sampled without it "
        "breaks the JSON in ~11 of 12 samples, which leaves GRPO nothing to compare."))
    states: str = field(default="decision", metadata=_h(
        "which states to train on: 'decision' (the app calls the model there) or 'with-facts' "
        "(also those where nothing related is shown and the app ADDs without a call)."))

    def validate(self) -> None:
        super().validate()
        if self.answer_max_tokens < 1 or self.answer_n_ctx < 256:
            raise InvalidInputError("answer_max_tokens must be >= 1 and answer_n_ctx >= 256.")
        if self.states not in STATE_SELECTIONS:
            raise InvalidInputError(f"states must be one of {', '.join(STATE_SELECTIONS)}.")


def select_states(states: Sequence[ManagerState], selection: str = "decision") -> list[ManagerState]:
    """The states trained on: decision states, optionally also 'no-related' ones; never those
    without facts or linked questions."""
    kinds = {"decision"} if selection == "decision" else {"decision", "no-related"}
    return [s for s in states if s.kind in kinds and s.questions and s.decision_facts]


def prepare_rows(states: Sequence[ManagerState], tokenizer, config: ManagerTrainConfig) -> list[dict]:
    """Trainer rows {"prompt", "state_id"}; states whose prompt is too long are left out."""
    rows = []
    for s in states:
        n = grpo.prompt_tokens(tokenizer, s.prompt)
        if n > config.max_prompt_length:
            log.warning("state %s left out: prompt of %d tokens > max_prompt_length %d", s.id, n,
                        config.max_prompt_length)
            continue
        rows.append({"prompt": s.prompt, "state_id": s.id})
    return rows


def valid_reward_func(states: Sequence[ManagerState]) -> Callable:
    """1.0 for a valid decision (parseable, only ids of the prompt), else 0.0."""
    by_id = {s.id: s for s in states}

    def manager_valid(completions=None, state_id=None, **_):
        from training.rewards.answer import completion_text

        out = []
        for c, sid in zip(completions, state_id):
            try:
                check_completion(completion_text(c), by_id[sid])
                out.append(1.0)
            except InvalidCompletion:
                out.append(0.0)
        return out

    return manager_valid


# --------------------------------------------------------------------------- validation


def validate_manager(model, tokenizer, rows: Sequence[dict], states: dict, config: ManagerTrainConfig,
                     answerer: FrozenAnswerer, *, progress: bool = False) -> dict:
    """Greedy decisions on validation rows, scored by the frozen answerer (see the docstring)."""
    from training.eval.metrics import bleu1, mean

    if not rows:
        return {"f1": None, "bleu1": None, "em": None, "n": 0}
    texts = grpo.generate_answers(model, tokenizer, [r["prompt"] for r in rows],
                                  max_new_tokens=config.eval_max_new_tokens, batch_size=config.eval_batch_size,
                                  progress=progress)
    details = [answerer.score(t, states[r["state_id"]]) for t, r in zip(texts, rows)]
    golds = [[q["answer"] for q in states[r["state_id"]].questions] for r in rows]
    f1s = [mean(d.f1) if d.f1 else 0.0 for d in details]
    bleus = [mean(bleu1(a, g) for a, g in zip(d.answers, gs)) if d.answers else 0.0
             for d, gs in zip(details, golds)]
    ops = {e: sum(d.ops.get(e, 0) for d in details) for e in OP_EVENTS}
    lengths = [len(tokenizer(t, add_special_tokens=False)["input_ids"]) for t in texts]
    return {"f1": mean(f1s), "bleu1": mean(bleus), "em": mean(d.reward for d in details),
            "valid": mean(1.0 if d.valid else 0.0 for d in details), "ops": ops,
            "completion_length": mean(lengths), "n": len(rows),
            "samples": [{"state": r["state_id"], "decision": t[:400], "valid": d.valid, "reason": d.reason,
                         "answers": d.answers} for r, t, d in list(zip(rows, texts, details))[:5]]}


class _ManagerRun(grpo._Run):
    """The answer trainer's run state with the manager's validation and extra logged metrics."""

    def __init__(self, *args, states: dict, answerer: FrozenAnswerer, **kw) -> None:
        super().__init__(*args, **kw)
        self.states = states
        self.answerer = answerer

    def add_step(self, state, logs: dict) -> None:
        super().add_step(state, logs)
        self.records[-1].update({k: v for k, v in logs.items() if k.startswith("manager/")})
        grpo.write_logs(self.records, self.out_dir)

    def evaluate(self, step: int) -> None:
        """As `grpo._Run.evaluate`, with `validate_manager` (the hook that would remove this
        copy: a `validator` argument to `_Run`)."""
        self.last_eval_step = step
        acc = self.trainer.accelerator
        if acc.is_main_process and self.val_rows:
            model = self.unwrapped()
            t0 = time.perf_counter()
            scores = validate_manager(model, self.tokenizer, self.val_rows, self.states, self.config,
                                      self.answerer, progress=self.progress)
            scores["seconds"] = round(time.perf_counter() - t0, 1)
            scores["step"] = step
            log.info("step %d: validation F1 %.4f EM %.4f valid %.2f ops %s (%d states, %.0fs)", step,
                     scores["f1"], scores["em"], scores["valid"], scores["ops"], scores["n"], scores["seconds"])
            self.records.append({"step": step, "elapsed_s": round(time.perf_counter() - self.started, 2),
                                 "val_f1": scores["f1"], "val_bleu1": scores["bleu1"], "val_em": scores["em"],
                                 "val_completion_length": scores["completion_length"],
                                 "val_valid": scores["valid"], "val_ops": scores["ops"],
                                 "val_samples": scores["samples"]})
            grpo.write_logs(self.records, self.out_dir)
            if step == 0:
                self.baseline = scores
            if not self.best or scores["f1"] > self.best["f1"]:
                self.best = scores
                self.save(model, self.out_dir / "best", step, scores)
        acc.wait_for_everyone()


# --------------------------------------------------------------------------- entry point


@dataclass
class ManagerTrainResult(grpo.TrainResult):
    reward_stats: dict = field(default_factory=dict)


def _answerer_for(config: ManagerTrainConfig, answer_adapter, embedder) -> FrozenAnswerer:
    return FrozenAnswerer.load(adapter=answer_adapter, n_ctx=config.answer_n_ctx, threads=config.cpu_threads(),
                               embedder=embedder, k=config.retrieve_k, max_tokens=config.answer_max_tokens,
                               f1_weight=config.reward_f1_weight, lenient=config.lenient_parse)


def train_manager(config: ManagerTrainConfig, train_states: Sequence[ManagerState],
                  val_states: Sequence[ManagerState] = (), *, out_dir: str | os.PathLike,
                  base: str | os.PathLike = "embedded", answerer: FrozenAnswerer | None = None,
                  answer_adapter: str | None = None, embedder=None, model=None, tokenizer=None,
                  base_meta: dict | None = None, extra_reward_funcs: Sequence[Callable] = (),
                  progress: bool = True, time_budget_s: float | None = None) -> ManagerTrainResult:
    """Train a LoRA adapter for the Memory Manager with GRPO; see the module docstring.

    `answerer` overrides loading the frozen answerer (tests pass one over a FakeBackend);
    `model`/`tokenizer` override loading `base` (tests pass a tiny model); `extra_reward_funcs`
    are added with weight 1 (tests use one with spread on random text).
    """
    import torch
    from accelerate import PartialState
    from datasets import Dataset
    from trl import GRPOTrainer

    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    threads = grpo.set_threads(config)
    on_gpu = torch.cuda.is_available()
    if not on_gpu:
        grpo.score_only_completions_on_cpu()
    state = PartialState()
    if model is None:
        from training.models import load_base

        model, tokenizer, spec = load_base(base, bf16=config.bf16)
        base_meta = base_meta or grpo._base_meta(spec)
    use_bf16 = model.dtype == torch.bfloat16
    train = select_states(train_states, config.states)
    val = select_states(val_states, config.states)
    train_rows = prepare_rows(train, tokenizer, config)
    if not train_rows:
        raise InvalidInputError("no trainable manager states (none with a decision call, linked questions "
                                "and a prompt that fits max_prompt_length)")
    val_rows = prepare_rows(grpo.eval_subset(val, config), tokenizer, config) if val else []
    owned = answerer is None
    if owned:
        answerer = _answerer_for(config, answer_adapter, embedder)
    by_id = {s.id: s for s in list(train) + list(val)}
    funcs: list[Callable] = [ManagerRewardFunc(train, answerer)]
    weights = [1.0]
    if config.reward_format_weight:
        funcs.append(valid_reward_func(train))
        weights.append(float(config.reward_format_weight))
    for f in extra_reward_funcs:
        funcs.append(f)
        weights.append(1.0)
    log.info("manager GRPO: %d training states (of %d), %d validation, %d threads, %s", len(train_rows),
             len(train_states), len(val_rows), threads, "GPU" if on_gpu else "CPU")
    args = grpo.grpo_args(config, out, num_processes=state.num_processes, use_bf16=use_bf16, on_gpu=on_gpu,
                          reward_weights=weights, progress=progress)
    meta = {"role": "manager", "base": base_meta or {}, "train_config": config.to_dict(),
            "train_states": len(train_rows), "val_states": len(val_rows),
            "answerer": {"name": getattr(answerer.backend, "name", "?"), "adapter": answer_adapter,
                         "k": answerer.k, "max_tokens": answerer.params.max_tokens},
            "device": "cuda" if on_gpu else "cpu", "num_processes": state.num_processes, "threads": threads}
    ctx = _ManagerRun(config, out, val_rows, tokenizer, meta, progress, time_budget_s, states=by_id,
                      answerer=answerer)
    try:
        trainer = GRPOTrainer(model=model, reward_funcs=funcs, args=args, train_dataset=Dataset.from_list(train_rows),
                              processing_class=tokenizer, peft_config=grpo.lora_config(config),
                              callbacks=[grpo._make_callback(ctx)])
        ctx.trainer = trainer
        t0 = time.perf_counter()
        trainer.train()
        seconds = time.perf_counter() - t0
        _finish(ctx, trainer, out, seconds, answerer)
    finally:
        if owned:
            answerer.close()
    return ManagerTrainResult(out, out / "best", out / "final", grpo._public(ctx.baseline), grpo._public(ctx.best),
                              trainer.state.global_step, seconds, ctx.records, ctx.lora_before, trainer.model,
                              reward_stats=_reward_stats(answerer))


def _reward_stats(answerer: FrozenAnswerer) -> dict:
    s = dict(answerer.stats)
    s.update({f"{k}_s": round(v, 2) for k, v in answerer.seconds.items()})
    return s


def _finish(ctx: _ManagerRun, trainer, out: Path, seconds: float, answerer: FrozenAnswerer) -> None:
    """Save final/, refresh best/'s meta, write logs, curve and summary (main process)."""
    if trainer.accelerator.is_main_process:
        ctx.meta["seconds"] = round(seconds, 1)
        ctx.meta["reward_stats"] = _reward_stats(answerer)
        ctx.save(ctx.unwrapped(), out / "final", trainer.state.global_step, ctx.records[-1] if ctx.records else None)
        meta_path = out / "best" / "memory_r1_train.json"
        if ctx.best and meta_path.is_file():
            best_meta = json.loads(meta_path.read_text(encoding="utf-8"))
            best_meta.update(seconds=ctx.meta["seconds"], reward_stats=ctx.meta["reward_stats"])
            meta_path.write_text(json.dumps(best_meta, indent=2, default=str), encoding="utf-8")
        grpo.write_logs(ctx.records, out)
        grpo.plot_curve(ctx.records, out / "curve.png", "Memory Manager GRPO training")
        summary = {"baseline": grpo._public(ctx.baseline), "best": grpo._public(ctx.best),
                   "steps": trainer.state.global_step, "seconds": round(seconds, 1), **ctx.meta}
        (out / "summary.json").write_text(json.dumps(summary, indent=2, default=str), encoding="utf-8")
    trainer.accelerator.wait_for_everyone()


def config_from(path: str | None, **overrides) -> ManagerTrainConfig:
    """ManagerTrainConfig from a JSON file (or defaults) with CLI overrides (None ignored)."""
    config = ManagerTrainConfig.from_file(path) if path else ManagerTrainConfig()
    return config.with_overrides(**overrides)


def fields_help() -> dict[str, str]:
    return {f.name: f.metadata.get("help", "") for f in dataclasses.fields(ManagerTrainConfig)}

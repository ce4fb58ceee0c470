"""GRPO + LoRA training of the Memory Manager (method.md §2) on the shared loop
(`training.grpo.loop`), as the Answer Agent's trainer: same TrainConfig fields, LoRA config,
TRL arguments, CPU thread handling, per-step logs, validation with best-adapter keeping (its
time not counted by `time_budget_s`), curve and summary, and the same adapter layout, so
`memory-r1 export` turns it into a GGUF LoRA adapter. What is the manager's own: the rows, the
reward, and the validator (`ManagerRun`'s hooks).

`train_manager(config, train_states, val_states, out_dir=..., base=..., answer_adapter=...)`:
1. rows = the app's decision prompt of every trainable state (`ManagerState.prompt`, exactly
   what `MemoryManager.decide` sends) and its `state_id`; prompts longer than
   `max_prompt_length` tokens are left out (logged);
2. GRPO samples `num_generations` decisions per state at temperature 1.0, UNCONSTRAINED (the
   app decodes with a JSON-schema grammar; the paper's reward gives 0 to unparseable output,
   so the policy has to learn the format too);
3. reward = `training.rewards.manager` with a frozen Answer Agent running in-process through
   llama.cpp (the embedded model, or `answer_adapter`, a GGUF LoRA of a trained answerer), in
   the app's answer prompt (source quotes; `answer_sources` false: the paper's);
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

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from core.errors import InvalidInputError
from core.types import OP_EVENTS

from training.grpo import loop
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
        n = loop.prompt_tokens(tokenizer, s.prompt)
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
    texts = loop.generate_answers(model, tokenizer, [r["prompt"] for r in rows],
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


class ManagerRun(loop.Run):
    """The loop's run with the manager's validator (`validate_manager` over `states` with the
    frozen `answerer`) and its extra logged metrics (validity, op counts, `manager/*`)."""

    def __init__(self, *args, states: dict, answerer: FrozenAnswerer, **kw) -> None:
        super().__init__(*args, **kw)
        self.states = states
        self.answerer = answerer

    def score(self, model) -> dict:
        return validate_manager(model, self.tokenizer, self.val_rows, self.states, self.config, self.answerer,
                                progress=self.progress)

    def eval_record(self, step: int, scores: dict) -> dict:
        rec = super().eval_record(step, scores)
        samples = rec.pop("val_samples")
        rec.update(val_valid=scores["valid"], val_ops=scores["ops"], val_samples=samples)
        return rec

    def step_record(self, state, logs: dict) -> dict:
        rec = super().step_record(state, logs)
        rec.update({k: v for k, v in logs.items() if k.startswith("manager/")})
        return rec

    def describe(self, scores: dict) -> str:
        return (f"validation F1 {scores['f1']:.4f} EM {scores['em']:.4f} valid {scores['valid']:.2f} "
                f"ops {scores['ops']} ({scores['n']} states, {scores['seconds']:.0f}s)")


# --------------------------------------------------------------------------- entry point


@dataclass
class ManagerTrainResult(loop.TrainResult):
    reward_stats: dict = field(default_factory=dict)


def _answerer_for(config: ManagerTrainConfig, answer_adapter, embedder) -> FrozenAnswerer:
    return FrozenAnswerer.load(adapter=answer_adapter, n_ctx=config.answer_n_ctx, threads=config.cpu_threads(),
                               embedder=embedder, k=config.retrieve_k, max_tokens=config.answer_max_tokens,
                               f1_weight=config.reward_f1_weight, lenient=config.lenient_parse,
                               sources=config.answer_sources)


def train_manager(config: ManagerTrainConfig, train_states: Sequence[ManagerState],
                  val_states: Sequence[ManagerState] = (), *, out_dir: str | os.PathLike,
                  base: str | os.PathLike = "embedded", answerer: FrozenAnswerer | None = None,
                  answer_adapter: str | None = None, embedder=None, model=None, tokenizer=None,
                  base_meta: dict | None = None, extra_reward_funcs: Sequence[Callable] = (),
                  progress: bool = True, time_budget_s: float | None = None,
                  init_adapter: str | os.PathLike | None = None) -> ManagerTrainResult:
    """Train a LoRA adapter for the Memory Manager with GRPO; see the module docstring.

    `answerer` overrides loading the frozen answerer (tests pass one over a FakeBackend);
    `model`/`tokenizer` override loading `base` (tests pass a tiny model); `extra_reward_funcs`
    are added with weight 1 (tests use one with spread on random text); `init_adapter`: a PEFT
    adapter folder of a manager to start from (`loop.start`: checked, loaded trainable).
    """
    from core.agents import prompts

    out = Path(out_dir)
    setup = loop.start(config, out, base=base, model=model, tokenizer=tokenizer, base_info=base_meta,
                       init_adapter=init_adapter, role="manager")
    tokenizer = setup.tokenizer
    train = select_states(train_states, config.states)
    val = select_states(val_states, config.states)
    train_rows = prepare_rows(train, tokenizer, config)
    if not train_rows:
        raise InvalidInputError("no trainable manager states (none with a decision call, linked questions "
                                "and a prompt that fits max_prompt_length)")
    val_rows = prepare_rows(loop.eval_subset(val, config), tokenizer, config) if val else []
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
             len(train_states), len(val_rows), setup.threads, "GPU" if setup.on_gpu else "CPU")
    reward = loop.reward_description(funcs, weights)
    if answerer.f1_weight:  # manager_em adds the answerer's token F1 itself
        reward["formula"] = reward["formula"].replace(
            "manager_em", f"(manager_em + {answerer.f1_weight:g} x the answerer's F1)", 1)
        reward["paper"] = False
    reward["answer_f1_weight"] = float(answerer.f1_weight)
    meta = {"role": "manager", "prompt_version": prompts.PROMPT_VERSION, "reward": reward, "base": setup.base_meta,
            "train_config": config.to_dict(),
            "train_states": len(train_rows), "val_states": len(val_rows),
            "answerer": {"name": getattr(answerer.backend, "name", "?"), "adapter": answer_adapter,
                         "k": answerer.k, "max_tokens": answerer.params.max_tokens,
                         "sources": getattr(answerer, "sources", False)}, **setup.meta()}
    run = ManagerRun(config, out, val_rows, tokenizer, meta, progress=progress, time_budget_s=time_budget_s,
                     states=by_id, answerer=answerer)
    try:
        seconds = loop.train(run, setup, train_rows, funcs, weights)
        summary = loop.finish(run, seconds, title="Memory Manager GRPO training",
                              extra_meta={"reward_stats": _reward_stats(answerer)})
    finally:
        if owned:
            answerer.close()
    trainer = run.trainer
    return ManagerTrainResult(out, out / "best", out / "final", loop.public_scores(run.baseline),
                              loop.public_scores(run.best), trainer.state.global_step, seconds, run.records,
                              run.lora_before, trainer.model, summary, reward_stats=_reward_stats(answerer))


def _reward_stats(answerer: FrozenAnswerer) -> dict:
    s = dict(answerer.stats)
    s.update({f"{k}_s": round(v, 2) for k, v in answerer.seconds.items()})
    return s


def config_from(path: str | None, **overrides) -> ManagerTrainConfig:
    """ManagerTrainConfig from a JSON file (or defaults) with CLI overrides (None ignored)."""
    config = ManagerTrainConfig.from_file(path) if path else ManagerTrainConfig()
    return config.with_overrides(**overrides)

"""GRPO + LoRA training of the Answer Agent (method.md §2) on the shared loop (`training.grpo.loop`).

`train_answer_agent(config, train_examples, val_examples, base=..., out_dir=...)`:
1. fits each example's prompt (the app's answer prompt, `core.agents.prompts.answer_messages`,
   over the top `retrieve_k` memories) into `max_prompt_length` tokens, dropping the
   lowest-ranked memories first, as the app drops what does not fit its context;
2. runs GRPO with the EM reward (`training.rewards.answer`);
3. validates with greedy decoding: mean F1 / BLEU-1 / EM of the answers (`validate`); the best
   F1 picks `<out>/best` (the last adapter is `<out>/final`);
4. logs, curve and summary as the loop writes them.

Departures from the paper: LoRA instead of full fine-tuning; validation-based adapter
selection; optional F1/format reward terms (off by default). Runs in the calling thread; raises
UserError subclasses for bad inputs, anything else is a bug.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable, Sequence

from core.errors import InvalidInputError

from training.config import TrainConfig
from training.grpo import loop

log = logging.getLogger(__name__)


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


def fit_prompt(example: dict, tokenizer, *, k: int, max_tokens: int) -> tuple[list[dict], int]:
    """(messages, memories kept): the most memories (<= k) whose prompt fits `max_tokens`."""
    n = min(k, len(example["memories"]))
    messages = example_messages(example, n)
    if loop.prompt_tokens(tokenizer, messages) <= max_tokens:
        return messages, n
    lo, hi = 0, n - 1  # binary search the largest n that fits
    best = example_messages(example, 0)
    kept = 0
    while lo <= hi:
        mid = (lo + hi) // 2
        msgs = example_messages(example, mid)
        if loop.prompt_tokens(tokenizer, msgs) <= max_tokens:
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


# --------------------------------------------------------------------------- validation


def validate(model, tokenizer, rows: Sequence[dict], config: TrainConfig, *, progress: bool = False) -> dict:
    """Mean F1 / BLEU-1 / EM of greedy answers over prepared validation rows."""
    from training.eval.metrics import bleu1, exact_match, f1_score, mean
    from training.rewards.answer import answer_of

    if not rows:
        return {"f1": None, "bleu1": None, "em": None, "n": 0}
    texts = loop.generate_answers(model, tokenizer, [r["prompt"] for r in rows],
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


# --------------------------------------------------------------------------- entry point


def train_answer_agent(config: TrainConfig, train_examples: Sequence[dict], val_examples: Sequence[dict], *,
                       out_dir: str | os.PathLike, base: str | os.PathLike = "embedded", model=None,
                       tokenizer=None, base_meta: dict | None = None,
                       reward_funcs: Sequence[Callable] | None = None, progress: bool = True,
                       time_budget_s: float | None = None) -> loop.TrainResult:
    """Train a LoRA adapter with GRPO; see the module docstring. `model`/`tokenizer` override
    loading `base` (tests pass a tiny model); `reward_funcs` override the EM reward (weights 1)."""
    from training.rewards.answer import reward_functions

    out = Path(out_dir)
    setup = loop.start(config, out, base=base, model=model, tokenizer=tokenizer, base_info=base_meta)
    tokenizer = setup.tokenizer
    if reward_funcs is None:
        funcs, weights = reward_functions(config.reward_f1_weight, config.reward_format_weight)
    else:
        funcs, weights = list(reward_funcs), [1.0] * len(reward_funcs)
    train_rows = prepare_rows(train_examples, tokenizer, config)
    val_rows = prepare_rows(loop.eval_subset(val_examples, config), tokenizer, config) if val_examples else []
    log.info("GRPO: %d training prompts (%.1f memories kept on average), %d validation, %d threads, %s, %s",
             len(train_rows), sum(r["n_memories"] for r in train_rows) / len(train_rows), len(val_rows),
             setup.threads, "GPU" if setup.on_gpu else "CPU", "bf16" if setup.use_bf16 else "fp32")
    meta = {"base": setup.base_meta, "train_config": config.to_dict(),
            "train_examples": len(train_rows), "val_examples": len(val_rows), **setup.meta()}

    def validator(m) -> dict:
        return validate(m, tokenizer, val_rows, config, progress=progress)

    run = loop.Run(config, out, val_rows, tokenizer, meta, progress=progress, time_budget_s=time_budget_s,
                   validator=validator)
    seconds = loop.train(run, setup, train_rows, funcs, weights)
    loop.finish(run, seconds, title="Answer Agent GRPO training")
    final_dir = out / "final"
    best_dir = out / "best" if (out / "best").is_dir() else final_dir  # no validation: the last one
    trainer = run.trainer
    return loop.TrainResult(out, best_dir, final_dir, loop.public_scores(run.baseline),
                            loop.public_scores(run.best), trainer.state.global_step, seconds, run.records,
                            run.lora_before, trainer.model)

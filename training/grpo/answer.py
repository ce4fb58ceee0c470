"""GRPO + LoRA training of the Answer Agent (method.md §2) on the shared loop (`training.grpo.loop`).

`train_answer_agent(config, train_examples, val_examples, base=..., out_dir=...)`:
1. fits each example's prompt (the app's answer prompt, `core.agents.prompts.answer_messages`,
   over the top `retrieve_k` memories) into `max_prompt_length` tokens, dropping the
   lowest-ranked memories first, as the app drops what does not fit its context;
   With `answer_sources` (default) the prompt is the app's with source quotes under the
   memories (`example_prompt`, built by `AnswerAgent.build_prompt` itself); examples without
   source texts fall back to the paper's layout, logged;
2. runs GRPO with the EM reward (`training.rewards.answer`; the config may add F1/format terms,
   summary.json's "reward" says which), from a fresh LoRA or, with `init_adapter`, from a
   warm-start adapter (`loop.start`);
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


class _ExampleSources:
    """The one bank method `AnswerAgent.build_prompt` reads (`sources`), over an example's links."""

    def __init__(self, links: dict) -> None:
        self.links = links

    def sources(self, memory_ids) -> dict:
        return {i: list(self.links.get(i, ())) for i in memory_ids}


def example_links(example: dict) -> dict:
    """{memory index: [MemorySource]} from an example's memories, read with .get():
    - `memories[i]["sources"]`: the memory's links as `MemoryBank.sources` returns them, each a
      dict of `core.types.MemorySource` fields (`dataclasses.asdict`; "source_id", "kind",
      "role", "text", "speaker", "said_at", "ref");
    - else `memories[i]["source_text"]`: the text of the turn named by `memories[i]["source"]`
      (one "added" link).
    Examples written before either field existed give {} (the paper's layout)."""
    from core.types import MemorySource

    names = {f for f in MemorySource.__dataclass_fields__}
    ids: dict = {}
    links: dict = {}
    for i, m in enumerate(example.get("memories") or ()):
        raw = m.get("sources")
        if raw:
            out = []
            for d in raw:
                if not isinstance(d, dict):
                    continue
                d = {k: v for k, v in d.items() if k in names}
                ref = d.get("ref") or d.get("source_id")
                if d.get("source_id") is None and ref is not None:
                    d["source_id"] = ids.setdefault(ref, len(ids) + 1)
                d.setdefault("kind", "turn")
                d.setdefault("role", "added")
                d.setdefault("text", None)
                out.append(MemorySource(**d))
            links[i] = out
        elif m.get("source_text"):
            ref = m.get("source") or f"memory:{i}"
            links[i] = [MemorySource(source_id=ids.setdefault(ref, len(ids) + 1), kind="turn", role="added",
                                     text=str(m["source_text"]), speaker=m.get("speaker"), ref=ref)]
    return links


def has_sources(examples: Sequence[dict]) -> bool:
    """Whether any example carries what the sources prompt needs (`example_links`)."""
    return any(m.get("sources") or m.get("source_text") for ex in examples for m in ex.get("memories") or ())


def example_prompt(example: dict, n_memories: int, *, sources: bool = True, k: int | None = None):
    """The app's answer prompt for one example with its top `n_memories` memories, built by the
    app's own `AnswerAgent.build_prompt` (so the same layout and character budget): with
    `sources` the memories' source turns are quoted under them (core/agents/evidence.py), as
    the app and the `memory-r1` evaluation system do by default; without, or when the example
    has no source texts (`example_links`), the paper's prompt. Returns the agent's prompt
    (`messages`, `used`, `source_refs`)."""
    from core.agents.answer import AnswerAgent
    from core.types import Memory

    mems = [Memory(i, m["text"], speaker=m.get("speaker"), observed_at=m.get("observed_at"), source=m.get("source"))
            for i, m in enumerate(example["memories"][:n_memories])]
    links = example_links(example) if sources else {}
    agent = AnswerAgent(_ExampleSources(links), None, k=k or max(1, len(mems)), sources=sources)
    return agent.build_prompt(example["question"], mems)


def example_messages(example: dict, n_memories: int, *, sources: bool = True, k: int | None = None) -> list[dict]:
    """The chat messages of `example_prompt`."""
    return example_prompt(example, n_memories, sources=sources, k=k).messages


def fit_prompt(example: dict, tokenizer, *, k: int, max_tokens: int, sources: bool = True) -> tuple[list[dict], int]:
    """(messages, memories kept): the most memories (<= k) whose prompt fits `max_tokens`."""
    n = min(k, len(example["memories"]))

    def build(m: int):
        p = example_prompt(example, m, sources=sources, k=k)
        return p.messages, len(p.used)

    messages, used = build(n)
    if loop.prompt_tokens(tokenizer, messages) <= max_tokens:
        return messages, used
    lo, hi = 0, n - 1  # binary search the largest n that fits
    best, kept = build(0)
    while lo <= hi:
        mid = (lo + hi) // 2
        msgs, used = build(mid)
        if loop.prompt_tokens(tokenizer, msgs) <= max_tokens:
            best, kept, lo = msgs, used, mid + 1
        else:
            hi = mid - 1
    return best, kept


def prompt_layout(examples: Sequence[dict], config: TrainConfig, what: str = "examples") -> str:
    """Which answer prompt the rows get: "sources" (the app's default, `answer_sources`) or
    "paper"; a sources config over examples without source texts falls back to "paper" with a
    logged note (rebuild them with `memory-r1 train data` once it writes the fields that
    `example_links` reads)."""
    if not config.answer_sources:
        return "paper"
    if examples and not has_sources(examples):
        log.warning("%s carry no source-turn texts (memories[i].sources / .source_text): the answer prompts "
                    "use the paper's layout, not the app's prompt with source quotes; rebuild the examples "
                    "to train on the app's prompt", what)
        return "paper"
    return "sources"


def prepare_rows(examples: Sequence[dict], tokenizer, config: TrainConfig, *, layout: str | None = None) -> list[dict]:
    """Trainer rows: {"prompt": messages, "answer": gold text, "question", "category", "n_memories"}.
    `layout`: "sources" or "paper" (default: `prompt_layout`)."""
    layout = layout or prompt_layout(examples, config)
    rows = []
    for ex in examples:
        messages, kept = fit_prompt(ex, tokenizer, k=config.retrieve_k, max_tokens=config.max_prompt_length,
                                    sources=layout == "sources")
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
                       time_budget_s: float | None = None,
                       init_adapter: str | os.PathLike | None = None) -> loop.TrainResult:
    """Train a LoRA adapter with GRPO; see the module docstring. `model`/`tokenizer` override
    loading `base` (tests pass a tiny model); `reward_funcs` override the EM reward (weights 1);
    `init_adapter`: a PEFT adapter folder to start from (`loop.start`: checked, loaded trainable)."""
    from core.agents import prompts
    from training.rewards.answer import reward_functions

    out = Path(out_dir)
    setup = loop.start(config, out, base=base, model=model, tokenizer=tokenizer, base_info=base_meta,
                       init_adapter=init_adapter, role="answer")
    tokenizer = setup.tokenizer
    if reward_funcs is None:
        funcs, weights = reward_functions(config.reward_f1_weight, config.reward_format_weight)
    else:
        funcs, weights = list(reward_funcs), [1.0] * len(reward_funcs)
    layout = prompt_layout(train_examples, config, "training examples")
    val_layout = prompt_layout(val_examples, config, "validation examples") if val_examples else layout
    train_rows = prepare_rows(train_examples, tokenizer, config, layout=layout)
    val_rows = (prepare_rows(loop.eval_subset(val_examples, config), tokenizer, config, layout=val_layout)
                if val_examples else [])
    log.info("GRPO: %d training prompts (%.1f memories kept on average), %d validation, %d threads, %s, %s",
             len(train_rows), sum(r["n_memories"] for r in train_rows) / len(train_rows), len(val_rows),
             setup.threads, "GPU" if setup.on_gpu else "CPU", "bf16" if setup.use_bf16 else "fp32")
    meta = {"role": "answer", "prompt_version": prompts.PROMPT_VERSION,
            "answer_prompt": {"train": layout, "val": val_layout,
                              "sources_version": prompts.ANSWER_SOURCES_VERSION if "sources" in (layout, val_layout)
                              else None},
            "reward": loop.reward_description(funcs, weights),
            "base": setup.base_meta, "train_config": config.to_dict(),
            "train_examples": len(train_rows), "val_examples": len(val_rows), **setup.meta()}

    def validator(m) -> dict:
        return validate(m, tokenizer, val_rows, config, progress=progress)

    run = loop.Run(config, out, val_rows, tokenizer, meta, progress=progress, time_budget_s=time_budget_s,
                   validator=validator)
    seconds = loop.train(run, setup, train_rows, funcs, weights)
    summary = loop.finish(run, seconds, title="Answer Agent GRPO training")
    final_dir = out / "final"
    best_dir = out / "best" if (out / "best").is_dir() else final_dir  # no validation: the last one
    trainer = run.trainer
    return loop.TrainResult(out, best_dir, final_dir, loop.public_scores(run.baseline),
                            loop.public_scores(run.best), trainer.state.global_step, seconds, run.records,
                            run.lora_before, trainer.model, summary)

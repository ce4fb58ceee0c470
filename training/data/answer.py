"""Answer Agent training examples from a LoCoMo file (method.md §2).

Per conversation, the memory bank is built by the project's own Memory Manager and cached,
exactly as the evaluation builds it with its default options (grounding gate on, extraction
"auto": `training.eval.runner.EvalConfig.manager_config`; `ingest_memory_bank`, same cache
folder and key, the manager variant included: an evaluation run and a data build share their
banks). Then, per question of
categories 1-4: the top `k` memories (default 60: 30 per speaker, `AnswerAgent.retrieve`),
the app's answer prompt over them (`core.agents.prompts.answer_messages`) and the gold answer.

An example is a JSON object:
    {"id": "conv-26/0", "sample_id", "qa_index", "question", "answer" (text), "category",
     "speakers": [a, b], "memories": [{"text", "speaker", "observed_at", "source", "sources"}, ...] (ranked),
     "prompt": [chat messages with all k memories], "bank": "memory" | "turns",
     "evidence": [...], "evidence_retrieved": bool,
     "prompt_sources": [chat messages], "shown": [{"line", "source", "refs"}, ...], "n_ctx", "answer_sources"}
The GRPO trainer re-fits the prompt to its token budget from `memories` (`training.grpo.answer.fit_prompt`),
with the source quotes of each memory's "sources" (its `MemoryBank.sources` links), as the app does.
`prompt_sources` is byte for byte what the `memory-r1` evaluation system sends (the answer agent
with source quotes, `AnswerAgent(sources=True).build_prompt` over the same retrieved memories
for an answer model of context `n_ctx`); `shown` lists the memories that prompt shows, in
order: their prompt line, their own `source` and the refs of the turns that gave them their
content (`training.eval.systems.linked_refs`, what evidence recall counts). The SFT data
(`training.data.sft_answer`) reads these; examples written before they existed lack them.

`bank="turns"` is a departure, for quick CPU experiments only: the raw dialogue turns as the
"memories" (the RAG baseline's index), no Memory Manager involved. It is recorded in every
example and in the trainer's metadata.

Runs in the calling thread; loads the manager model only when some bank still has to be built.
Raises InvalidInputError for a missing/bad data file or examples file.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from core.errors import InvalidInputError
from core.fileio import atomic_write_text, jsonl_values

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank
    from core.locomo import Sample

log = logging.getLogger(__name__)

BANK_KINDS = ("memory", "turns")
DEFAULT_N_CTX = 4096  # core.config.ModelSpec's n_ctx: the evaluation's answer model context


def _memory_dict(m, links=None) -> dict:
    """A retrieved memory as an example stores it; `links`: its `MemoryBank.sources`, stored as
    "sources" (dicts of `core.types.MemorySource`) so a trainer rebuilding the prompt at its own
    size quotes the same source turns (`training.grpo.answer.example_links`)."""
    out = {"text": m.text, "speaker": m.speaker, "observed_at": m.observed_at, "source": m.source}
    if links is not None:
        out["sources"] = [dataclasses.asdict(s) for s in links]
    return out


class ContextOnly:
    """A stand-in answer backend that only has a context size: what `AnswerAgent.build_prompt`
    reads from the backend (its character budget), so the prompt is the evaluation's."""

    def __init__(self, n_ctx: int) -> None:
        self.n_ctx = n_ctx


def sources_prompt(bank: MemoryBank, question: str, memories, *, k: int, n_ctx: int) -> tuple[list[dict], list[dict]]:
    """(messages, shown): the `memory-r1` evaluation system's answer prompt (distill, source
    quotes) over `memories` for an answer model of context `n_ctx`, and the shown memories
    (`{"line", "source", "refs"}`, in prompt order)."""
    from core.agents.answer import AnswerAgent

    from training.eval.systems import CONTENT_ROLES

    agent = AnswerAgent(bank, ContextOnly(n_ctx), k=k, distill=True, sources=True)  # type: ignore[arg-type]
    prompt = agent.build_prompt(question, memories, distill=True)
    links = bank.sources([m.id for m in prompt.used]) if prompt.used else {}
    # per memory, the refs `training.eval.systems.linked_refs` gives for the prompt as a whole
    shown = [{"line": m.prompt_line(), "source": m.source,
              "refs": list(dict.fromkeys(s.ref for s in links.get(m.id, ()) if s.ref and s.role in CONTENT_ROLES))}
             for m in prompt.used]
    return prompt.messages, shown


def examples_for_sample(sample: Sample, bank: MemoryBank, *, k: int, bank_kind: str,
                        max_sessions: int | None, n_ctx: int = DEFAULT_N_CTX) -> list[dict]:
    """The examples of one conversation over its open bank (`n_ctx`: the evaluated answer
    model's context size, which bounds the sources prompt)."""
    from core.agents.answer import AnswerAgent
    from core.agents.prompts import ANSWER_SOURCES_VERSION, answer_messages

    from training.eval.systems import selected_questions

    agent = AnswerAgent(bank, backend=None, k=k)  # retrieval only: no model is called
    speakers = list(sample.speakers)
    out = []
    for qa in selected_questions(sample, max_sessions):
        mems = agent.retrieve(qa.question, k=k, speakers=speakers)
        links = bank.sources([m.id for m in mems]) if mems else {}
        evidence = set(qa.evidence)
        messages, shown = sources_prompt(bank, qa.question, mems, k=k, n_ctx=n_ctx) if mems else ([], [])
        out.append({
            "id": f"{sample.sample_id}/{qa.index}", "sample_id": sample.sample_id, "qa_index": qa.index,
            "question": qa.question, "answer": str(qa.answer), "category": qa.category,
            "speakers": speakers, "memories": [_memory_dict(m, links.get(m.id)) for m in mems],
            "prompt": answer_messages(qa.question, AnswerAgent.group(mems, speakers)),
            "bank": bank_kind, "evidence": list(qa.evidence),
            "evidence_retrieved": any((m.source or "").rsplit("/", 1)[-1] in evidence for m in mems),
            "prompt_sources": messages, "shown": shown, "n_ctx": n_ctx, "answer_sources": ANSWER_SOURCES_VERSION,
        })
    return out


def build_examples(data: str | os.PathLike, *, k: int = 60, bank: str = "memory", samples: Sequence[str] | None = None,
                   max_sessions: int | None = None, cache_dir: str | os.PathLike | None = None,
                   manager_model=None, components=None, progress: bool = True,
                   n_ctx: int = DEFAULT_N_CTX) -> list[dict]:
    """All examples of a LoCoMo file; banks come from (or go into) the evaluation's cache.

    `manager_model`: a `core.config.ModelSpec` (None = the embedded SmolLM2); `components`: a
    `training.eval.runner.Components` (tests pass fakes).
    """
    from core.config import ModelSpec
    from core.locomo import load_locomo
    from core.paths import data_dir

    from training.eval.systems import bank_key, build_turn_bank
    from training.eval.runner import Components, EvalConfig

    if bank not in BANK_KINDS:
        raise InvalidInputError(f"unknown bank kind {bank!r}: use memory or turns")
    path = Path(data)
    if not path.is_file():
        raise InvalidInputError(f"LoCoMo data file not found: {path}")
    loaded = load_locomo(path, list(samples) if samples else None)
    eval_config = EvalConfig(data=str(path), manager_model=manager_model or ModelSpec(), k=k)
    comps = components or Components.load(eval_config)
    manager_config = eval_config.manager_config()  # the evaluation's defaults: its bank, its key
    cache = Path(cache_dir) if cache_dir else data_dir() / "eval-cache"
    emb = comps.ids["embedder"]
    examples: list[dict] = []
    try:
        for sample in loaded:
            if bank == "memory":
                folder = cache / bank_key("memory", sample, max_sessions, emb,
                                          f"{comps.ids.get('manager') or ''}/{manager_config.variant()}")
                handle = comps.memory_bank(sample, folder, max_sessions=max_sessions, progress=progress,
                                           manager_config=manager_config)
            else:
                folder = cache / bank_key("turns", sample, max_sessions, emb)
                handle = build_turn_bank(sample, folder, comps.embedder, max_sessions=max_sessions)
            try:
                made = examples_for_sample(sample, handle.bank, k=k, bank_kind=bank, max_sessions=max_sessions,
                                           n_ctx=n_ctx)
            finally:
                handle.close()
            log.info("%s: %d examples from a %s bank of %d memories (%s)", sample.sample_id, len(made), bank,
                     handle.stats.get("memories", 0), folder)
            examples.extend(made)
    finally:
        if components is None:
            comps.close()
    return examples


def save_examples(examples: Sequence[dict], path: str | os.PathLike) -> Path:
    """Write examples as JSONL (atomic replace)."""
    p = Path(path)
    atomic_write_text(p, "".join(json.dumps(ex, ensure_ascii=False) + "\n" for ex in examples))
    return p


REQUIRED = ("question", "answer", "memories")


def load_examples(path: str | os.PathLike) -> list[dict]:
    """Examples from a JSONL file; InvalidInputError naming the first bad line."""
    p = Path(path)
    if not p.is_file():
        raise InvalidInputError(f"{p}: no such file")
    out = []
    def bad(n: int, exc: ValueError) -> InvalidInputError:
        return InvalidInputError(f"{p}:{n}: not JSON ({exc})")

    for n, ex in jsonl_values(p.read_text(encoding="utf-8"), bad):
        if not isinstance(ex, dict) or any(key not in ex for key in REQUIRED):
            raise InvalidInputError(f"{p}:{n}: an example needs {', '.join(REQUIRED)}")
        out.append(ex)
    if not out:
        raise InvalidInputError(f"{p}: no examples")
    return out


def examples_from(path: str | os.PathLike, *, cache: str | os.PathLike | None = None, **build_kw) -> list[dict]:
    """A `.jsonl` examples file as is; a LoCoMo `.json` built into examples (and saved to
    `cache` when given, reused from there next time)."""
    p = Path(path)
    if p.suffix == ".jsonl":
        return load_examples(p)
    if cache is not None and Path(cache).is_file():
        log.info("reusing examples from %s", cache)
        return load_examples(cache)
    examples = build_examples(p, **build_kw)
    if cache is not None:
        save_examples(examples, cache)
    return examples

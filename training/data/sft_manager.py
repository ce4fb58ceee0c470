"""Supervised pairs for the Memory Manager's extraction step from LoCoMo's gold facts (issue 16).

`build_pairs(data)` -> [{"id", "messages", "completion"}], one pair per model call the app
makes on a turn, in the app's exact prompts:

- mode "extractive" (what the embedded 135M model runs: `ManagerConfig.extraction` "auto"
  resolves to it under 1B parameters): the turn (`Turn.full_text`, chunked as
  `MemoryManager.extract` chunks it: `core.agents.manager.turn_chunks`) is split into
  `extractive.candidates`; the prompt is
  `extractive.choice_messages(candidates, speaker, time)` and the completion the choice
  `{"keep": [numbers]}` of the candidates that carry the turn's gold facts: a candidate is
  chosen when its `extractive.rewrite` matches a gold fact cited to that dia_id by token F1 >=
  `MATCH_F1` (training.data.gold_facts). A turn without a gold fact gets the empty choice; a
  chunk without candidates makes no model call in the app, so no pair.
- mode "free": `prompts.extraction_messages(chunk, speaker, time)` -> `{"facts": [the gold
  facts cited to the turn]}` (normalised as `prompts.parse_facts` reads them, so the
  completion round-trips; a turn of several chunks, none in LoCoMo, gets its facts on the first).

`balance_empty(pairs, max_empty_share, seed)` drops pairs with the empty choice `{"keep": []}`
until they are at most `max_empty_share` of the pairs (which ones: a `seed`ed sample, kept in
turn order): on train conv-26 309 of 396 pairs are empty, and a run on all of them learned to
answer `{"keep": []}` to every turn (docs/results.md, issue 16 session 6). `build_pairs`'s
`threshold` is the match rule's token F1 (0.4 gives 117 non-empty pairs on conv-26).

Every completion parses with the app's parser (`extractive.parse_choice(completion, n)`,
`prompts.parse_facts`) to exactly the target (tests/training/data/test_sft_manager.py).

Decisions (ADD/UPDATE/DELETE/NONE) are not built: they are left to GRPO. With the app's
`updates` rules a fact the decision drops is kept anyway (`core.agents.updates`), a fact with
no related memory is ADDed without a call, and on train conv-26 only 25 of the first 48 evidence
states were decision states at all (docs/results.md "Memory Manager GRPO"). `include_decisions=True`
raises InvalidInputError saying so.

Pure apart from reading the data file; any thread.
"""

from __future__ import annotations

import json
import math
import os
import random
from pathlib import Path
from typing import Sequence

from core.agents import extractive, prompts
from core.agents.manager import turn_chunks  # one piece for every LoCoMo turn
from core.errors import InvalidInputError
from core.locomo import Sample, Turn
from training.data.gold_facts import MATCH_F1, best_match, load_gold

__all__ = ["MODES", "build_pairs", "balance_empty", "is_empty_choice", "turn_chunks",
           "oracle_choice", "choice_completion", "facts_completion",
           "extraction_stats"]

MODES = ("extractive", "free")


def _speaker(turn: Turn) -> str:
    return turn.speaker or extractive.DEFAULT_SPEAKER


def oracle_choice(cands: Sequence[str], gold: Sequence[str], speaker: str, time: str | None,
                  threshold: float = MATCH_F1) -> list[int]:
    """0-based indices of the candidates whose rewrite matches one of `gold` (text order).

    >>> oracle_choice(["I adopted a dog named Rex", "I love rain"], ["Sam adopted a dog named Rex."], "Sam", None)
    [0]
    """
    return [i for i, c in enumerate(cands)
            if best_match(extractive.rewrite(c, speaker, time), list(gold), threshold) is not None]


def choice_completion(indices: Sequence[int]) -> str:
    """The chooser's reply for 0-based `indices` (numbered from `extractive.FIRST_NUMBER`).

    >>> choice_completion([0, 2]), choice_completion([])
    ('{"keep": [1, 3]}', '{"keep": []}')
    """
    return json.dumps({"keep": [i + extractive.FIRST_NUMBER for i in sorted(indices)]})


def facts_completion(facts: Sequence[str]) -> str:
    """The free extractor's reply `{"facts": [...]}`, normalised as `prompts.parse_facts` reads it."""
    out: list[str] = []
    for f in facts:
        f = " ".join(f.split())[:prompts.FACT_MAX_CHARS]
        if f and f.casefold() not in {o.casefold() for o in out} and not prompts.is_degenerate(f):
            out.append(f)
    return json.dumps({"facts": out[:prompts.FACT_MAX_ITEMS]}, ensure_ascii=False)


def _turn_pairs(sample: Sample, turn: Turn, gold: list[str], mode: str, threshold: float,
                stats: dict | None = None) -> list[dict]:
    speaker, time = _speaker(turn), turn.time or None
    out = []
    for k, chunk in enumerate(turn_chunks(turn.full_text)):
        pid = f"{sample.sample_id}/{turn.dia_id}" + (f"#{k}" if k else "")
        if mode == "free":
            messages = prompts.extraction_messages(chunk, turn.speaker, time)
            out.append({"id": pid, "messages": messages, "completion": facts_completion(gold if k == 0 else [])})
            continue
        cands = extractive.candidates(chunk)
        if not cands:
            continue
        chosen = oracle_choice(cands, gold, speaker, time, threshold)
        if stats is not None:
            stats["candidates"] += len(cands)
            stats["chosen"] += len(chosen)
            stats["pairs_with_choice"] += bool(chosen)
        out.append({"id": pid, "messages": extractive.choice_messages(cands, speaker, time),
                    "completion": choice_completion(chosen)})
    return out


def build_pairs(data: str | os.PathLike, *, samples: Sequence[str] | None = None, max_sessions: int | None = None,
                mode: str = "extractive", include_decisions: bool = False, threshold: float = MATCH_F1,
                stats: dict | None = None) -> list[dict]:
    """The extraction pairs of every turn of `data` (a LoCoMo file; only the `samples` given,
    the first `max_sessions` sessions), in turn order. `stats`, when given, is filled with
    counts (`extraction_stats`). InvalidInputError for a bad file, mode or `include_decisions`."""
    if mode not in MODES:
        raise InvalidInputError(f"Unknown extraction mode {mode!r}: choose extractive or free.")
    if include_decisions:
        raise InvalidInputError("Decision pairs are not built: decisions are left to GRPO "
                                "(training/data/sft_manager.py explains why).")
    counts = stats if stats is not None else {}
    for key in ("turns", "turns_with_gold", "gold_links", "candidates", "chosen", "pairs", "pairs_with_choice"):
        counts.setdefault(key, 0)
    pairs: list[dict] = []
    for sample, gold in load_gold(Path(data), list(samples) if samples else None):
        for turn in sample.turns_upto(max_sessions):
            facts = gold.get(turn.dia_id, [])
            counts["turns"] += 1
            counts["turns_with_gold"] += bool(facts)
            counts["gold_links"] += len(facts)
            pairs += _turn_pairs(sample, turn, facts, mode, threshold, counts)
    counts["pairs"] = len(pairs)
    return pairs


def is_empty_choice(pair: dict) -> bool:
    """Whether `pair`'s target keeps nothing (the extractive empty choice or no free facts)."""
    try:
        target = json.loads(pair["completion"])
    except ValueError:
        return False
    return isinstance(target, dict) and len(target) == 1 and target.get("keep", target.get("facts")) == []


def balance_empty(pairs: Sequence[dict], max_empty_share: float, seed: int = 42) -> tuple[list[dict], dict]:
    """(`pairs` with empty-target pairs dropped until they are at most `max_empty_share` of what
    is left, counts). The empty pairs kept are a `random.Random(seed)` sample; every pair keeps its
    place in turn order. 1.0 keeps everything, 0.0 drops every empty pair. InvalidInputError for
    a share outside [0, 1].

    >>> ps = [{"completion": c} for c in ('{"keep": [1]}', '{"keep": []}', '{"keep": []}', '{"keep": []}')]
    >>> kept, counts = balance_empty(ps, 0.5)
    >>> [p["completion"] for p in kept].count('{"keep": []}'), counts["empty_kept"], counts["pairs_kept"]
    (1, 1, 2)
    """
    if not 0.0 <= max_empty_share <= 1.0 or math.isnan(max_empty_share):
        raise InvalidInputError(f"max_empty_share must be between 0 and 1, not {max_empty_share}")
    empty = [i for i, p in enumerate(pairs) if is_empty_choice(p)]
    n_full = len(pairs) - len(empty)
    if max_empty_share >= 1.0:
        keep_n = len(empty)
    else:  # e / (e + n_full) <= share  <=>  e <= share * n_full / (1 - share)
        keep_n = min(len(empty), math.floor(max_empty_share * n_full / (1.0 - max_empty_share) + 1e-9))
    kept_empty = set(random.Random(seed).sample(empty, keep_n)) if keep_n < len(empty) else set(empty)
    dropped = set(empty) - kept_empty
    out = [p for i, p in enumerate(pairs) if i not in dropped]
    counts = {"max_empty_share": max_empty_share, "seed": seed, "pairs_in": len(pairs), "empty_in": len(empty),
              "empty_kept": len(kept_empty), "pairs_kept": len(out),
              "empty_share": round(len(kept_empty) / len(out), 4) if out else None}
    return out, counts


def extraction_stats(data: str | os.PathLike, *, samples: Sequence[str] | None = None,
                     max_sessions: int | None = None, threshold: float = MATCH_F1) -> dict:
    """Counts of the extractive pairs: turns, turns with gold facts, gold (turn, fact) links,
    candidates offered, candidates chosen, pairs (model calls) and pairs with a non-empty choice."""
    stats: dict = {}
    build_pairs(data, samples=samples, max_sessions=max_sessions, threshold=threshold, stats=stats)
    return stats

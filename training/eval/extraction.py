"""Extraction quality as its own metric (issue 16, item 3): precision and recall of a turn's
extracted facts against LoCoMo's gold facts cited to the same turn (dia_id).

A fact *matches* a gold fact when their token F1 (training.eval.metrics.f1_score, the answers'
F1) is at least `MATCH_F1` (0.5; training.data.gold_facts). Per turn: a proposed fact is
correct when it matches some gold fact of that turn, a gold fact is recalled when some fact of
that turn matches it; both are summed over the turns (micro average). A turn without a gold
fact counts only for precision (every fact there is a false positive).

Two views:
- *proposed*: what the extractor outputs for a turn (`MemoryManager.extract`, before the
  grounding gate, duplicates and decisions) - `run_extraction`, the standalone
  `memory-r1 eval extraction` (no decisions, no answers: minutes, not a full ingestion);
- *written*: what a finished bank keeps from the turn: the active memories linked to the
  turn's source ("added" or "updated" links, `MemoryBank.sources`) - `written_score`, in
  `eval locomo`'s ingestion stats (computed from the bank, so cached banks get it too).

Baselines over the same turns, deterministic, no model: "keep all" (every candidate of
`core.agents.extractive.candidates` kept) and "oracle" (the candidates whose rewrite matches a
gold fact: the best any chooser can do in extractive mode; the SFT target of
training/data/sft_manager.py). Both run through the app's own `MemoryManager.extract`, with a
rule backend in place of the model.

Runs on the calling thread.
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass, field
from typing import Callable, Iterable, Iterator, Sequence

from core.agents import extractive
from core.agents.manager import ManagerConfig, MemoryManager
from core.errors import Cancelled, ModelOutputError
from core.locomo import Sample
from core.types import GenParams
from training.data.gold_facts import MATCH_F1, best_match
from training.eval.metrics import f1_score

log = logging.getLogger(__name__)

__all__ = ["ExtractionScore", "score_turns", "written_facts", "written_score", "merge_scores",
           "run_extraction", "RuleChooser", "keep_all_backend", "oracle_backend"]

_WRITTEN_ROLES = ("added", "updated")


@dataclass
class ExtractionScore:
    """Counts and rates over some turns (precision None without a proposed fact, recall None
    without a gold fact)."""

    turns: int = 0
    turns_with_gold: int = 0
    proposed: int = 0
    correct: int = 0
    gold: int = 0
    recalled: int = 0
    threshold: float = MATCH_F1

    def add(self, facts: Sequence[str], gold: Sequence[str]) -> None:
        self.turns += 1
        self.turns_with_gold += bool(gold)
        self.proposed += len(facts)
        self.correct += sum(best_match(f, list(gold), self.threshold) is not None for f in facts)
        self.gold += len(gold)
        self.recalled += sum(any(f1_score(f, g) >= self.threshold for f in facts) for g in gold)

    @property
    def precision(self) -> float | None:
        return round(self.correct / self.proposed, 4) if self.proposed else None

    @property
    def recall(self) -> float | None:
        return round(self.recalled / self.gold, 4) if self.gold else None

    def to_json(self) -> dict:
        p, r = self.precision, self.recall
        f1 = round(2 * p * r / (p + r), 4) if p and r else (0.0 if p is not None and r is not None else None)
        return {"turns": self.turns, "turns_with_gold": self.turns_with_gold, "proposed": self.proposed,
                "correct": self.correct, "gold": self.gold, "recalled": self.recalled,
                "precision": p, "recall": r, "f1": f1, "match": f"token F1 >= {self.threshold}"}


def score_turns(rows: Iterable[tuple[Sequence[str], Sequence[str]]], threshold: float = MATCH_F1) -> dict:
    """The score of (facts, gold facts) per turn.

    >>> score_turns([(["Sam adopted a dog named Rex.", "Sam is hungry."], ["Sam adopted a dog, Rex."]),
    ...              ([], ["Sam lives in Oslo."]), (["Sam says hi."], [])])["precision"]
    0.3333
    """
    score = ExtractionScore(threshold=threshold)
    for facts, gold in rows:
        score.add(facts, gold)
    return score.to_json()


def merge_scores(scores: Sequence[dict]) -> dict | None:
    """Per-conversation `score_turns` results summed (None when there are none).

    >>> merge_scores([score_turns([(["a b"], ["a b"])]), score_turns([(["c d"], ["e f"])])])["precision"]
    0.5
    """
    scores = [s for s in scores if isinstance(s, dict)]
    if not scores:
        return None
    total = ExtractionScore(threshold=float(str(scores[0].get("match", MATCH_F1)).split()[-1]))
    for key in ("turns", "turns_with_gold", "proposed", "correct", "gold", "recalled"):
        setattr(total, key, sum(int(s.get(key) or 0) for s in scores))
    return total.to_json()


def _turn_ref(sample_id: str, dia_id: str) -> str:
    return f"locomo:{sample_id}/{dia_id}"  # core.assistant.ingest.locomo_turn


def written_facts(bank) -> dict[str, list[str]]:
    """Source ref -> the texts of the active memories linked to it as "added" or "updated"."""
    out: dict[str, list[str]] = {}
    memories = bank.list(status="active")
    for start in range(0, len(memories), 500):
        chunk = memories[start:start + 500]
        links = bank.sources([m.id for m in chunk])
        for m in chunk:
            for link in links.get(m.id, ()):
                if link.role in _WRITTEN_ROLES and link.ref:
                    texts = out.setdefault(link.ref, [])
                    if m.text not in texts:
                        texts.append(m.text)
    return out


def written_score(bank, sample: Sample, gold: dict[str, list[str]], *, max_sessions: int | None = None,
                  threshold: float = MATCH_F1) -> dict:
    """`score_turns` of what `bank` kept from each turn of `sample` (see the module docstring)."""
    by_ref = written_facts(bank)
    return score_turns(((by_ref.get(_turn_ref(sample.sample_id, t.dia_id), []), gold.get(t.dia_id, []))
                        for t in sample.turns_upto(max_sessions)), threshold)


# --------------------------------------------------------------------------- rule choosers

class RuleChooser:
    """A `ChatBackend` standing in for the model in extractive mode: it answers the choice
    prompt (`extractive.choice_messages`) with `choose(candidates, speaker, time)` (0-based
    indices). Any other call raises ModelOutputError."""

    name = "rule-chooser"

    def __init__(self, choose: Callable[[list[str], str, str | None], list[int]]) -> None:
        self.choose = choose

    def complete(self, messages, *, params: GenParams = GenParams(), schema=None, cancel=None) -> Iterator[str]:
        user = messages[-1]["content"]
        head, _, listed = user.partition("\nStatements:\n")
        if not listed or messages[0]["content"] != extractive.CHOICE_SYSTEM:
            raise ModelOutputError("the rule chooser only answers the extractive choice prompt", "")
        fields = dict(line.split(": ", 1) for line in head.splitlines() if ": " in line)
        cands = [line.split(". ", 1)[1] for line in listed.splitlines()]
        when = fields.get("Time")
        chosen = self.choose(cands, fields.get("Speaker", ""), None if when == "unknown" else when)
        return iter([json.dumps({"keep": [i + extractive.FIRST_NUMBER for i in chosen]})])

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def close(self) -> None:
        pass


def keep_all_backend() -> RuleChooser:
    return RuleChooser(lambda cands, _speaker, _time: list(range(len(cands))))


def oracle_backend(gold: Callable[[], Sequence[str]], threshold: float = MATCH_F1) -> RuleChooser:
    """The gold choice: `gold()` gives the gold facts of the turn being extracted."""
    from training.data.sft_manager import oracle_choice

    return RuleChooser(lambda cands, speaker, when: oracle_choice(cands, gold(), speaker, when, threshold))


# --------------------------------------------------------------------------- the standalone run

@dataclass
class _Run:
    name: str
    manager: MemoryManager
    score: ExtractionScore
    seconds: float = 0.0
    failures: int = 0
    rows: list = field(default_factory=list)


def run_extraction(samples: Sequence[tuple[Sample, dict[str, list[str]]]], backend, *, extraction: str = "auto",
                   max_turns: int | None = None, max_sessions: int | None = None, baselines: bool = True,
                   threshold: float = MATCH_F1, on_turn: Callable[[], None] | None = None) -> dict:
    """The extractor alone over the first `max_turns` turns (of all `samples` in order):
    `{"model": score, "keep_all": score, "oracle": score, "extraction": mode, "seconds",
    "failures", "turns": [per-turn rows]}` (baselines only in extractive mode, and when asked).
    A turn whose output fails twice (ModelOutputError) counts with no fact, as a failure."""
    current: list[Sequence[str]] = [()]
    config = ManagerConfig(extraction=extraction)
    runs = [_Run("model", MemoryManager(None, backend, config=config), ExtractionScore(threshold=threshold))]
    mode = runs[0].manager.extraction
    if baselines and mode == "extractive":
        rule = ManagerConfig(extraction="extractive")
        runs += [_Run("keep_all", MemoryManager(None, keep_all_backend(), config=rule),
                      ExtractionScore(threshold=threshold)),
                 _Run("oracle", MemoryManager(None, oracle_backend(lambda: current[0], threshold), config=rule),
                      ExtractionScore(threshold=threshold))]
    turns = [(s, t, g.get(t.dia_id, [])) for s, g in samples for t in s.turns_upto(max_sessions)]
    rows = []
    for sample, turn, gold in turns[:max_turns]:
        current[0] = gold
        row = {"id": f"{sample.sample_id}/{turn.dia_id}", "speaker": turn.speaker, "gold": list(gold)}
        for run in runs:
            start = time.perf_counter()
            try:
                facts = run.manager.extract(turn.full_text, speaker=turn.speaker, time=turn.time or None)
            except (Cancelled, KeyboardInterrupt):
                raise
            except ModelOutputError as exc:
                log.warning("turn %s: extraction failed: %s", row["id"], exc)
                run.failures += 1
                facts = []
            run.seconds += time.perf_counter() - start
            run.score.add(facts, gold)
            row[run.name] = facts
        rows.append(row)
        if on_turn is not None:
            on_turn()
    out: dict = {"extraction": mode, "turns": rows}
    for run in runs:
        out[run.name] = {**run.score.to_json(), "seconds": round(run.seconds, 3), "failures": run.failures}
    return out

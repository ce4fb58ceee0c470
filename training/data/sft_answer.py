"""The Answer Agent's supervised (distillation) pairs, for the SFT warm start (issue 16).

From the examples `memory-r1 train data` writes (`training.data.answer`; the banks are the
app's Memory Manager's, cached with the evaluation's), one pair per train question:

- `messages`: the example's `prompt_sources`, byte for byte what the `memory-r1` evaluation
  system sends the answer model (source quotes on, the default; `AnswerAgent.build_prompt`
  for the evaluated context size, recorded as `n_ctx`);
- `completion`: the distillation selection the prompt asks for (ANSWER_SYSTEM's Format),
  then the gold answer:

      **Memories selected as relevant:**
      - <prompt line of a shown memory from an evidence turn>
      **Answer:** <gold answer>

  A shown memory is "from an evidence turn" when its own `source` or one of the turns that
  gave it its content (the refs evidence recall counts, `shown[i]["refs"]`) names one of the
  question's evidence dia_ids. The lines are copied exactly (`Memory.prompt_line`, without the
  quote under it) in prompt order, at most `MAX_SELECTED` (the app's guard,
  `core.agents.answer.MAX_SELECTED_LINES`, stops a longer list).

When no shown memory came from an evidence turn (`no_evidence`): "empty" (default) writes
the empty selection (`- none`, which `parse_answer` reads as no selection) then the gold answer,
so the model still learns the answer's form; "skip" leaves the question out. Both are counted
(`Counts`). A question the evaluation answers without a model call (no memory retrieved) is
always skipped.

Pure data: no torch, no model, no bank (everything needed is in the example). Raises
InvalidInputError for examples written before the sources prompt was kept (rebuild them with
`memory-r1 train data`; the cached banks make that quick).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

from core.errors import InvalidInputError

NO_EVIDENCE_CHOICES = ("empty", "skip")
SELECTION_HEADER = "**Memories selected as relevant:**"
EMPTY_SELECTION = "none"  # `core.agents.prompts.parse_answer` reads "- none" as no selection
MAX_SELECTED = 20  # core.agents.answer.MAX_SELECTED_LINES


@dataclass
class Counts:
    """How the examples became pairs."""

    examples: int = 0
    pairs: int = 0
    with_evidence: int = 0  # pairs whose selection lists at least one memory
    no_evidence_empty: int = 0  # pairs with the empty selection (no shown memory from an evidence turn)
    no_evidence_skipped: int = 0
    no_memories_skipped: int = 0  # nothing retrieved: the app answers without the model
    selected_lines: int = 0
    truncated: int = 0  # selections cut to MAX_SELECTED

    def to_dict(self) -> dict:
        return asdict(self)


def _dia(ref: str | None) -> str:
    return str(ref or "").rsplit("/", 1)[-1]


def evidence_lines(example: dict) -> list[str]:
    """The prompt lines of the shown memories that came from an evidence turn, in prompt order."""
    wanted = {str(e) for e in example.get("evidence") or ()}
    out = []
    for m in example.get("shown") or ():
        refs = [m.get("source"), *(m.get("refs") or ())]
        if any(_dia(r) in wanted for r in refs if r):
            out.append(m["line"])
    return list(dict.fromkeys(out))


def completion(lines: Sequence[str], answer: str) -> str:
    """The target text: the selection in ANSWER_SYSTEM's format, then the answer.

    >>> print(completion(["1 May, 2023: Jo has a cat."], "a cat"))
    **Memories selected as relevant:**
    - 1 May, 2023: Jo has a cat.
    **Answer:** a cat
    >>> from core.agents.prompts import parse_answer
    >>> parse_answer(completion([], "Oslo"))
    ParsedAnswer(answer='Oslo', selected_lines=[], has_marker=True)
    """
    body = "\n".join(f"- {line}" for line in lines) or f"- {EMPTY_SELECTION}"
    return f"{SELECTION_HEADER}\n{body}\n**Answer:** {' '.join(str(answer).split())}"


def answer_pairs(examples: Sequence[dict], *, no_evidence: str = "empty") -> tuple[list[dict], Counts]:
    """(pairs, counts): `{"id", "messages", "completion", "question", "answer", "category",
    "evidence_selected"}` per usable example, in order."""
    if no_evidence not in NO_EVIDENCE_CHOICES:
        raise InvalidInputError(f"no_evidence must be one of {', '.join(NO_EVIDENCE_CHOICES)}, not {no_evidence!r}")
    counts = Counts(examples=len(examples))
    pairs = []
    for n, ex in enumerate(examples):
        if "prompt_sources" not in ex or "shown" not in ex:
            raise InvalidInputError(
                f"example {ex.get('id', n)} has no sources prompt (written by an older `memory-r1 train data`): "
                "rebuild the examples (the cached banks are reused)")
        if not ex["prompt_sources"]:
            counts.no_memories_skipped += 1
            continue
        lines = evidence_lines(ex)
        if not lines:
            if no_evidence == "skip":
                counts.no_evidence_skipped += 1
                continue
            counts.no_evidence_empty += 1
        else:
            counts.with_evidence += 1
        if len(lines) > MAX_SELECTED:
            counts.truncated += 1
            lines = lines[:MAX_SELECTED]
        counts.selected_lines += len(lines)
        pairs.append({"id": str(ex.get("id", n)), "messages": ex["prompt_sources"],
                      "completion": completion(lines, ex["answer"]), "question": ex["question"],
                      "answer": str(ex["answer"]), "category": ex.get("category"),
                      "evidence_selected": len(lines)})
    counts.pairs = len(pairs)
    return pairs, counts


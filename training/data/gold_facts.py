"""LoCoMo's gold facts (`observation`) per turn: the SFT targets of the extractor and the
reference of the extraction metric (training/eval/extraction.py).

A sample's `observation` maps "session_N_observation" -> {speaker: [[fact, dia_id], ...]};
the dia_id is one id, a list, or a comma/semicolon separated string ("D2:1, D1:3"). A fact
belongs to every turn it cites. `core.locomo` does not keep observations, so the file is read
here a second time (`load_gold`), in place (never copied).

Pure functions apart from `load_gold` (reads one JSON file); any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from core.errors import InvalidInputError
from core.fileio import read_json
from core.locomo import Sample, parse_sample
from training.eval.metrics import f1_score

__all__ = ["GoldFact", "gold_facts", "facts_by_turn", "load_gold", "MATCH_F1", "best_match"]

# a fact matches a gold fact from this token F1 up (training.eval.metrics.f1_score, the
# answers' F1; the rule). Against a cosine (all-MiniLM-L6-v2), on train conv-26's
# rewritten candidates x gold facts: F1 >= 0.5 matches 100 same-turn pairs and 17 of 97,721
# pairs with another turn's gold fact of the same speaker (0.017%); the cosine with the same
# cross-turn rate (>= 0.85, 0.026%) matches only 56 same-turn pairs, at 0.75 137 but 0.39%
# cross-turn. So F1, not a cosine. It is strict: "her job" vs "Gina's job" paraphrases miss.
MATCH_F1 = 0.5

_DIA = re.compile(r"D\d+:\d+")


@dataclass(frozen=True)
class GoldFact:
    speaker: str
    text: str
    dia_ids: tuple[str, ...]


def _ids(value) -> tuple[str, ...]:
    """The dia_ids a gold fact cites.

    >>> _ids("D1:3"), _ids(["D15:3", "D15:5"]), _ids("D2:1, D2:4"), _ids(None)
    (('D1:3',), ('D15:3', 'D15:5'), ('D2:1', 'D2:4'), ())
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    return tuple(dict.fromkeys(d for item in items if item is not None for d in _DIA.findall(str(item))))


def _session_no(key: str) -> int:
    m = re.search(r"\d+", key)
    return int(m.group()) if m else 0


def gold_facts(raw: dict) -> list[GoldFact]:
    """Every gold fact of a raw LoCoMo sample, in session order (items that are not
    [text, ids] with at least one dia_id are skipped). InvalidInputError when `observation`
    is present but not an object."""
    obs = raw.get("observation") if isinstance(raw, dict) else None
    if obs is None:
        return []
    if not isinstance(obs, dict):
        raise InvalidInputError("Not a LoCoMo sample: observation must be an object.")
    out: list[GoldFact] = []
    for key in sorted(obs, key=_session_no):
        per_speaker = obs[key]
        if not isinstance(per_speaker, dict):
            continue
        for speaker, items in per_speaker.items():
            for item in items if isinstance(items, list) else []:
                if isinstance(item, (list, tuple)) and item and isinstance(item[0], str) and item[0].strip():
                    ids = _ids(item[1] if len(item) > 1 else None)
                    if ids:
                        out.append(GoldFact(str(speaker), " ".join(item[0].split()), ids))
    return out


def facts_by_turn(facts: list[GoldFact]) -> dict[str, list[str]]:
    """dia_id -> the texts of the gold facts citing it (in order, unique)."""
    out: dict[str, list[str]] = {}
    for f in facts:
        for d in f.dia_ids:
            texts = out.setdefault(d, [])
            if f.text not in texts:
                texts.append(f.text)
    return out


def load_gold(path: str | Path, samples: list[str] | tuple[str, ...] | None = None
              ) -> list[tuple[Sample, dict[str, list[str]]]]:
    """(sample, dia_id -> gold fact texts) for each sample of a LoCoMo file, optionally
    filtered by id. InvalidInputError for a bad file or an unknown sample id."""
    p = Path(path)
    raw = read_json(p)
    items = raw if isinstance(raw, list) else [raw]
    out = []
    try:
        for i, r in enumerate(items):
            sample = parse_sample(r, f"sample {i}")
            out.append((sample, facts_by_turn(gold_facts(r))))
    except InvalidInputError as exc:
        raise InvalidInputError(f"{p}: {exc}") from None
    if samples:
        wanted = set(samples)
        missing = wanted - {s.sample_id for s, _ in out}
        if missing:
            raise InvalidInputError(f"{p}: no sample named {', '.join(sorted(missing))}")
        out = [(s, g) for s, g in out if s.sample_id in wanted]
    return out


def best_match(fact: str, gold: list[str], threshold: float = MATCH_F1) -> int | None:
    """The index of the gold fact `fact` matches best (token F1 >= `threshold`), None when none.

    >>> best_match("Sam adopted a dog named Rex.", ["Sam likes tea.", "Sam adopted a dog, Rex."])
    1
    >>> best_match("Sam likes tea.", []) is None
    True
    """
    best, at = -1.0, None
    for i, g in enumerate(gold):
        score = f1_score(fact, g)
        if score >= threshold and score > best:
            best, at = score, i
    return at

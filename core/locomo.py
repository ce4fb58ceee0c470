"""LoCoMo conversations (the benchmark's original JSON schema) as plain data.

Used by `memory-r1 ingest` (core), the evaluation and the training data builders (training).
The data files are CC BY-NC: read them from ../shared/data/locomo or a path the user gives.

>>> CATEGORY_NAMES[1], PAPER_CATEGORY_NAMES[1]
('multi-hop', 'single-hop')
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInputError
from core.fileio import read_json

# category numbers as in the data, and the names the Mem0 / Memory-R1 papers print them under
CATEGORY_NAMES = {1: "multi-hop", 2: "temporal", 3: "open-domain", 4: "single-hop", 5: "adversarial"}
PAPER_CATEGORY_NAMES = {1: "single-hop", 2: "temporal", 3: "multi-hop", 4: "open-domain", 5: "adversarial"}
SCORED_CATEGORIES = (1, 2, 3, 4)


@dataclass(frozen=True)
class Turn:
    speaker: str
    dia_id: str  # "D<session>:<turn>"
    text: str
    session: int
    time: str  # the session's date_time, e.g. "1:56 pm on 8 May, 2023"
    blip_caption: str | None = None

    @property
    def full_text(self) -> str:
        """The turn as the manager sees it: text, plus the shared image's caption if any."""
        if self.blip_caption:
            return f"{self.text} [shares an image: {self.blip_caption}]"
        return self.text


@dataclass(frozen=True)
class QA:
    question: str
    answer: str  # gold answers can be integers in the file: kept as text here
    evidence: tuple[str, ...]
    category: int
    index: int  # position in the sample's qa list

    @property
    def sessions(self) -> set[int]:
        return {s for d in self.evidence if (s := session_of(d)) is not None}


@dataclass(frozen=True)
class Sample:
    sample_id: str
    speaker_a: str
    speaker_b: str
    turns: tuple[Turn, ...]
    qa: tuple[QA, ...] = field(default=())

    @property
    def speakers(self) -> tuple[str, str]:
        return (self.speaker_a, self.speaker_b)

    @property
    def session_count(self) -> int:
        return max((t.session for t in self.turns), default=0)

    def scored_qa(self) -> list[QA]:
        return [q for q in self.qa if q.category in SCORED_CATEGORIES]

    def turns_upto(self, max_sessions: int | None) -> list[Turn]:
        return [t for t in self.turns if max_sessions is None or t.session <= max_sessions]


_DIA = re.compile(r"D(\d+):(\d+)")


def session_of(dia_id: str) -> int | None:
    """The session number of a dialogue id.

    >>> session_of("D12:3")
    12
    """
    m = _DIA.match(dia_id.strip())
    return int(m.group(1)) if m else None


def parse_sample(raw: dict) -> Sample:
    try:
        conv = raw["conversation"]
        sessions = sorted(
            (int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k)),
        )
        turns: list[Turn] = []
        for n in sessions:
            when = conv.get(f"session_{n}_date_time", "")
            for t in conv[f"session_{n}"]:
                turns.append(Turn(str(t["speaker"]), str(t.get("dia_id", f"D{n}:{len(turns) + 1}")),
                                  str(t.get("text", "")), n, when, t.get("blip_caption")))
        qa = tuple(
            QA(str(q["question"]), str(q.get("answer", q.get("adversarial_answer", ""))),
               tuple(str(e) for e in q.get("evidence", [])), int(q["category"]), i)
            for i, q in enumerate(raw.get("qa", []))
        )
        return Sample(str(raw.get("sample_id", "sample")), str(conv["speaker_a"]),
                      str(conv["speaker_b"]), tuple(turns), qa)
    except (KeyError, TypeError, ValueError, IndexError) as exc:
        raise InvalidInputError(f"not a LoCoMo sample: missing or bad field {exc}") from exc


def load_locomo(path: str | Path, samples: list[str] | None = None) -> list[Sample]:
    """All samples of a LoCoMo JSON file (a list of samples, or one sample), optionally filtered by id."""
    p = Path(path)
    raw = read_json(p)
    items = raw if isinstance(raw, list) else [raw]
    out = [parse_sample(r) for r in items]
    if samples:
        wanted = set(samples)
        out = [s for s in out if s.sample_id in wanted]
        missing = wanted - {s.sample_id for s in out}
        if missing:
            raise InvalidInputError(f"{p}: no sample named {', '.join(sorted(missing))}")
    return out

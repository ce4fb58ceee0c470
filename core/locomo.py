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


def _bad(where: str, what: str) -> InvalidInputError:
    return InvalidInputError(f"Not a LoCoMo sample: {where} {what}.")


_KIND_NAMES = {dict: "an object", list: "a list", str: "text", int: "a number", float: "a number"}


def _get(obj: dict, key: str, kind: type | tuple[type, ...], where: str, default=None, required: bool = True):
    """`obj[key]` checked to be a `kind`; InvalidInputError naming the field otherwise."""
    if key not in obj or obj[key] is None:
        if required:
            raise _bad(f"{where}.{key}", "is missing")
        return default
    value = obj[key]
    if not isinstance(value, kind) or isinstance(value, bool):
        names = " or ".join(dict.fromkeys(_KIND_NAMES.get(k, k.__name__)
                                          for k in (kind if isinstance(kind, tuple) else (kind,))))
        raise _bad(f"{where}.{key}", f"must be {names}, not {_KIND_NAMES.get(type(value), type(value).__name__)}")
    return value


_SCALAR = (str, int, float)


def _turn(t: object, n: int, i: int, when: str, where: str) -> Turn:
    if not isinstance(t, dict):
        raise _bad(where, f"must be an object (a turn), not {_KIND_NAMES.get(type(t), type(t).__name__)}")
    caption = _get(t, "blip_caption", str, where, required=False)
    return Turn(str(_get(t, "speaker", _SCALAR, where)), str(_get(t, "dia_id", str, where, f"D{n}:{i}", False)),
                str(_get(t, "text", _SCALAR, where, "", False)), n, when, caption)


def _qa(q: object, i: int, where: str) -> QA:
    if not isinstance(q, dict):
        raise _bad(where, f"must be an object (a question), not {_KIND_NAMES.get(type(q), type(q).__name__)}")
    answer = q.get("answer") if q.get("answer") is not None else q.get("adversarial_answer", "")
    if not isinstance(answer, _SCALAR + (type(None),)):
        raise _bad(f"{where}.answer", f"must be text or a number, not {type(answer).__name__}")
    evidence = _get(q, "evidence", list, where, [], False)
    category = _get(q, "category", (int, str), where)
    try:
        category = int(category)
    except ValueError:
        raise _bad(f"{where}.category", f"must be a number, not {category!r}") from None
    return QA(str(_get(q, "question", _SCALAR, where)), "" if answer is None else str(answer),
              tuple(str(e) for e in evidence), category, i)


def parse_sample(raw: object, where: str = "sample") -> Sample:
    """One sample of LoCoMo's JSON. Raises InvalidInputError naming the first field of the wrong
    shape (`where` is its path prefix, e.g. "sample 3")."""
    if not isinstance(raw, dict):
        raise _bad(where, f"must be an object, not {_KIND_NAMES.get(type(raw), type(raw).__name__)}")
    conv = _get(raw, "conversation", dict, where)
    cwhere = f"{where}.conversation"
    sessions = sorted(int(k.split("_")[1]) for k in conv if re.fullmatch(r"session_\d+", k))
    turns: list[Turn] = []
    for n in sessions:
        when = str(_get(conv, f"session_{n}_date_time", _SCALAR, cwhere, "", False))
        for j, t in enumerate(_get(conv, f"session_{n}", list, cwhere)):
            turns.append(_turn(t, n, len(turns) + 1, when, f"{cwhere}.session_{n}[{j}]"))
    qa = tuple(_qa(q, i, f"{where}.qa[{i}]") for i, q in enumerate(_get(raw, "qa", list, where, [], False)))
    return Sample(str(_get(raw, "sample_id", _SCALAR, where, "sample", False)),
                  str(_get(conv, "speaker_a", _SCALAR, cwhere)), str(_get(conv, "speaker_b", _SCALAR, cwhere)),
                  tuple(turns), qa)


def load_locomo(path: str | Path, samples: list[str] | None = None) -> list[Sample]:
    """All samples of a LoCoMo JSON file (a list of samples, or one sample), optionally filtered by id."""
    p = Path(path)
    raw = read_json(p)
    items = raw if isinstance(raw, list) else [raw]
    try:
        out = [parse_sample(r, f"sample {i}" if isinstance(raw, list) else "sample") for i, r in enumerate(items)]
    except InvalidInputError as exc:
        raise InvalidInputError(f"{p}: {exc}") from None
    if samples:
        wanted = set(samples)
        out = [s for s in out if s.sample_id in wanted]
        missing = wanted - {s.sample_id for s in out}
        if missing:
            raise InvalidInputError(f"{p}: no sample named {', '.join(sorted(missing))}")
    return out

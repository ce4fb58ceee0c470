"""The grounding gate: is a proposed memory supported by what was said?

The model proposes, deterministic checks dispose. `check_fact(fact, source)` says whether a
fact the Memory Manager proposes is supported by its source turn (plus, for an UPDATE, the
memory it rewrites) and, when not, why, in one line a person can read in History:

1. the fact must be a statement (`is_statement`), not a question or a request;
2. every name in the fact (a capitalised word that is not at a sentence start, not "I", a
   month or weekday, the speaker or a name the caller knows from context; all-capital acronyms
   such as "LGBTQ" count as content words instead) must occur in the source:
   "not in what was said: 'Luna'"; a name the turn only greets or thanks ("Hi John! How are
   you?") is the listener, not something said about anyone, and supports nothing: "only
   greeted, not talked about: 'John'" (`grounding_text.STRIP_ADDRESS`);
3. every number (digits, number words, ordinals) must occur in the source; a year, month,
   day or weekday may also come from the turn's time, directly or through a relative date in
   the turn ("yesterday" said on 5 June 2023 allows "4 June, 2023"; "three years ago"
   allows 2020); an invented year is rejected;
4. enough of the fact's content words must occur in the source (`Verdict.support`, the share
   found after a light normalisation of our own: case, possessives, plural and verb
   suffixes, a few irregular forms and chat abbreviations; stopwords and framing words such
   as "finds", "values", "shared a photo" do not count);
5. with an embedder, the support rule becomes support + `cosine_weight` x cosine(fact, source)
   >= `min_score` (and support >= `min_support_with_cosine`): a close paraphrase passes with
   fewer shared words, an unrelated turn that shares a few words fails.

Questions and requests: only the statement sentences of a turn support a fact, plus what a
question presupposes, taken simply as its possessive phrases ("Should I take my dog Rex to
the vet?" supports "Sam has a dog named Rex", not "Sam takes Rex to the vet"). A fact that
only a question's wording supports is rejected as "a question, not a statement".

Pure and thread-safe: no model of its own, no I/O; any text (empty, 1 MB, NULs, emoji) gives
a Verdict (a turn is read up to `SOURCE_MAX_CHARS`). The only exceptions are those the
optional embedder's `embed` raises. Text handling lives in core/agents/grounding_text.py.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterable

import numpy as np

from core.agents.grounding_text import (
    MONTHS, MULTIPLIERS, NUMBER_WORDS, ORDINALS, STANCE_WORDS, STOPWORDS, WEEKDAYS, Dates, address,
    clean, is_statement, numbers, parse_time, presupposed, resolved_dates, sentence_kind, sentences,
    stem, tokens,
)
from core.agents import grounding_text

__all__ = ["Source", "GateConfig", "Verdict", "check_fact", "support_text", "is_statement", "DEFAULT_CONFIG"]

# Calibration: chosen on LoCoMo conv-26 gold facts, reported on conv-30 (benchmarks/grounding.py;
# figures and the selection rule in docs/results.md, "Grounding gate"). The cosine thresholds
# hold for all-MiniLM-L6-v2 (core.embeddings.default_embedder); another embedder needs its own.
MIN_SUPPORT = 0.35  # without an embedder: share of content words found
MIN_SUPPORT_WITH_COSINE = 0.2  # with one: at least this share found, and
COSINE_WEIGHT = 0.5  # support + COSINE_WEIGHT * cosine >= MIN_SCORE
MIN_SCORE = 0.5

EMBED_MAX_CHARS = 2000  # the embedder sees at most this much of the source (MiniLM reads 256 tokens)
SOURCE_MAX_CHARS = 64000  # the gate reads this much of a turn (4x the manager's max_turn_chars)
FACT_MAX_CHARS = 1000  # longer than any one memory the manager may write (prompts.FACT_MAX_CHARS)


@dataclass(frozen=True)
class Source:
    """What a proposed fact may rest on.

    text: the turn as the manager saw it; speaker: who said it; time: when, as the app stores
    it ("1:56 pm on 8 May, 2023" or ISO); memory: for an UPDATE, the text of the memory it
    rewrites; names: other names known from context (e.g. the other participant)."""

    text: str
    speaker: str | None = None
    time: str | None = None
    memory: str | None = None
    names: tuple[str, ...] = ()


@dataclass(frozen=True)
class GateConfig:
    """The support rule. Without an embedder: support >= min_support. With one:
    support >= min_support_with_cosine and support + cosine_weight * cosine >= min_score."""

    min_support: float = MIN_SUPPORT
    min_support_with_cosine: float = MIN_SUPPORT_WITH_COSINE
    cosine_weight: float = COSINE_WEIGHT
    min_score: float = MIN_SCORE


DEFAULT_CONFIG = GateConfig()


@dataclass(frozen=True)
class Verdict:
    """ok: the fact may be written; reason: one line for History when not; support: share of
    the fact's content words found in the source; cosine: fact vs source when an embedder
    was used; missing: the names, numbers and dates not found; checks_ok: the form, name,
    number and date checks passed (only the support rule decided)."""

    ok: bool
    reason: str | None
    support: float
    cosine: float | None = None
    missing: tuple[str, ...] = ()
    checks_ok: bool = False


# --------------------------------------------------------------------------- source analysis

@dataclass(frozen=True)
class _View:
    """One body of text, ready for checks: word stems, casefolded words, numbers."""

    stems: frozenset[str]
    words: frozenset[str]
    numbers: frozenset[str]


def _view(text: str, extra_names: Iterable[str] = ()) -> _View:
    toks = tokens(text)
    words = {t.low for t in toks if not t.is_num}
    words.update(a.low + b.low for a, b in zip(toks, toks[1:]) if not (a.is_num or b.is_num))  # "road trip"
    for name in extra_names:
        words.update(t.low for t in tokens(clean(name)) if not t.is_num)
    return _View(frozenset(stem(w) for w in words), frozenset(words),
                 frozenset(v for v, _ in numbers(toks)))


@dataclass(frozen=True)
class _Prepared:
    stated: _View  # statement sentences + what the questions presuppose + the old memory
    said: _View  # all of it, questions included
    dates: Dates
    known: frozenset[str]  # casefolded names that need no support (speaker, context names)
    support_text: str
    empty: bool
    has_statement: bool
    addressed: frozenset[str] = frozenset()  # casefolded names only spoken to ("Hi John!")


def support_text(source: Source) -> str:
    """The text a fact may rest on: the turn's statements, the possessive phrases of its
    questions and requests, and the memory an UPDATE rewrites. Batch callers embed this to
    reuse cosines (benchmarks/grounding.py)."""
    return _prepare(source).support_text


def _fold(name: str) -> str:
    """A name as `_Prepared.addressed` keeps it: casefolded, curly apostrophe straightened, no 's."""
    return name.casefold().replace("’", "'").removesuffix("'s")


@lru_cache(maxsize=512)
def _prepare(source: Source) -> _Prepared:
    text = clean(source.text)[:SOURCE_MAX_CHARS]
    memory = clean(source.memory)[:SOURCE_MAX_CHARS] if source.memory else ""
    parts, has_statement = [], False
    addressed: set[str] = set()
    unaddressed = []  # the same parts without a leading greeting's name ("Hi John!")
    for s in sentences(text):
        kind = sentence_kind(s)
        has_statement |= kind == "statement"
        parts.append(s if kind == "statement" else presupposed(s))
        spoken_to, rest = address(s) if grounding_text.STRIP_ADDRESS else ((), s)
        addressed.update(_fold(n) for n in spoken_to)
        unaddressed.append(parts[-1] if not spoken_to else rest if kind == "statement" else presupposed(rest))
    if memory:
        parts.append(memory)
        unaddressed.append(memory)
    stated = " ".join(p for p in parts if p)
    names = [n for n in (source.speaker, *source.names) if n]
    known = frozenset(t.low for n in names for t in tokens(clean(n)) if not t.is_num)
    when = parse_time(source.time)
    # the support text (and so the cosine) is unchanged; only the words a fact may rest on lose
    # the greeted names
    return _Prepared(_view(" ".join(p for p in unaddressed if p), names), _view(f"{text} {memory}", names),
                     resolved_dates(stated, when), known, stated, not (text.strip() or memory.strip()),
                     has_statement or bool(memory), frozenset(addressed))


# --------------------------------------------------------------------------- fact analysis

@dataclass(frozen=True)
class _Claims:
    content: tuple[str, ...]  # casefolded content words (speaker and known names excluded later)
    names: tuple[str, ...]  # names as written
    numbers: tuple[tuple[str, str], ...]  # (value, kind) kind: "year" "day:<month>" "number"
    months: tuple[int, ...]
    weekdays: tuple[int, ...]
    joined: tuple[tuple[str, str], ...]  # consecutive words, for "road trip" vs "roadtrip"


@lru_cache(maxsize=4096)
def _claims(fact: str) -> _Claims:
    toks = tokens(fact)
    nums = numbers(toks)
    num_at = {i for _, i in nums}
    content, names, months, weekdays = [], [], [], []
    for i, t in enumerate(toks):
        if t.is_num or i in num_at or t.low in ORDINALS or t.low in NUMBER_WORDS or t.low in MULTIPLIERS:
            continue
        if t.low in MONTHS and (t.text[0].isupper() or (len(t.low) > 3 and t.low not in ("may", "march"))):
            months.append(MONTHS[t.low])
            continue
        if t.low in WEEKDAYS:
            weekdays.append(WEEKDAYS[t.low])
            continue
        if t.low in STOPWORDS or t.low in STANCE_WORDS or len(t.low) < 2:
            continue
        acronym = len(t.text) > 1 and t.text.isupper()  # "LGBTQ": a topic word more than a name
        if t.text[0].isupper() and not t.initial and not acronym and t.low != "i":
            names.append(t.text)
        content.append(t.low)
    checked = []
    for value, i in nums:
        month_near = [MONTHS[toks[j].low] for j in (i - 1, i + 1, i - 2)
                      if 0 <= j < len(toks) and toks[j].low in MONTHS and toks[j].text[0].isupper()]
        if toks[i].is_num and len(value) == 4 and 1000 <= int(value) <= 2999:
            checked.append((value, "year"))
        elif month_near and value.isdigit() and 1 <= int(value) <= 31:
            checked.append((value, f"day:{month_near[0]}"))
        else:
            checked.append((value, "number"))
    joined = tuple((a.low, b.low) for a, b in zip(toks, toks[1:]) if not (a.is_num or b.is_num))
    return _Claims(tuple(content), tuple(names), tuple(checked), tuple(months), tuple(weekdays), joined)


# a fact's word that another word of the source implies ("I moved to Berlin": Maria lives there)
IMPLIED_BY = {"live": ("move", "home")}
_IMPLIED = {stem(k): tuple(stem(v) for v in vs) for k, vs in IMPLIED_BY.items()}


def _found(word: str, view: _View) -> bool:
    st = stem(word)
    return word.casefold() in view.words or st in view.stems or any(v in view.stems for v in _IMPLIED.get(st, ()))


def _missing_numbers(claims: _Claims, view: _View, dates: Dates) -> list[str]:
    missing = []
    for value, kind in claims.numbers:
        if value in view.numbers:
            continue
        if kind == "year" and int(value) in dates.years:
            continue
        if kind.startswith("day:"):
            month = int(kind[4:])
            if any(d.day == int(value) and d.month == month for d in dates.days):
                continue
        missing.append(value)
    return missing


def _missing_dates(claims: _Claims, view: _View, dates: Dates) -> list[str]:
    names = {v: k for k, v in MONTHS.items() if len(k) > 3 or k == "may"}  # "may" is a full name too
    missing = []
    for m in claims.months:
        if not (any(k in view.words for k, v in MONTHS.items() if v == m) or any(mm == m for _, mm in dates.months)):
            missing.append(names[m].capitalize())
    for wd in claims.weekdays:
        word = next(k for k, v in WEEKDAYS.items() if v == wd)
        if not (word in view.words or any(d.weekday() == wd for d in dates.exact)):
            missing.append(word.capitalize())
    return missing


def _check_lexical(claims: _Claims, prep: _Prepared, view: _View) -> tuple[list[str], float, int]:
    """(missing names, numbers and dates; content support; number of content words)."""
    missing = [n for n in claims.names if n.casefold().replace("’", "'").removesuffix("'s") not in prep.known
               and not _found(n, view)]
    missing += _missing_numbers(claims, view, prep.dates)
    missing += _missing_dates(claims, view, prep.dates)
    content = list({stem(w): w for w in claims.content if w not in prep.known}.values())  # "loves ... love": once
    if content:
        found = {w for w in content if _found(w, view)}
        found.update(w for a, b in claims.joined if a + b in view.words for w in (a, b))
        support = sum(w in found for w in content) / len(content)
    else:
        support = 1.0 if (claims.names or claims.numbers or claims.months) else 0.0
    return missing, support, len(content)


def _cosine(embedder, fact: str, text: str) -> float:
    vecs = np.asarray(embedder.embed([fact, text[:EMBED_MAX_CHARS]]), dtype=np.float64)
    a, b = vecs[0], vecs[1]
    denom = float(np.linalg.norm(a) * np.linalg.norm(b))
    return float(a @ b / denom) if denom > 0 else 0.0


def check_fact(fact: str, source: Source, *, embedder=None, config: GateConfig = DEFAULT_CONFIG) -> Verdict:
    """May `fact` be written as a memory, given `source`? See the module docstring for the rules.

    embedder: optional `core.types.Embedder` (one `embed` call of two texts per fact that passes
    the exact checks); its cosine between the fact and `support_text(source)` joins the support
    rule (`GateConfig`). Any thread; raises only what `embedder.embed` raises.

    >>> said = Source("Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.", "Sam", "1:56 pm on 8 May, 2023")
    >>> check_fact("Sam has a cat named Luna.", said).reason
    "not in what was said: 'Luna'"
    >>> check_fact("Sam lives in Lisbon.", said).ok
    True
    """
    text = " ".join(clean(fact).split())
    if not text or not any(c.isalnum() for c in text):
        return Verdict(False, "empty fact", 0.0)
    if len(text) > FACT_MAX_CHARS:
        return Verdict(False, f"too long for one memory ({len(text)} characters)", 0.0)
    if not is_statement(text):
        return Verdict(False, "a question, not a statement", 0.0)
    prep = _prepare(source)
    if prep.empty:
        return Verdict(False, "nothing was said", 0.0)
    claims = _claims(text)
    missing, support, n_content = _check_lexical(claims, prep, prep.stated)
    if missing and prep.addressed:
        # a fact that quotes the greeting itself ("Ann said: Hi Bob! I adopted a dog.") claims
        # nothing about the greeted name: only a name the fact talks about must be supported
        # (only where every mention of the name in the fact is in a quoted greeting)
        quoted = Counter(_fold(n) for sent in sentences(text) for n in address(sent.split(": ", 1)[-1])[0])
        mentions = Counter(_fold(t.text) for t in tokens(text))
        missing = [m for m in missing
                   if not (_fold(m) in prep.addressed and quoted[_fold(m)] >= mentions[_fold(m)] > 0)]
    if not (claims.names or claims.numbers or claims.months or n_content):
        return Verdict(False, "says nothing to remember", 0.0)
    if missing:
        spoken_to = [m for m in missing if _fold(m) in prep.addressed]
        if spoken_to and len(spoken_to) == len(missing):
            shown = ", ".join(f"'{m}'" for m in dict.fromkeys(spoken_to))
            return Verdict(False, f"only greeted, not talked about: {shown}", support, None, tuple(missing))
        said_missing, _, _ = _check_lexical(claims, prep, prep.said)
        if not said_missing:
            return Verdict(False, "a question, not a statement", support, None, tuple(missing))
        shown = ", ".join(f"'{m}'" for m in dict.fromkeys(missing))
        return Verdict(False, f"not in what was said: {shown}", support, None, tuple(missing))
    cosine = None
    if embedder is None:
        ok = support >= config.min_support
    else:
        if support >= config.min_support_with_cosine:
            cosine = _cosine(embedder, text, prep.support_text) if prep.support_text else 0.0
        ok = cosine is not None and support + config.cosine_weight * cosine >= config.min_score
    if ok:
        return Verdict(True, None, support, cosine, checks_ok=True)
    _, said_support, _ = _check_lexical(claims, prep, prep.said)
    if not prep.has_statement or said_support >= max(config.min_support, support + 0.01):
        return Verdict(False, "a question, not a statement", support, cosine, checks_ok=True)
    detail = f"support {support:.2f}" + ("" if cosine is None else f", cosine {cosine:.2f}")
    return Verdict(False, f"too little of it was said ({detail})", support, cosine, checks_ok=True)

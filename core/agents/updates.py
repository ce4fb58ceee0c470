"""No lost updates: what the Memory Manager does after a decision call (pure rules).

The model proposes ops for the facts it was sent; `reconcile` then disposes, deterministically:

1. **An ADD that repeats a shown memory** (a near-duplicate, see below) becomes a NOOP on
   that memory, one that repeats an earlier ADD of the same batch a NOOP: the bank does not
   fill with paraphrases.
2. **No fact vanishes.** A fact the model dropped (it answered NONE, or no ADD/UPDATE carries
   it) that is not a near-duplicate of a shown memory is ADDed with the turn's provenance.
   The model's NOOP for that fact is dropped (it was wrong).
3. **Supersession by time.** An ADD (the model's or a kept fact) that replaces an older active
   memory of the same speaker among the candidates (the shown memories and, for facts that
   name a slot, the speaker's nearest ones) gets `supersedes=<old id>`; the bank then marks the
   old one superseded, linked to the new one (the model's NOOP on it is dropped). A memory
   the model itself UPDATEs or DELETEs is left to the model's op. Three rules, each narrow on purpose:
   - *slot*: both texts fill the same single-valued slot of the same subject with different
     values: residence ("lives in", "moved (from A) to", "'s home is"), job title ("works
     as", "got a job as", "'s job is"), employer ("works at/for", "a new job at"),
     a favourite ("'s favourite X is");
   - *retraction*: the new text says a subject no longer does or has something ("no longer",
     "doesn't ... any more", "sold", "quit", "gave up", "stopped", "moved away from") and
     every content word of that something occurs in the old memory ("sold his car" and
     "owns a red car");
   - *correction*: the turn says it corrects ("actually", "I meant", "correction", "sorry,
     it's") and the new text is the old one with one short span (at most 4 words) swapped,
     or (`PRONOUN_CORRECTIONS`) a short pronoun-led text ("his name is Max", "it's on 4
     June") that swaps 1-2 names for names or numbers for numbers of the old one.
   The subject "Maria and others" (the extractive rewrite of "we") is Maria for these rules
   (`WE_INCLUDES_SPEAKER`); a leading "now"/"currently" is read past (`LEADING_NOW`) ("Now Maria works at
   Meta"), and so is a leading resolved date (`LEADING_TIME`: "Two weeks before 20 June 2023
   Maria moved to Paris"). `ORDINAL_CHILDREN`: "had Maria's third child" fills the children slot (3), and is
   a repeat (NOOP) when the same batch also says "Maria has three kids".
   Everything else stays active next to the older memory with its date: a second pet, a
   second hobby, a fact about a third party ("Maria's brother moved to Berlin" is not
   Maria's address). For those the Answer Agent's prompt already says "if memories
   contradict each other, trust the most recent one" (core.agents.prompts.ANSWER_SYSTEM).

**Near-duplicate** (`same_fact`; an ADD/UPDATE of the model also *carries* a fact when its
text holds every word of the fact but its function words, `carries`): cosine of the bank's embedder >=
`DUPLICATE_COSINE` AND every name and number of the fact occurs in the other text AND both or
neither are negations. The cosine alone cannot tell "on 3 June" from "on 4 June" (0.93 with
all-MiniLM-L6-v2) or "lives in Lisbon" from "no longer lives in Lisbon" (0.83); paraphrases of
the same fact score 0.89-0.99 ("Maria lives in Lisbon" / "Maria's home is Lisbon": 0.89) and
different facts of one person that pass the name and negation guards at most 0.75 ("works as a
teacher" / "works as a nurse"). The threshold sits between (calibrated on the scenario set's
pairs, tests/core/agents/test_updates.py).

Pure: no bank, no model; `embed` is the bank's embedder (texts -> unit rows). Thread-safe.
Raises nothing of its own (an `embed` failure propagates).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from typing import Callable, Iterable, Mapping, Sequence

import numpy as np

from core.agents.guards import fact_key
from core.types import Memory, MemoryOp

DUPLICATE_COSINE = 0.85  # all-MiniLM-L6-v2; see the module docstring
# Session 6 rules (each can be switched off here; docs in the module docstring):
WE_INCLUDES_SPEAKER = True  # "Maria and others moved to Berlin" (from "we") fills Maria's slots
PRONOUN_CORRECTIONS = True  # "Actually, his name is Max." corrects the memory whose name it swaps
ORDINAL_CHILDREN = True  # "had Maria's third child" fills the children slot (3); a repeat of "has three kids"
LEADING_TIME = True  # "Two weeks before 20 June 2023 Maria moved to Paris" fills Maria's residence
LEADING_NOW = True  # "Now Maria works at Meta" fills Maria's employer slot

Embed = Callable[[Sequence[str]], np.ndarray]

_WORD = re.compile(r"[A-Za-z0-9]+(?:'[A-Za-z]+)?")
_NUMBER_WORDS = {w: str(i) for i, w in enumerate(
    "zero one two three four five six seven eight nine ten eleven twelve".split())}
_ORDINAL_COUNTS = {w: str(i + 2) for i, w in enumerate("second third fourth fifth sixth".split())}
_NOT_NAMES = {"i", "the", "a", "an", "actually", "she", "he", "they", "it", "his", "her", "their",
              "my", "on", "in", "at", "and", "but", "so", "now", "also", "sorry", "yes", "no", "oh"}
_NEGATION = re.compile(
    r"\b(?:no longer|not any ?more|any ?more|does(?: not|n't)|do(?: not|n't)|is(?: not|n't)|"
    r"never|sold|quit|gave up|gave away|stopped|got rid of|moved (?:out of|away from))\b", re.I)
_CORRECTION = re.compile(
    r"\b(?:actually|i meant|i mean|correction|sorry,? (?:it'?s|i|that)|i was wrong|that'?s wrong|"
    r"not true|i misspoke|rather)\b", re.I)
_STOP = {"a", "an", "the", "his", "her", "their", "my", "its", "to", "of", "in", "at", "on", "and",
         "any", "more", "anymore", "longer", "no", "not", "is", "are", "was", "does", "do", "has",
         "have", "had", "that", "this", "for", "with", "from", "now", "old", "own"}
_WORK = {"job", "work", "works", "working", "worked", "employed", "employer"}
_VALUE_END = {"in", "on", "since", "for", "last", "this", "next", "from", "with", "and", "because",
              "after", "before", "until", "as", "yesterday", "today", "recently", "ago", "but",
              "where", "which", "who", "when", "while", "together", "now"}
_LEAD = {"a", "an", "the", "his", "her", "their", "my", "now", "currently", "still"}
_SELF = {"i", "the user", "user", "the speaker"}

# (slot, pattern): the subject is group "s", the value group "v"; a favourite adds group "a".
_SUBJ = r"^(?P<s>.+?)"
_NEW_JOB = r" (?:has |just |recently )?(?:got|started|has|took|landed|found) a (?:new )?job"
_SLOTS: tuple[tuple[str, re.Pattern[str]], ...] = tuple((slot, re.compile(p, re.I)) for slot, p in (
    ("residence", _SUBJ + r" (?:now |currently |still |also )?(?:lives|is living|resides|has lived|has been living|"
                  r"is based|is now based|settled) in (?P<v>.+)$"),
    ("residence", _SUBJ + r" (?:has |had |recently |just |has just |has recently )?(?:moved|relocated)"
                  r"(?: back)?(?: from .+?)? to (?P<v>.+)$"),
    ("residence", _SUBJ + r"'s? (?:new |current )?home is(?: now)?(?: in)? (?P<v>.+)$"),
    ("job title", _SUBJ + r" (?:now |currently |also )?works as (?P<v>.+)$"),
    ("job title", _SUBJ + _NEW_JOB + r" as (?P<v>.+)$"),
    ("job title", _SUBJ + r"'s? (?:new |current )?(?:job|profession|occupation) is (?P<v>.+)$"),
    ("job title", _SUBJ + r" is (?:now )?(?:an? )?(?P<v>[\w-]+(?: [\w-]+)?) by profession$"),
    ("employer", _SUBJ + r" (?:now |currently |also )?works (?:at|for) (?P<v>.+)$"),
    ("employer", _SUBJ + _NEW_JOB + r" (?:at|with) (?P<v>.+)$"),
    ("employer", _SUBJ + r" is (?:now )?employed (?:at|by) (?P<v>.+)$"),
    ("children", _SUBJ + r" (?:now |also )?has (?P<v>\w+) (?:kids|children)$"),
    ("children", _SUBJ + r" (?:has |have |just |recently |has just |have just )*(?:had|welcomed|gave birth to) "
                 r"(?:\w+'s |their |our |her |his |a )?(?P<v>second|third|fourth|fifth|sixth) "
                 r"(?:child|baby|kid|son|daughter)\b.*$"),
    ("favourite", _SUBJ + r"'s? (?:new |current |all-time )?(?:favou?rite|fave) (?P<a>[\w ]+?) is(?: now)? (?P<v>.+)$"),
))
_RETRACTIONS: tuple[re.Pattern[str], ...] = tuple(re.compile(p, re.I) for p in (
    _SUBJ + r" (?:is|are) (?:no longer|not) (?P<o>.+)$",
    _SUBJ + r" (?:no longer|does not|doesn't|do not|don't) (?P<o>.+)$",
    _SUBJ + r" (?:has |had |recently |just |finally )?(?:sold|gave away|gave up|quit|stopped|got rid of|"
            r"moved out of|moved away from) (?P<o>.+)$",
))


@dataclass(frozen=True)
class Slot:
    """A single-valued attribute a text fills: `subject` ("maria"), `attribute` ("residence",
    "favourite band"), `value` ("berlin"), all lower case. `derived`: read off an event
    ("had Maria's third child": 3 children) rather than stated."""

    subject: str
    attribute: str
    value: str
    derived: bool = field(default=False, repr=False)


def _words(text: str) -> list[str]:
    return [w.lower() for w in _WORD.findall(text)]


def _stem(word: str) -> str:
    word = word.lower()
    if word.endswith("'s"):
        word = word[:-2]
    if word in _WORK:
        return "work"
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        word = word[:-1]
    return word


_LEADING_WORDS = "actually|sorry|well|oh|so|and|but|yes|no|ok|okay|correction|also"
_LEADING_RE = {now: re.compile(rf"^(?:(?:{_LEADING_WORDS}{'|now|currently|nowadays|these days' if now else ''})"
                               r"\b[,:;!]?\s+|[A-Z][\w'-]* (?:meant|means)(?: that)?\s+)+", re.I)
               for now in (False, True)}


def _lead(text: str) -> str:
    """`text` without a leading "Actually,"/"Sorry, Maria meant" (and "Now", `LEADING_NOW`)."""
    return _LEADING_RE[LEADING_NOW].sub("", text)
_MONTH = r"(?:jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec)[a-z]*\b"
_TIME_TAIL = re.compile(
    r",?\s+(?:(?:on|in|at|since|until|by|around|from|during|over) (?:\d|the (?:day|week|weekend|month|year)\b|"
    + _MONTH + r"|early\b|late\b|mid\b)|"
    r"the (?:day|week|weekend|month|year|night|morning|evening)s? (?:before|after|of)\b|"
    r"last (?:week|weekend|month|year|night|\w+day)\b|(?:yesterday|today|tonight|recently|any ?more|now)$|"
    r"\w+ (?:days?|weeks?|months?|years?) (?:ago|before|after)\b|this (?:week|weekend|month|year|morning)\b).*$", re.I)


_DATE = r"\d{1,2} " + _MONTH + r"(?: \d{4})?"
_TIME_HEAD = re.compile(
    r"^(?:(?:the|a|an|\w+) (?:days?|weeks?|weekends?|months?|years?) (?:before|after|of) " + _DATE
    + r"|(?:on|in|since|during|by|around) (?:" + _DATE + r"|" + _MONTH + r"(?: \d{4})?|\d{4})"
    + r"|yesterday|today|recently|last (?:week|weekend|month|year|night|\w+day)),?\s+(?=[A-Z])", re.I)


def _clean(text: str) -> str:
    """A fact without its end punctuation, a leading "Actually,"/"Sorry, Maria meant", a leading
    time before the subject ("Two weeks before 20 June 2023 Maria moved ...", `LEADING_TIME`)
    and a trailing time ("the week before 8 May 2023", "on 7 May 2023", "any more", "now")."""
    text = " ".join(text.strip().rstrip(".!?;").split())
    text = _lead(text)
    if LEADING_TIME:
        text = _lead(_TIME_HEAD.sub("", text, count=1))
    return _TIME_TAIL.sub("", text).strip()


def _subject(raw: str, speaker: str | None) -> str:
    subject = " ".join(raw.lower().split())
    if subject.endswith("'s"):
        subject = subject[:-2]
    if WE_INCLUDES_SPEAKER and subject.endswith(" and others"):
        subject = subject[:-len(" and others")]  # the extractive rewrite of "we": the speaker is one of them
    return (speaker or "").lower() if subject in _SELF and speaker else subject


def _value(raw: str) -> str:
    words = _words(raw.replace(",", " , "))
    while words and words[0] in _LEAD:
        words.pop(0)
    out: list[str] = []
    for w in words:
        if out and (w in _VALUE_END or w.isdigit()):
            break
        out.append(_NUMBER_WORDS.get(w, w))
    return " ".join(out)


def names_numbers(text: str) -> set[str]:
    """The names (capitalised words but a few function words) and numbers (digits, or number
    words as digits) of a text, lower case, without a possessive 's.

    >>> sorted(names_numbers("Maria's dog Rex turned two on 3 June."))
    ['2', '3', 'june', 'maria', 'rex']
    """
    out: set[str] = set()
    for w in _WORD.findall(text):
        low = w.lower()
        low = low[:-2] if low.endswith("'s") else low
        if low.isdigit():
            out.add(low.lstrip("0") or "0")
        elif low in _NUMBER_WORDS:
            out.add(_NUMBER_WORDS[low])
        elif w[0].isupper() and low not in _NOT_NAMES:
            out.add(low)
    return out


def is_negation(text: str) -> bool:
    """True when a text says something stopped or is not so ("no longer", "sold", "quit")."""
    return _NEGATION.search(text) is not None


def same_fact(fact: str, other: str, cosine: float, threshold: float = DUPLICATE_COSINE) -> bool:
    """Whether `other` says `fact` (a near-duplicate, or an op text that carries it): see the
    module docstring.

    >>> same_fact("Maria lives in Lisbon.", "Maria's home is Lisbon.", 0.89)
    True
    >>> same_fact("Kim's birthday is on 4 June.", "Kim's birthday is on 3 June.", 0.93)
    False
    """
    if fact_key(fact) == fact_key(other):
        return True
    return (cosine >= threshold and names_numbers(fact) <= names_numbers(other)
            and is_negation(fact) == is_negation(other))


def carries(op_text: str, fact: str, cosine: float, threshold: float = DUPLICATE_COSINE) -> bool:
    """Whether an ADD/UPDATE text of the model says `fact`: `same_fact`, or the text holds
    every word of the fact but its function words (a merged UPDATE: "Ann also said: Rex
    loves the beach (merged with an earlier memory)"), with the same negation.

    >>> carries("Jo moved to Oslo in 2022 and likes it there", "Jo moved to Oslo in 2022.", 0.7)
    True
    >>> carries("Jo moved to Oslo", "Jo moved to Oslo in 2022.", 0.9)
    False
    """
    if same_fact(fact, op_text, cosine, threshold):
        return True
    words = {_stem(w) for w in _words(fact) if w not in _STOP}
    return (bool(words) and words <= {_stem(w) for w in _words(op_text)}
            and is_negation(fact) == is_negation(op_text))


def slot_of(text: str, speaker: str | None = None) -> Slot | None:
    """The single-valued slot a fact fills, or None (a negation fills none).

    >>> slot_of("Maria moved from Lisbon to Berlin last week.")
    Slot(subject='maria', attribute='residence', value='berlin')
    >>> slot_of("Sam's favourite band is now Muse.")
    Slot(subject='sam', attribute='favourite band', value='muse')
    >>> slot_of("Maria has a dog named Rex.") is None
    True
    """
    text = _clean(text)
    if is_negation(text):
        return None
    for attribute, pattern in _SLOTS:
        match = pattern.match(text)
        if match is None:
            continue
        value = _value(match["v"])
        if not value:
            continue
        if attribute == "favourite":
            attribute = "favourite " + " ".join(match["a"].lower().split())
        derived = value in _ORDINAL_COUNTS
        if derived and not ORDINAL_CHILDREN:
            continue
        return Slot(_subject(match["s"], speaker), attribute, _ORDINAL_COUNTS.get(value, value), derived)
    return None


def _same_value(a: str, b: str) -> bool:
    """Equal, or one is the other's leading words ("new york" / "new york city")."""
    wa, wb = a.split(), b.split()
    n = min(len(wa), len(wb))
    return n > 0 and wa[:n] == wb[:n]


def _starts_with_subject(text: str, subject: str) -> bool:
    low = " ".join(text.lower().split())
    return low.startswith(subject + " ") or low.startswith(subject + "'s ")


def retraction(text: str, speaker: str | None = None) -> tuple[str, frozenset[str]] | None:
    """(subject, the stemmed content words of what stopped) when a text is a retraction.

    >>> retraction("Tom sold his old car.")
    ('tom', frozenset({'car'}))
    >>> retraction("Tom plays tennis.") is None
    True
    """
    text = _clean(text)
    for pattern in _RETRACTIONS:
        match = pattern.match(text)
        if match is not None:
            words = frozenset(_stem(w) for w in _words(match["o"]) if w not in _STOP)
            return (_subject(match["s"], speaker), words) if words else None
    return None


def _one_span_swap(new: str, old: str) -> bool:
    """`new` is `old` with one span of 1-4 words swapped, the rest (>= 3 words, starting with
    the first) the same."""
    a, b = _words(_lead(new.strip())), _words(_lead(old.strip()))
    p = 0
    while p < min(len(a), len(b)) and a[p] == b[p]:
        p += 1
    q = 0
    while q < min(len(a), len(b)) - p and a[-1 - q] == b[-1 - q]:
        q += 1
    da, db = len(a) - p - q, len(b) - p - q
    return p >= 1 and p + q >= 3 and 1 <= da <= 4 and 1 <= db <= 4


_PRONOUN_LED = re.compile(r"^(?:his|her|its|their|it'?s|it is|it was|that'?s|that is|that was|he'?s|she'?s|"
                          r"he is|she is|he was|she was)\b", re.I)
PRONOUN_MAX_WORDS = 8


def pronoun_led(text: str) -> bool:
    """A short fact whose subject is a pronoun ("His name is Max.", "It's actually on 4 June."):
    it only means something next to the memory it talks about.

    >>> pronoun_led("Actually, his name is Max."), pronoun_led("Maria's dog is called Max.")
    (True, False)
    """
    text = _lead(" ".join(text.strip().split()))
    return bool(_PRONOUN_LED.match(text)) and len(_words(text)) <= PRONOUN_MAX_WORDS


def _pronoun_swap(new: str, old: str, speaker: str | None) -> bool:
    """A pronoun-led `new` that swaps the value(s) of `old`: it brings 1-2 names or numbers
    `old` lacks, `old` has 1-2 (besides the speaker) `new` lacks, and both are of one kind
    (names for names, numbers for numbers): "His name is Max." / "Maria's dog is called Rex.",
    "It's actually on 4 June." / "Maria's birthday is on 3 June."."""
    if not pronoun_led(new):
        return False
    a, b = names_numbers(new), names_numbers(old)
    brought, lost = a - b, b - a - {(speaker or "").lower()}
    if not (1 <= len(brought) <= 2 and 1 <= len(lost) <= 2):
        return False
    return len({w.isdigit() for w in brought | lost}) == 1


def superseded_by_rule(new: str, old: Memory, *, speaker: str | None, turn_text: str = "") -> str | None:
    """Which rule says `new` replaces the memory `old` ("slot", "retraction", "correction"),
    or None. `old` must be active, of the same speaker (when one is given), not a negation.

    >>> old = Memory(1, "Maria lives in Lisbon.", speaker="Maria")
    >>> superseded_by_rule("Maria moved to Berlin.", old, speaker="Maria")
    'slot'
    >>> superseded_by_rule("Maria's brother moved to Berlin.", old, speaker="Maria") is None
    True
    """
    if old.status != "active" or (speaker is not None and old.speaker not in (None, speaker)):
        return None
    if fact_key(new) == fact_key(old.text) or is_negation(old.text):
        return None
    new_slot, old_slot = slot_of(new, speaker), slot_of(old.text, speaker)
    if (new_slot is not None and old_slot is not None and new_slot.subject == old_slot.subject
            and new_slot.attribute == old_slot.attribute):
        return None if _same_value(new_slot.value, old_slot.value) else "slot"
    gone = retraction(new, speaker)
    if gone is not None:
        subject, words = gone
        old_words = {_stem(w) for w in _words(old.text)}
        if _starts_with_subject(old.text, subject) and words <= old_words:
            return "retraction"
        return None
    if _CORRECTION.search(turn_text or "") and _one_span_swap(new, old.text):
        return "correction"
    if PRONOUN_CORRECTIONS and _CORRECTION.search(turn_text or "") and _pronoun_swap(new, old.text, speaker):
        return "correction"
    return None


@dataclass(frozen=True)
class Reconciled:
    """What `reconcile` did: the ops to apply, and for the log the facts it kept (`kept`),
    the model ADDs it turned into NOOPs (`repeats`) and (new text, old id, rule) per
    supersession."""

    ops: list[MemoryOp]
    kept: list[str]
    repeats: list[str]
    superseded: list[tuple[str, int, str]]


def reconcile(ops: Sequence[MemoryOp], facts: Sequence[str], shown: Sequence[Memory], *, embed: Embed,
              speaker: str | None, provenance: Mapping[str, str | None], turn_text: str = "",
              candidates: Iterable[Memory] = (), threshold: float = DUPLICATE_COSINE,
              ruled: bool = True) -> Reconciled:
    """Apply the module's rules to one decision call's `ops` over `facts` and the `shown`
    memories; `ops` may also hold ADDs made without a call (facts with no related memory).

    `provenance`: the turn's `MemoryOp` fields (speaker, observed_at, source) for kept facts.
    `candidates`: more active memories a slot or retraction may supersede (beside `shown`).
    `ruled=False` keeps dropped facts but supersedes nothing (only the model's own ops).
    Deterministic for a deterministic `embed`. The order of `ops` is kept; kept facts follow.
    """
    ops = list(ops)
    writes = [i for i, op in enumerate(ops) if op.event in ("ADD", "UPDATE") and op.text]
    texts = [ops[i].text for i in writes]
    facts = [f for f in facts if f.strip()]
    shown_texts = [m.text for m in shown]
    # one embedding call for everything compared below
    pool = list(dict.fromkeys(list(facts) + texts + shown_texts))
    index = {t: n for n, t in enumerate(pool)}
    vecs = np.asarray(embed(pool), dtype=np.float32) if pool else np.zeros((0, 1), dtype=np.float32)

    def cos(a: str, b: str) -> float:
        return float(vecs[index[a]] @ vecs[index[b]])

    repeats: list[str] = []
    earlier: list[str] = []
    for i in writes:  # 1. an ADD that repeats a shown memory, or an earlier ADD of this batch
        op = ops[i]
        if op.event != "ADD":
            continue
        same = next((m for m in shown if same_fact(op.text, m.text, cos(op.text, m.text), threshold)), None)
        if same is not None:
            ops[i] = replace(op, event="NOOP", memory_id=same.id)
            repeats.append(op.text)
        elif any(same_fact(op.text, t, cos(op.text, t), threshold) for t in earlier):
            ops[i] = replace(op, event="NOOP")
            repeats.append(op.text)
        else:
            earlier.append(op.text)
    carriers = [ops[i].text for i in writes if ops[i].event in ("ADD", "UPDATE")]
    kept: list[str] = []
    for fact in facts:  # 2. no fact vanishes
        if any(carries(t, fact, cos(fact, t), threshold) for t in carriers):
            continue
        if any(same_fact(fact, m.text, cos(fact, m.text), threshold) for m in shown):
            continue
        if fact_key(fact) in {fact_key(k) for k in kept}:
            continue
        kept.append(fact)
    if kept:
        dropped = {fact_key(f) for f in kept}
        ops = [op for op in ops if not (op.event == "NOOP" and fact_key(op.text) in dropped)]
        ops += [MemoryOp("ADD", text=f, speaker=provenance.get("speaker"),
                         observed_at=provenance.get("observed_at"), source=provenance.get("source"))
                for f in kept]
    if ruled and ORDINAL_CHILDREN:
        ops = _derived_repeats(ops, speaker, repeats)
    superseded: list[tuple[str, int, str]] = []
    if ruled:
        ops = _supersede(ops, list(shown) + [m for m in candidates if m.id not in {s.id for s in shown}],
                         speaker=speaker, turn_text=turn_text, superseded=superseded)
    return Reconciled(ops, kept, repeats, superseded)


def _derived_repeats(ops: list[MemoryOp], speaker: str | None, repeats: list[str]) -> list[MemoryOp]:
    """An ADD whose slot is derived from an event ("had Maria's third child") becomes a NOOP
    when another ADD of the batch states the same slot and value ("Maria has three kids now")."""
    stated = set()
    for op in ops:
        slot = slot_of(op.text, speaker) if op.event == "ADD" and op.text else None
        if slot is not None and not slot.derived:
            stated.add((slot.subject, slot.attribute, slot.value))
    if not stated:
        return ops
    out = []
    for op in ops:
        slot = slot_of(op.text, speaker) if op.event == "ADD" and op.text else None
        if slot is not None and slot.derived and (slot.subject, slot.attribute, slot.value) in stated:
            repeats.append(op.text)
            op = replace(op, event="NOOP")
        out.append(op)
    return out


def _supersede(ops: list[MemoryOp], pool: list[Memory], *, speaker: str | None, turn_text: str,
               superseded: list[tuple[str, int, str]]) -> list[MemoryOp]:
    """3. Set `supersedes` on the ADDs that replace a memory of `pool` (the first ADD wins a
    memory; a memory another op UPDATEs or DELETEs is left to that op; the model's NOOPs on a
    superseded memory are dropped)."""
    updated = {op.memory_id for op in ops if op.event in ("UPDATE", "DELETE")}
    taken = {op.supersedes for op in ops if op.supersedes is not None}
    out = list(ops)
    for i, op in enumerate(ops):
        if op.event != "ADD" or op.supersedes is not None:
            continue
        for mem in pool:
            if mem.id in updated or mem.id in taken:
                continue
            rule = superseded_by_rule(op.text, mem, speaker=speaker, turn_text=turn_text)
            if rule is not None:
                out[i] = replace(op, supersedes=mem.id)
                taken.add(mem.id)
                superseded.append((op.text, mem.id, rule))
                break
    replaced = {old_id for _, old_id, _ in superseded}  # the model's NONE on them was wrong
    return [op for op in out if not (op.event == "NOOP" and op.memory_id in replaced)]


def wants_candidates(fact: str, speaker: str | None = None) -> bool:
    """Whether a fact could supersede by a slot or a retraction (then the manager looks up
    the speaker's nearest memories for it even when none counts as related)."""
    return (slot_of(fact, speaker) is not None or retraction(fact, speaker) is not None
            or (PRONOUN_CORRECTIONS and pronoun_led(fact)))

"""Source turns as evidence for answering: which turn to quote under a memory, and how much.

The Answer Agent (core/agents/answer.py, `sources=True`) shows, under each memory, an excerpt
of the turn the memory came from (its provenance links, `MemoryBank.sources`), so the answer
rests on what was said, not only on the manager's paraphrase:

    - 8 May, 2023: Caroline went to a support group.
      (said #1: "I went to a LGBTQ support group yesterday and it was so powerful.")
    - 8 May, 2023: Caroline is a transgender woman.
      (said #1, quoted above)

`layout(...)` builds those lines per speaker: the memories as the paper shows them (30 per
speaker), then quotes of their turns, best first, within a quote budget (a few per speaker,
a character total); a second memory from an already quoted turn points to it (a few tokens).
A source whose text is gone (its chat was deleted, the user removed it) is skipped; a memory
without a usable source is shown alone.

Pure functions over `Memory` and `MemorySource` values: no bank, no model, any thread.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from core.types import Memory, MemorySource

EXCERPT_CHARS = 200  # longest quote of a source turn, ellipses included
# How many quotes go with the paper's 30 + 30 memories: chosen by prompt size on LoCoMo val
# (the answer prompt stays within the rag baseline's; docs/results.md).
QUOTES_PER_SPEAKER = 6
QUOTE_CHARS = 2400  # all quotes of one prompt together, their line framing included
EVIDENCE_ROLES = ("added", "updated", "repeated", "imported")  # links whose turn supports the memory
ELLIPSIS = "..."

_WORD = re.compile(r"[A-Za-z0-9]+(?:['’][A-Za-z]+)?")
_STOP = frozenset("""a an the and or but if so of to in on at by for with from about as into over after before
than then that this these those there here is are was were be been being am do does did have has had not no
you your i me my we our us he him his she her they them their it its what which who when where why how can
could would should will just also very really too all any some more most much many such only other one said""".split())


def _key(word: str) -> str:
    """A word's comparison key: casefolded, cut to 5 characters ("adopted" ~ "adopt")."""
    return word.casefold().replace("’", "'").split("'")[0][:5]


def _keys(text: str, drop: frozenset[str] = frozenset()) -> set[str]:
    return {_key(w) for w in _WORD.findall(text) if w.casefold() not in _STOP and w.casefold() not in drop
            and (len(w) > 2 or w.isdigit())}


def excerpt(text: str, memory: str, limit: int = EXCERPT_CHARS) -> str:
    """`text` (whitespace collapsed) cut to at most `limit` characters around the words it
    shares with `memory`: the window holding most shared words (the earliest of equals), cut
    at word boundaries, "..." where text was left out. '' for an empty text.

    >>> excerpt("I went to the shelter last week and adopted a beagle, his name is Buddy.", "Ann adopted Buddy")
    'I went to the shelter last week and adopted a beagle, his name is Buddy.'
    >>> excerpt("Long story. " * 20 + "I adopted a dog named Buddy. " + "Bye. " * 20, "Ann has a dog named Buddy", 60)
    '...story. I adopted a dog named Buddy. Bye. Bye. Bye....'
    """
    text = " ".join(str(text or "").split())
    limit = max(len(ELLIPSIS) * 2 + 1, int(limit))
    if len(text) <= limit:
        return text
    shared = _keys(memory)
    words = [(m.start(), m.end(), _key(m.group(0)) in shared) for m in _WORD.finditer(text)]
    if not words:
        return text[:limit - len(ELLIPSIS)].rstrip() + ELLIPSIS
    room = limit - 2 * len(ELLIPSIS)
    best, best_score, hi, score = 0, -1, 0, 0
    for lo, (start, _, _) in enumerate(words):  # two pointers: windows that start at a word
        while hi < len(words) and words[hi][1] - start <= room:
            score += words[hi][2]
            hi += 1
        if score > best_score:
            best, best_score = lo, score
        if hi > lo:
            score -= words[lo][2]
        else:
            hi = lo + 1
    start = words[best][0]
    inside = [w for w in words[best:] if w[1] - start <= room]
    hits = [w for w in inside if w[2]] or inside[:1]
    if not hits:  # one word longer than the window
        return text[:limit - len(ELLIPSIS)] + ELLIPSIS
    span_lo, span_hi = hits[0][0], hits[-1][1]
    # centre the shared words in the window, inside the text
    start = min(max(0, span_lo - (room - (span_hi - span_lo)) // 2), max(0, len(text) - room))
    if start > 0:  # snap forward to a word start
        start = next((w[0] for w in words if w[0] >= start), start)
    end = min(len(text), start + room)
    if end < len(text):
        cut = text.rfind(" ", start, end + 1)
        end = cut if cut > start else end
    body = text[start:end].strip()
    return (ELLIPSIS if start > 0 else "") + body + (ELLIPSIS if end < len(text) else "")


def evidence_source(memory: Memory, links: Sequence[MemorySource]) -> MemorySource | None:
    """The link whose turn best supports `memory`: an evidence role (`EVIDENCE_ROLES`) with
    text, sharing most words with the memory (the latest of equals, e.g. the turn that updated
    it); None when no link has text."""
    best, best_score = None, -1
    words = _keys(memory.text)
    for s in links:
        if s.role not in EVIDENCE_ROLES or s.source_id is None or not s.text or not s.text.strip():
            continue
        score = len(words & _keys(s.text))
        if score >= best_score:
            best, best_score = s, score
    return best


def source_line(number: int, quote: str | None, speaker: str | None = None) -> str:
    """The line under a memory: the quote with its number, or a pointer to a quote above.

    >>> source_line(1, "I adopted Buddy."), source_line(1, None), source_line(2, "Hi", "Mel")
    ('(said #1: "I adopted Buddy.")', '(said #1, quoted above)', '(Mel said #2: "Hi")')
    """
    who = f"{speaker} said" if speaker else "said"
    return f"({who} #{number}, quoted above)" if quote is None else f'({who} #{number}: "{quote}")'


@dataclass
class Layout:
    """What `layout` put in the prompt: memory lines by speaker (each line may carry its
    source line after a newline), the memories shown (best first), the refs of the source
    turns quoted (in prompt order), and the item count (memories + quotes)."""

    groups: dict = field(default_factory=dict)
    used: list[Memory] = field(default_factory=list)
    source_refs: list[str] = field(default_factory=list)
    items: int = 0


def _by_rank(memories: Sequence[Memory]) -> list[Memory]:
    """Best first across speakers: each speaker's first, then each speaker's second, ..."""
    ranks: dict = {}
    keyed: list[tuple[int, int, Memory]] = []
    for m in memories:
        r = ranks.get(m.speaker, 0)
        ranks[m.speaker] = r + 1
        keyed.append((r, len(keyed), m))
    return [m for _, _, m in sorted(keyed, key=lambda t: (t[0], t[1]))]


def layout(memories: Sequence[Memory], links: Mapping[int, Sequence[MemorySource]], *, k: int,
           speakers: Sequence[str | None] | None = None, budget_chars: int | None = None,
           excerpt_chars: int = EXCERPT_CHARS, max_quotes: int = QUOTES_PER_SPEAKER,
           quote_chars: int = QUOTE_CHARS) -> Layout:
    """Memory lines, best first, then quotes of their source turns.

    Memories: k // 2 per speaker when the memories have exactly two speakers, else k in all
    (the paper's 30 + 30), in order; `budget_chars` (optional) bounds the characters of
    every line, memories first: the first memory that does not fit ends the list.
    Quotes: the shown memories' turns best first across speakers (`_by_rank`), at most
    `max_quotes` per speaker (in all with one speaker), each at most `excerpt_chars`, all of
    them at most `quote_chars` (and within `budget_chars`); a turn is quoted once, under the
    first of its memories in the prompt (the excerpt centred on the words of all of them),
    and the later ones point to it."""
    order = list(speakers) if speakers else list(dict.fromkeys(m.speaker for m in memories))
    present = list(dict.fromkeys(m.speaker for m in memories))
    per_speaker = len(present) == 2
    cap = max(1, k // 2) if per_speaker else max(1, k)
    counts: dict = {}
    used: list[Memory] = []
    chars = 0
    for m in memories:
        key = m.speaker if per_speaker else None
        if counts.get(key, 0) >= cap:
            continue
        cost = len(m.prompt_line()) + 4
        if budget_chars is not None and chars + cost > budget_chars:
            break
        chars += cost
        counts[key] = counts.get(key, 0) + 1
        used.append(m)
    source_of = {m.id: evidence_source(m, links.get(m.id, ())) for m in used}
    of_turn: dict[int, list[Memory]] = {}
    for m in used:
        src = source_of[m.id]
        if src is not None and src.source_id is not None:
            of_turn.setdefault(src.source_id, []).append(m)
    quotes: dict[int, str] = {}  # source id -> excerpt
    per: dict = {}
    spent = 0
    for m in _by_rank(used):
        src = source_of[m.id]
        key = m.speaker if per_speaker else None
        if src is None or src.source_id is None or src.source_id in quotes or per.get(key, 0) >= max_quotes:
            continue
        quote = excerpt(src.text or "", " ".join(x.text for x in of_turn[src.source_id]), excerpt_chars)
        cost = len(quote) + 20
        if spent + cost > quote_chars or (budget_chars is not None and chars + cost > budget_chars):
            continue
        quotes[src.source_id] = quote
        per[key] = per.get(key, 0) + 1
        spent += cost
        chars += cost
    out = Layout(groups={s: [] for s in order}, used=used, items=len(used) + len(quotes))
    numbers: dict[int, int] = {}
    for m in used:
        line = m.prompt_line()
        src = source_of[m.id]
        if src is not None and src.source_id in quotes:
            sid = src.source_id
            first = sid not in numbers
            if first:
                numbers[sid] = len(numbers) + 1
                if src.ref:
                    out.source_refs.append(src.ref)
            who = src.speaker if src.speaker and m.speaker and src.speaker != m.speaker else None
            line += "\n  " + source_line(numbers[sid], quotes[sid] if first else None, who)
        out.groups.setdefault(m.speaker, []).append(line)
    return out

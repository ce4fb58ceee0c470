"""How well a finished memory bank is grounded in its source turns (evaluation reports).

`audit_bank(bank)` checks every active memory against the text of the turns it is linked to
(`MemoryBank.sources`): a memory is *unsupported* when a name, number or date of its text
occurs in none of them (`core.agents.grounding.check_fact`'s name, number and date checks,
`Verdict.missing`, with the memory's speaker and the bank's other speakers as known names,
and the turn's time for resolved relative dates). The content-word support rule is not
applied: a paraphrase is not an invented fact. Memories whose links carry no text (no link,
only the user's own, or every source deleted) are counted apart.

Deterministic (no embedder, no model); reads the bank only. Runs on the caller's thread.
"""

from __future__ import annotations

from typing import Sequence

from core.agents.grounding import Source, check_fact
from core.types import Memory, MemorySource

_CHUNK = 500


def missing_claims(memory: Memory, links: Sequence[MemorySource], names: Sequence[str] = ()) -> list[str] | None:
    """The names, numbers and dates of `memory` found in none of its linked turns (their
    texts joined; a date may come from any one turn's time). None when no link has text.

    >>> from core.types import MemorySource as S
    >>> m = Memory(1, "Sam has a cat named Luna", speaker="Sam")
    >>> missing_claims(m, [S(1, "turn", "added", "I have a dog called Rex.")])
    ['Luna']
    >>> missing_claims(m, [S(1, "turn", "added", None)]) is None
    True
    """
    texts = [s for s in links if s.text and s.text.strip()]
    if not texts:
        return None
    joined = "\n".join(s.text or "" for s in texts)
    names = tuple(n for n in names if n and n != memory.speaker)
    times = list(dict.fromkeys(s.said_at for s in texts if s.said_at)) or [memory.observed_at]
    missing: set[str] | None = None
    for when in times:  # a relative date resolves against the time of the turn that said it
        verdict = check_fact(memory.text, Source(joined, memory.speaker, when, names=names))
        now = set(verdict.missing)
        missing = now if missing is None else missing & now
        if not missing:
            return []
    return sorted(missing or ())


def audit_bank(bank) -> dict:
    """`{"memories", "with_source_text", "no_source_text", "unsupported", "unsupported_share"}`
    over the active memories of `bank` (`unsupported_share`: of those with source text; None
    when there are none)."""
    memories = bank.list()
    names = list(bank.speakers())
    unsupported = no_text = 0
    for start in range(0, len(memories), _CHUNK):
        chunk = memories[start:start + _CHUNK]
        links = bank.sources([m.id for m in chunk])
        for m in chunk:
            missing = missing_claims(m, links.get(m.id, ()), names)
            if missing is None:
                no_text += 1
            elif missing:
                unsupported += 1
    with_text = len(memories) - no_text
    return {"memories": len(memories), "with_source_text": with_text, "no_source_text": no_text,
            "unsupported": unsupported,
            "unsupported_share": round(unsupported / with_text, 4) if with_text else None}

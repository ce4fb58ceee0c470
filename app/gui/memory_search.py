"""What the memory panel's search box lists: the memories that match, never the whole list
re-ordered.

A memory matches a query when any of these holds:
- the bank's keyword search finds it (FTS5: the query's words, stemmed);
- its text contains the query as typed (case-insensitive), so "Port" already finds "Porto"
  while the word is being typed;
- its embedding's cosine to the query's is at least the embedder's search floor
  (`search_floor`): a match by meaning ("allergy" finds "Alex is allergic to peanuts").

The floor is per embedding model: `SEARCH_FLOORS` by embedder name, or the embedder's own
`search_min_score` attribute when it has one. An embedder with neither (e.g. the hashed test
embedder, whose cosines are not calibrated) gets keyword and text matches only.

all-MiniLM-L6-v2's floor, 0.30, was measured on short queries against 14 one-line memories
of two people (15 queries, 20 query/memory pairs labelled related, 176 unrelated): related
pairs have a median cosine of 0.34, unrelated ones 0.09 (99th percentile 0.38). At 0.30,
60% of the related pairs are found by meaning (the rest mostly by their words) and 4 of the
176 unrelated pairs pass, all of them places for a place ("Porto" -> "Sam lives in Lisbon",
0.38). The chat floor (`chat_min_score`, 0.20) lets twice as many unrelated pairs through
(8 of 176), which suits a prompt (the Answer Agent reads and ignores) but not a list the user
reads.

Threads: `matching` runs on the panel's "db" worker and only calls the bank.
"""

from __future__ import annotations

from core.types import Memory

__all__ = ["SEARCH_FLOORS", "matching", "search_floor"]

SEARCH_FLOORS = {"all-MiniLM-L6-v2": 0.30}
RRF_K = 60  # reciprocal-rank fusion constant, as the bank's hybrid search


def search_floor(embedder) -> float | None:
    """The cosine from which a memory matches a search by meaning; None: no match by meaning."""
    own = getattr(embedder, "search_min_score", None)
    if own is not None:
        return float(own)
    return SEARCH_FLOORS.get(getattr(embedder, "name", ""))


def matching(bank, query: str, *, speaker: str | None, status: str | None, floor: float | None,
             k: int = 100, limit: int = 2000) -> tuple[list[Memory], dict[int, float]]:
    """(the memories matching `query`, best first; memory id -> cosine for those matched by
    meaning). Keyword, text and meaning ranks are fused (reciprocal rank); only matches are
    returned, at most `k` from each of the keyword and meaning searches and every text match
    among the newest `limit` memories. An empty query is InvalidInputError (the bank's)."""
    keyword = bank.search(query, k=k, mode="keyword", speaker=speaker, status=status)
    meaning = [] if floor is None else [
        hit for hit in bank.search(query, k=k, mode="vector", speaker=speaker, status=status) if hit.score >= floor]
    needle = " ".join(query.split()).casefold()
    text = [m for m in bank.list(status=status, speaker=speaker, limit=limit)
            if needle in " ".join(m.text.split()).casefold()]
    rows: dict[int, Memory] = {}
    fused: dict[int, float] = {}
    for ranked in ([h.memory for h in keyword], [h.memory for h in meaning], text):
        for rank, mem in enumerate(ranked):
            rows.setdefault(mem.id, mem)
            fused[mem.id] = fused.get(mem.id, 0.0) + 1.0 / (RRF_K + rank + 1)
    order = sorted(rows, key=lambda i: (-fused[i], -i))
    return [rows[i] for i in order], {h.memory.id: h.score for h in meaning}

"""Helpers of the chat pipeline's edit and resend and of its reply statistics.

`undo_turns(bank, conversation_id, removed)` undoes, newest first, the memory batches the
removed user messages' turns wrote ("chat:<conversation>/<message>" in the event log),
skipping a batch undone meanwhile or changed since (logged), and returns what was reverted.
`reply_stats(backend, text, started, first, ended)` is a reply's meta: the model's name, the
time to its first token and its speed. Any thread (the bank takes its lock).
"""

from __future__ import annotations

import logging

from core.errors import ConflictError, NotFoundError
from core.types import MemoryChanges, TurnRef

log = logging.getLogger(__name__)


def change_count(changes: MemoryChanges | None) -> int:
    return 0 if changes is None else len(changes.added) + len(changes.updated) + len(changes.deleted)


def undo_turns(bank, conversation_id: int, removed) -> MemoryChanges:
    """Undo what the user messages among `removed` (ChatMessages) wrote to memory."""
    undone = MemoryChanges()
    turns = [str(TurnRef.chat(conversation_id, m.id)) for m in removed if m.role == "user"]
    for batch in bank.chats.turn_batches(turns):
        try:
            ch = bank.undo(batch=batch)
        except (NotFoundError, ConflictError) as exc:  # undone meanwhile, or changed since
            log.info("batch %d of a replaced turn not undone: %s", batch, exc)
            continue
        undone.added.extend(ch.added)
        undone.updated.extend(ch.updated)
        undone.deleted.extend(ch.deleted)
    return undone


def reply_stats(backend, text: str, started: float, first: float | None, ended: float) -> dict:
    """{"model", "tokens", "ttft_s", "tokens_per_s"} of one reply (perf_counter times; the
    speed counts the tokens after the first one; counting is informative only)."""
    try:
        tokens = int(backend.count_tokens(text)) if text else 0
    except Exception:
        tokens = 0
    out: dict = {"model": str(getattr(backend, "name", "") or ""), "tokens": tokens}
    if first is not None:
        out["ttft_s"] = round(first - started, 3)
        if tokens > 1 and ended > first:
            out["tokens_per_s"] = round((tokens - 1) / (ended - first), 1)
    return out

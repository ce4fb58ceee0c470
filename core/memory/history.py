"""Undo and forget, worked from the `memory_events` log (used by `MemoryBank`).

Undo reverts events, never rewrites them: each reverted event is marked `undone` and an UNDO
event records the reversal (with `reverts` = the event's id). Without an event id, undo takes
the newest batch that still has undoable events (one manager turn, one import, one user
action) and reverts all of it in reverse order, in one transaction. UNDO, NOOP, REJECT and
FORGET events, and history copied in by an import, are not undoable. Undoing an UPDATE or
EDIT drops the source links it made; undoing a SUPERSEDE makes the older memory active again
(no `superseded_by`) and drops its "superseded" link.

Forget is the privacy exit: the row, its vector, its FTS entry, every event about it (and
manager NOOP events quoting its text, compared case- and whitespace-insensitively) are deleted
(the connection runs with `PRAGMA secure_delete` on), the WAL is checkpointed, and the
optional text log (`core.textlog`) is emptied and the lines of the terminal chat's history
(`core.paths.CHAT_HISTORY_NAME`, in the bank's folder) carrying the text are removed, so the
text survives in no file of the data folder. One FORGET event (no text) remains so the history
shows that something was forgotten. Its source links go too; with `sources=True` the text of
those sources is removed as well (`core.memory.sources.remove_text`), in the same transaction,
and from the chat history file too.
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.paths import CHAT_HISTORY_NAME
from core.textlog import erase_lines, erase_text_log
from core.types import MemoryChanges, MemoryEvent, TurnRef

from core.memory import sources as _sources
from core.memory.db import checkpoint
from core.memory.rows import EVENT_COLS, Batch, fetch_memory, row_to_event

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

log = logging.getLogger(__name__)

UNDOABLE = ("ADD", "IMPORT", "UPDATE", "EDIT", "DELETE", "RESTORE", "SUPERSEDE")
_COLS = "id, memory_id, event, old_text, new_text, old_status, new_status, undone, origin"
_MARKS = ",".join("?" * len(UNDOABLE))


def _batch_events(conn, batch: int) -> list[tuple]:
    return conn.execute(f"SELECT {_COLS} FROM memory_events WHERE batch = ? AND undone = 0 AND "
                        f"origin IS NULL AND event IN ({_MARKS}) ORDER BY id DESC", (batch, *UNDOABLE)).fetchall()


def _pick_events(conn, event_id: int | None, batch: int | None = None) -> list[tuple]:
    if batch is not None:
        if isinstance(batch, bool) or not isinstance(batch, int):
            raise NotFoundError(f"There is no change with batch id {batch!r}.")
        events = _batch_events(conn, batch)
        if not events:
            raise NotFoundError(f"Change #{batch} has nothing left to undo.")
        return events
    if event_id is None:
        row = conn.execute(f"SELECT batch FROM memory_events WHERE undone = 0 AND origin IS NULL "
                           f"AND event IN ({_MARKS}) ORDER BY id DESC LIMIT 1", UNDOABLE).fetchone()
        if row is None:
            raise NotFoundError("There is nothing to undo.")
        return _batch_events(conn, row[0])
    if isinstance(event_id, bool) or not isinstance(event_id, int):
        raise NotFoundError(f"There is no event with id {event_id!r}.")
    row = conn.execute(f"SELECT {_COLS} FROM memory_events WHERE id = ?", (event_id,)).fetchone()
    if row is None:
        raise NotFoundError(f"There is no event #{event_id}.")
    if row[2] not in UNDOABLE or row[8] is not None:
        raise InvalidInputError(f"Event #{event_id} ({row[2]}{', imported' if row[8] else ''}) cannot be undone.")
    if row[7]:
        raise ConflictError(f"Event #{event_id} was already undone.")
    return [row]


def undo(bank: "MemoryBank", event_id: int | None, *, batch: int | None = None,
         actor: str = "user") -> MemoryChanges:
    """See `MemoryBank.undo`. Picks, re-embeds and reverts inside one write transaction."""
    with bank.batch(actor, None) as writer:
        events = _pick_events(writer.conn, event_id, batch)
        vecs = iter(bank.embed([e[3] for e in events if e[2] in ("UPDATE", "EDIT")]))
        for e in events:
            _revert(writer, e, next(vecs) if e[2] in ("UPDATE", "EDIT") else None)
        marks = ",".join("?" * len(events))
        writer.conn.execute(f"UPDATE memory_events SET undone = 1 WHERE id IN ({marks})", [e[0] for e in events])
    return writer.changes


def _revert(batch: Batch, e: tuple, vec) -> None:
    eid, mid, event, old_text, new_text, old_status, new_status = e[:7]
    mem = fetch_memory(batch.conn, mid) if mid is not None else None
    if mem is None:
        raise ConflictError(f"Event #{eid} cannot be undone: its memory no longer exists.")
    stale = ConflictError(f"Memory #{mid} changed after event #{eid}; undo the later change first.")
    if event in ("ADD", "IMPORT"):
        if mem.status != new_status:
            raise stale
        if mem.status != "deleted":
            batch.set_status(mem, "deleted", event="UNDO", reverts=eid)
    elif event in ("UPDATE", "EDIT"):
        if mem.text != new_text:
            raise stale
        batch.set_text(mem, old_text, vec, event="UNDO", reverts=eid)
        _sources.unlink_event(batch.conn, eid)
    elif event == "SUPERSEDE":
        if mem.status != new_status:
            raise stale
        batch.set_status(mem, old_status or "active", event="UNDO", reverts=eid, clear_superseded=True)
        _sources.unlink_event(batch.conn, eid)
    else:  # DELETE / RESTORE
        if mem.status != new_status:
            raise stale
        batch.set_status(mem, old_status or "active", event="UNDO", reverts=eid)


def forget(bank: "MemoryBank", memory_ids: list[int], *, sources: bool = False) -> MemoryChanges:
    """See `MemoryBank.forget`: all of `memory_ids` in one transaction. NotFoundError for an
    unknown id (nothing is forgotten)."""
    texts: set[str] = set()
    with bank.batch("user", None) as batch:
        linked: list[int] = []
        for mem in [batch.require(i) for i in memory_ids]:
            linked += _erase(batch, mem, texts)
        if sources and linked:
            texts.update(_source_texts(batch.conn, linked))
            _sources.remove_text(batch.conn, linked)
    _leave_no_trace(bank, "forget", texts)
    log.info("forgot %d memories (%s)%s", len(memory_ids), ", ".join(f"#{i}" for i in memory_ids),
             " and the text of their sources" if sources else "")
    return batch.changes


def rejected(conn, turn: TurnRef | None, limit: int) -> list[MemoryEvent]:
    """See `MemoryBank.rejected` (under the bank's `reader()`)."""
    sql = f"SELECT {EVENT_COLS} FROM memory_events WHERE event = 'REJECT'"
    params: list = []
    if turn is not None:
        sql += " AND turn = ?"
        params.append(str(turn))
    rows = conn.execute(sql + " ORDER BY id DESC LIMIT ?", (*params, max(0, int(limit)))).fetchall()
    return [row_to_event(r) for r in rows]


def remove_source_text(bank: "MemoryBank", source_ids: list[int]) -> int:
    """See `MemoryBank.remove_source_text`."""
    with bank.batch("user", None) as batch:  # writes no event: removing a turn's text is not a memory change
        texts = _source_texts(batch.conn, source_ids)
        removed = _sources.remove_text(batch.conn, source_ids)
    _leave_no_trace(bank, "source text removal", texts)
    return removed


def _source_texts(conn, source_ids: list[int]) -> list[str]:
    """The text the given sources still hold (a turn's own, a chat message's content)."""
    ids = [i for i in dict.fromkeys(source_ids) if isinstance(i, int) and not isinstance(i, bool)]
    out: list[str] = []
    for start in range(0, len(ids), 500):
        chunk = ids[start:start + 500]
        out += [t for (t,) in conn.execute(
            "SELECT coalesce(s.text, m.content) FROM sources s LEFT JOIN main.messages m ON m.id = s.message_id "
            f"WHERE s.id IN ({','.join('?' * len(chunk))})", chunk) if t]
    return out


def _leave_no_trace(bank: "MemoryBank", why: str, texts: set[str] | list[str]) -> None:
    with bank.reader() as conn:
        checkpoint(conn, why)
    erase_text_log(bank.path.parent / "logs")
    erase_lines(bank.path.parent / CHAT_HISTORY_NAME, texts)


def _key(text: str) -> str:
    return " ".join(text.split()).casefold().rstrip(".!")


def _erase(batch: Batch, mem, erased: set[str]) -> list[int]:
    """The row, its vector, its links and every event quoting its text; one FORGET event
    remains. Adds the texts erased to `erased`; returns the sources it was linked to."""
    texts = {mem.text}
    for old, new in batch.conn.execute("SELECT old_text, new_text FROM memory_events WHERE memory_id = ?",
                                       (mem.id,)):
        texts.update(t for t in (old, new) if t)
    batch.conn.execute("DELETE FROM memory_events WHERE memory_id = ?", (mem.id,))
    keys = {_key(t) for t in texts}
    quoting = [eid for eid, old, new in batch.conn.execute(
        "SELECT id, old_text, new_text FROM memory_events WHERE memory_id IS NULL AND "
        "(old_text IS NOT NULL OR new_text IS NOT NULL)") if _key(old or "") in keys or _key(new or "") in keys]
    for eid in quoting:
        batch.conn.execute("DELETE FROM memory_events WHERE id = ?", (eid,))
    linked = _sources.unlink_memory(batch.conn, mem.id)
    batch.remove(mem)
    batch.event(mem.id, "FORGET")
    erased.update(texts)
    return linked

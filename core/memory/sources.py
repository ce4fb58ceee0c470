"""Provenance: the turns memories came from (`sources`) and the links to them (`memory_sources`).

A source is one turn the Memory Manager read (or an import's file):

- kind "chat": a user message of a stored chat. Its text stays in `messages` and is read by
  join, never copied; `ref` is "chat:<conversation>/<message>". When the chat is purged,
  `message_id` becomes NULL (ON DELETE SET NULL) and the link reads "source deleted"
  (`MemorySource.text` None). A temporary chat's turn (ids below zero) is never kept.
- kind "turn": any other turn (ingest, evaluation, a tool), unique by its `ref` (e.g.
  "locomo:conv-26/D1:3"); its text is kept with the source (a source without a ref is a new
  row each time). Banks migrated from before provenance have turn sources without text.
- kind "import": a source carried in by an import (its `ref`, e.g. "import:file.jsonl").

A link says how a memory used a source (`ROLES`): "added" (the turn gave the fact),
"updated" (the turn changed it; earlier links stay), "repeated" (the turn said it again: a
NOOP), "superseded" (on the older memory: this turn replaced it), "imported"; and, with no
source at all (`source_id` NULL, read as kind "user"), "remembered" (the user added it by
hand) and "edited" (the user changed its text). Each link records the event that made it,
so undoing that event drops it.

Everything here runs inside the caller's open transaction on the bank's connection (the
bank's `batch`), takes no lock and commits nothing. Foreign keys are on, but links are kept
consistent by code: forgetting a memory deletes its links (core.memory.history).
"""

from __future__ import annotations

import json
from typing import Iterable

from core.errors import InvalidInputError, NotFoundError
from core.types import MemorySource, SourceTurn, TurnRef

from core.memory.db import Connection, inserted_id, now_iso
from core.memory.text import clean_optional, clean_time

KINDS = ("chat", "turn", "user", "import")
ROLES = ("added", "updated", "repeated", "edited", "remembered", "imported", "superseded")
_CHUNK = 500


def check_source(source) -> SourceTurn | None:
    """`source` validated (InvalidInputError for anything but a usable `SourceTurn`)."""
    if source is None:
        return None
    if not isinstance(source, SourceTurn):
        raise InvalidInputError(f"Expected a SourceTurn, got {type(source).__name__}.")
    mid = source.message_id
    if mid is not None and (isinstance(mid, bool) or not isinstance(mid, int)):
        raise InvalidInputError(f"A source's message id must be a whole number, not {mid!r}.")
    for name in ("text", "speaker", "said_at", "ref"):
        value = getattr(source, name)
        if value is not None and not isinstance(value, str):
            raise InvalidInputError(f"A source's {name} must be text, not {type(value).__name__}.")
    if mid is None and not clean_optional(source.text or "") and not clean_optional(source.ref or ""):
        raise InvalidInputError("A source turn needs its text, a ref or a chat message id.")
    return source


def resolve(conn: Connection, source: SourceTurn, *, turn: str | None = None, kind: str = "turn") -> int | None:
    """The id of `source`'s row, created if missing; None for a temporary chat's turn.

    A chat turn is found by its message (the conversation is read from `messages`); a message
    deleted meanwhile gives a chat source without a message (it reads "source deleted"), its
    ref taken from `source.ref` or the batch's chat `turn`. Any other turn is found by `ref`
    (a source whose text was removed gets the text again when the same turn comes back);
    `kind` ("turn" or "import") is used when it is created."""
    if kind not in ("turn", "import"):
        raise InvalidInputError(f"Unknown source kind {kind!r}.")
    speaker, said_at = clean_optional(source.speaker), clean_time(source.said_at)
    now = now_iso()
    if source.message_id is not None:
        mid = int(source.message_id)
        if mid < 0:
            return None
        row = conn.execute("SELECT id FROM sources WHERE message_id = ?", (mid,)).fetchone()
        if row is not None:
            conn.execute("UPDATE sources SET speaker = coalesce(speaker, ?), said_at = coalesce(said_at, ?) "
                         "WHERE id = ?", (speaker, said_at, row[0]))
            return int(row[0])
        msg = conn.execute("SELECT conversation_id FROM main.messages WHERE id = ?", (mid,)).fetchone()
        if msg is not None:
            return inserted_id(conn.execute(
                "INSERT INTO sources(kind, message_id, ref, speaker, said_at, created_at) VALUES "
                "('chat', ?, ?, ?, ?, ?)", (mid, str(TurnRef.chat(int(msg[0]), mid)), speaker, said_at, now)))
        ref = clean_optional(source.ref or "")
        parsed = TurnRef.of(turn)
        if ref is None and parsed is not None and parsed.is_chat and parsed.message_id == mid:
            ref = str(parsed)
        if ref is not None:
            row = conn.execute("SELECT id FROM sources WHERE kind = 'chat' AND ref = ? AND message_id IS NULL",
                               (ref,)).fetchone()
            if row is not None:
                return int(row[0])
        return inserted_id(conn.execute(
            "INSERT INTO sources(kind, ref, speaker, said_at, created_at) VALUES ('chat', ?, ?, ?, ?)",
            (ref, speaker, said_at, now)))
    ref, text = clean_optional(source.ref or ""), clean_optional(source.text or "")
    if ref is not None:
        row = conn.execute("SELECT id FROM sources WHERE ref = ? AND kind != 'chat'", (ref,)).fetchone()
        if row is not None:
            conn.execute("UPDATE sources SET text = coalesce(text, ?), speaker = coalesce(speaker, ?), "
                         "said_at = coalesce(said_at, ?) WHERE id = ?", (text, speaker, said_at, row[0]))
            return int(row[0])
    return inserted_id(conn.execute(
        "INSERT INTO sources(kind, ref, speaker, said_at, text, created_at) VALUES (?, ?, ?, ?, ?, ?)",
        (kind, ref, speaker, said_at, text, now)))


def link(conn: Connection, memory_id: int, source_id: int | None, role: str, event_id: int | None) -> None:
    """Link a memory to a source (`source_id` None: the user's own action). The same memory,
    source and role are linked once."""
    if role not in ROLES:
        raise InvalidInputError(f"Unknown source role {role!r}; expected one of {', '.join(ROLES)}.")
    if source_id is not None and conn.execute(
            "SELECT 1 FROM memory_sources WHERE memory_id = ? AND source_id = ? AND role = ?",
            (memory_id, source_id, role)).fetchone() is not None:
        return
    conn.execute("INSERT INTO memory_sources(memory_id, source_id, role, linked_at, event_id) "
                 "VALUES (?, ?, ?, ?, ?)", (memory_id, source_id, role, now_iso(), event_id))


def unlink_event(conn: Connection, event_id: int) -> None:
    """Drop the links the event `event_id` made (its change was undone)."""
    conn.execute("DELETE FROM memory_sources WHERE event_id = ?", (event_id,))


def unlink_memory(conn: Connection, memory_id: int) -> list[int]:
    """Drop every link of a memory (it is being forgotten); returns the sources it linked to."""
    ids = [int(r[0]) for r in conn.execute(
        "SELECT DISTINCT source_id FROM memory_sources WHERE memory_id = ? AND source_id IS NOT NULL", (memory_id,))]
    conn.execute("DELETE FROM memory_sources WHERE memory_id = ?", (memory_id,))
    return ids


def _removed(meta: str | None) -> bool:
    try:
        value = json.loads(meta) if meta else {}
    except ValueError:
        return False
    return isinstance(value, dict) and bool(value.get("removed"))


def read(conn: Connection, memory_ids: Iterable[int]) -> dict[int, list[MemorySource]]:
    """Every given memory's links, oldest first (an id without links, or unknown: [])."""
    ids = list(dict.fromkeys(int(i) for i in memory_ids))
    out: dict[int, list[MemorySource]] = {i: [] for i in ids}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start:start + _CHUNK]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            "SELECT l.memory_id, l.source_id, s.id, s.kind, l.role, s.text, s.speaker, s.said_at, s.ref, "
            "l.linked_at, m.id, m.content, m.meta, m.created_at FROM memory_sources l "
            "LEFT JOIN sources s ON s.id = l.source_id LEFT JOIN main.messages m ON m.id = s.message_id "
            f"WHERE l.memory_id IN ({marks}) ORDER BY l.memory_id, l.id", chunk).fetchall()
        for (memory_id, source_id, found, kind, role, text, speaker, said_at, ref, linked_at,
             msg_id, content, meta, msg_at) in rows:
            if source_id is None:
                kind = "user"
            elif found is None:  # a dangling link (a hand edit): the source is gone
                kind = "turn"
            if kind == "chat":
                text = content if msg_id is not None and not _removed(meta) else None
                said_at = said_at or msg_at
            out[int(memory_id)].append(MemorySource(
                source_id=None if source_id is None else int(source_id), kind=kind, role=role, text=text,
                speaker=speaker, said_at=said_at, ref=ref, linked_at=linked_at))
    return out


def remove_text(conn: Connection, source_ids: Iterable[int]) -> int:
    """Remove the text of the given sources: a turn's kept text becomes NULL; a chat source's
    message gets the content "" and meta {"removed": true} (the row stays, so the chat keeps
    its shape). REJECT events recorded for those turns (they quote the turn's facts) are
    deleted. NotFoundError for an unknown id (nothing removed: the caller's transaction rolls
    back). Returns how many sources still had text."""
    removed = 0
    for sid in dict.fromkeys(source_ids):
        if isinstance(sid, bool) or not isinstance(sid, int):
            raise NotFoundError(f"There is no source {sid!r}.")
        row = conn.execute("SELECT kind, message_id, text, ref FROM sources WHERE id = ?", (sid,)).fetchone()
        if row is None:
            raise NotFoundError(f"There is no source #{sid}.")
        kind, message_id, text, ref = row
        if kind == "chat" and message_id is not None:
            msg = conn.execute("SELECT content, meta FROM main.messages WHERE id = ?", (message_id,)).fetchone()
            if msg is not None and (msg[0] or not _removed(msg[1])):
                try:
                    meta = json.loads(msg[1]) if msg[1] else {}
                except ValueError:
                    meta = {}
                meta = meta if isinstance(meta, dict) else {}
                meta["removed"] = True
                conn.execute("UPDATE main.messages SET content = '', meta = ? WHERE id = ?",
                             (json.dumps(meta, ensure_ascii=False), message_id))
                removed += 1
        elif kind != "chat" and text is not None:
            conn.execute("UPDATE sources SET text = NULL WHERE id = ?", (sid,))
            removed += 1
        if ref is not None:
            conn.execute("DELETE FROM memory_events WHERE event = 'REJECT' AND turn = ?", (ref,))
    return removed

"""Row-level memory changes and their `memory_events`, inside one open transaction.

A `Batch` is created by the bank after `BEGIN IMMEDIATE`; every change it makes writes the
row, its vector, and an event carrying the batch number (so `undo` can revert a whole manager
turn or import at once). Mirror updates are queued in `mirror_ops` and applied by the bank
only after COMMIT. Nothing here takes locks or commits.
"""

from __future__ import annotations

import numpy as np

from core.errors import NotFoundError
from core.types import Memory, MemoryChanges, MemoryEvent, TurnRef

from core.memory.db import Connection, inserted_id, now_iso
from core.memory.index import delete_vector, write_vector
from core.memory.text import text_key

MEM_COLS = "id, text, speaker, observed_at, created_at, updated_at, source, status, version"
EVENT_COLS = "id, memory_id, event, old_text, new_text, actor, at, turn, undone"
STATUSES = ("active", "deleted", "superseded")
_BATCH_TURN = object()  # default for Batch.event(turn=...): the batch's own turn


def row_to_memory(row) -> Memory:
    return Memory(id=int(row[0]), text=row[1], speaker=row[2], observed_at=row[3], created_at=row[4],
                  updated_at=row[5], source=row[6], status=row[7], version=int(row[8]))


def row_to_event(row) -> MemoryEvent:
    return MemoryEvent(id=int(row[0]), memory_id=None if row[1] is None else int(row[1]), event=row[2],
                       old_text=row[3], new_text=row[4], actor=row[5], at=row[6], turn=row[7],
                       undone=bool(row[8]))


def fetch_memory(conn: Connection, memory_id: int) -> Memory | None:
    row = conn.execute(f"SELECT {MEM_COLS} FROM memories WHERE id = ?", (int(memory_id),)).fetchone()
    return None if row is None else row_to_memory(row)


def fetch_memories(conn: Connection, ids: list[int]) -> dict[int, Memory]:
    out: dict[int, Memory] = {}
    for start in range(0, len(ids), 500):
        chunk = [int(i) for i in ids[start:start + 500]]
        marks = ",".join("?" * len(chunk))
        for row in conn.execute(f"SELECT {MEM_COLS} FROM memories WHERE id IN ({marks})", chunk):
            out[int(row[0])] = row_to_memory(row)
    return out


def check_id(memory_id) -> int:
    if isinstance(memory_id, bool) or not isinstance(memory_id, (int, np.integer)):
        raise NotFoundError(f"There is no memory with id {memory_id!r}.")
    return int(memory_id)


class Batch:
    """One transaction's worth of memory changes (see module docstring)."""

    def __init__(self, conn: Connection, actor: str, turn: TurnRef | str | None) -> None:
        self.conn = conn
        self.actor = actor
        ref = TurnRef.of(turn)
        self.turn = None if ref is None else str(ref)  # the stored form
        self.id = int(conn.execute("SELECT coalesce(max(batch), 0) + 1 FROM memory_events").fetchone()[0])
        self.changes = MemoryChanges(turn=ref)
        self.mirror_ops: list[tuple] = []

    def require(self, memory_id, *, active: bool = False) -> Memory:
        """The memory, or NotFoundError (also for a non-active one when `active`)."""
        mem = fetch_memory(self.conn, check_id(memory_id))
        if mem is None:
            raise NotFoundError(f"There is no memory #{memory_id}.")
        if active and mem.status != "active":
            raise NotFoundError(f"Memory #{memory_id} is {mem.status}, not active.")
        return mem

    def event(self, memory_id: int | None, event: str, *, old_text=None, new_text=None, old_status=None,
              new_status=None, reverts=None, actor=None, at=None, turn=_BATCH_TURN, undone=False,
              origin=None) -> int:
        cur = self.conn.execute(
            "INSERT INTO memory_events(batch, memory_id, event, old_text, new_text, old_status, new_status,"
            " actor, at, turn, undone, reverts, origin) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.id, memory_id, event, old_text, new_text, old_status, new_status, actor or self.actor,
             at or now_iso(), self.turn if turn is _BATCH_TURN else turn, int(undone), reverts, origin))
        eid = inserted_id(cur)
        self.changes.batch_id = self.id
        if origin is None:
            self.changes.event_ids.append(eid)
        return eid

    def insert(self, text: str, vec: np.ndarray, *, speaker=None, observed_at=None, source=None,
               status: str = "active", created_at=None, updated_at=None, version: int = 1,
               event: str | None = "ADD") -> Memory:
        now = now_iso()
        cur = self.conn.execute(
            "INSERT INTO memories(text, text_key, speaker, observed_at, created_at, updated_at, source,"
            " status, version) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (text, text_key(text), speaker, observed_at, created_at or now, updated_at or created_at or now,
             source, status, int(version)))
        mid = inserted_id(cur)
        write_vector(self.conn, mid, vec)
        mem = self.require(mid)
        if event:
            self.event(mid, event, new_text=text, new_status=status)
        self.mirror_ops.append(("upsert", mid, vec, status, speaker))
        self.changes.added.append(mem)
        return mem

    def set_text(self, mem: Memory, text: str, vec: np.ndarray, *, event: str = "UPDATE",
                 reverts: int | None = None) -> Memory:
        self.conn.execute(
            "UPDATE memories SET text = ?, text_key = ?, updated_at = ?, version = version + 1 WHERE id = ?",
            (text, text_key(text), now_iso(), mem.id))
        write_vector(self.conn, mem.id, vec, replace=True)
        new = self.require(mem.id)
        self.event(mem.id, event, old_text=mem.text, new_text=text, old_status=mem.status,
                   new_status=mem.status, reverts=reverts)
        self.mirror_ops.append(("upsert", mem.id, vec, new.status, new.speaker))
        self.changes.updated.append(new)
        return new

    def set_status(self, mem: Memory, status: str, *, event: str, reverts: int | None = None) -> Memory:
        self.conn.execute("UPDATE memories SET status = ?, updated_at = ?, version = version + 1 WHERE id = ?",
                          (status, now_iso(), mem.id))
        new = self.require(mem.id)
        old_text = mem.text if status != "active" else None
        new_text = mem.text if status == "active" else None
        self.event(mem.id, event, old_text=old_text, new_text=new_text, old_status=mem.status,
                   new_status=status, reverts=reverts)
        self.mirror_ops.append(("status", mem.id, status))
        (self.changes.added if status == "active" else self.changes.deleted).append(new)
        return new

    def noop(self, memory_id: int | None, text: str | None) -> int:
        old = None
        if memory_id is not None:
            old = self.require(memory_id).text
        self.changes.noops += 1
        return self.event(memory_id, "NOOP", old_text=old, new_text=text or None)

    def remove(self, mem: Memory) -> None:
        """Hard delete of the row and its vector (the FTS entry goes through the trigger)."""
        self.conn.execute("DELETE FROM memories WHERE id = ?", (mem.id,))
        delete_vector(self.conn, mem.id)
        self.mirror_ops.append(("remove", mem.id))
        self.changes.forgotten.append(mem.id)

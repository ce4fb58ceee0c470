"""Row-level memory changes and their `memory_events`, inside one open transaction.

A `Batch` is created by the bank after `BEGIN IMMEDIATE`; every change it makes writes the
row, its vector, and an event carrying the batch number (so `undo` can revert a whole manager
turn or import at once). Mirror updates are queued in `mirror_ops` and applied by the bank
only after COMMIT. Nothing here takes locks or commits.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

from core.errors import InvalidInputError, NotFoundError
from core.types import WRITE_EVENTS, Memory, MemoryChanges, MemoryEvent, MemoryOp, SourceTurn, TurnRef

from core.memory import sources as _sources
from core.memory.db import Connection, inserted_id, now_iso
from core.memory.index import delete_vector, write_vector
from core.memory.text import clean_optional, clean_text, clean_time, text_key

if TYPE_CHECKING:
    import numpy as np

MEM_COLS = "id, text, speaker, observed_at, created_at, updated_at, source, status, version, superseded_by"
EVENT_COLS = "id, memory_id, event, old_text, new_text, actor, at, turn, undone, reason"
STATUSES = ("active", "deleted", "superseded")
_BATCH_TURN = object()  # default for Batch.event(turn=...): the batch's own turn


def row_to_memory(row) -> Memory:
    """A `MEM_COLS` row. `superseded_by` is given only while the memory is superseded: the
    column keeps the last newer memory after a restore, so undoing the restore brings it back."""
    superseded_by = row[9] if row[7] == "superseded" and row[9] is not None else None
    return Memory(id=int(row[0]), text=row[1], speaker=row[2], observed_at=row[3], created_at=row[4],
                  updated_at=row[5], source=row[6], status=row[7], version=int(row[8]),
                  superseded_by=None if superseded_by is None else int(superseded_by))


def row_to_event(row) -> MemoryEvent:
    return MemoryEvent(id=int(row[0]), memory_id=None if row[1] is None else int(row[1]), event=row[2],
                       old_text=row[3], new_text=row[4], actor=row[5], at=row[6], turn=row[7],
                       undone=bool(row[8]), reason=row[9])


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
    if isinstance(memory_id, bool) or not (isinstance(memory_id, int) or _numpy_integer(memory_id)):
        raise NotFoundError(f"There is no memory with id {memory_id!r}.")
    return int(memory_id)


def _numpy_integer(value) -> bool:
    """Whether `value` is a NumPy integer; without numpy imported (the bank loads it with the
    first vector) nothing can be one."""
    np = sys.modules.get("numpy")
    return np is not None and isinstance(value, np.integer)


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
        self.last_event: int | None = None  # the id of the latest event written (for source links)

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
              origin=None, reason=None) -> int:
        cur = self.conn.execute(
            "INSERT INTO memory_events(batch, memory_id, event, old_text, new_text, old_status, new_status,"
            " actor, at, turn, undone, reverts, origin, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (self.id, memory_id, event, old_text, new_text, old_status, new_status, actor or self.actor,
             at or now_iso(), self.turn if turn is _BATCH_TURN else turn, int(undone), reverts, origin, reason))
        eid = inserted_id(cur)
        self.last_event = eid
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

    def set_status(self, mem: Memory, status: str, *, event: str, reverts: int | None = None,
                   superseded_by: int | None = None, clear_superseded: bool = False) -> Memory:
        """Change the status (event `event`). `superseded_by`: the newer memory, for status
        superseded; `clear_superseded` drops the stored one (its supersession is undone)."""
        self.conn.execute(
            "UPDATE memories SET status = ?, updated_at = ?, version = version + 1, superseded_by = "
            "CASE WHEN ? THEN NULL ELSE coalesce(?, superseded_by) END WHERE id = ?",
            (status, now_iso(), int(clear_superseded), superseded_by, mem.id))
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

    def reject(self, memory_id: int | None, text: str | None, reason: str | None) -> int:
        """A REJECT event: a fact the grounding gate refused (never a memory); not a change."""
        return self.event(memory_id, "REJECT", new_text=text or None, reason=reason)

    def remove(self, mem: Memory) -> None:
        """Hard delete of the row and its vector (the FTS entry goes through the trigger)."""
        self.conn.execute("DELETE FROM memories WHERE id = ?", (mem.id,))
        delete_vector(self.conn, mem.id)
        self.mirror_ops.append(("remove", mem.id))
        self.changes.forgotten.append(mem.id)


def check_op(op: MemoryOp) -> str:
    """Validate one op before anything is written; returns its cleaned text ('' if none)."""
    if not isinstance(op, MemoryOp):
        raise InvalidInputError(f"Expected a MemoryOp, got {type(op).__name__}.")
    if op.event not in WRITE_EVENTS:
        raise InvalidInputError(f"Unknown memory operation {op.event!r}.")
    if op.event in ("UPDATE", "DELETE") and op.memory_id is None:
        raise InvalidInputError(f"A {op.event} operation needs a memory id.")
    if op.supersedes is not None and op.event != "ADD":
        raise InvalidInputError(f"Only an ADD can supersede a memory, not a {op.event}.")
    if op.memory_id is not None:
        check_id(op.memory_id)
    if op.supersedes is not None:
        check_id(op.supersedes)
    if op.event in ("ADD", "UPDATE"):
        return clean_text(op.text)
    return clean_optional(op.text) or ""


class LazySource:
    """A `SourceTurn`'s row, found or created on the first link (core.memory.sources.resolve),
    so a turn whose facts were all refused keeps no copy of its text."""

    def __init__(self, batch: Batch, source: SourceTurn) -> None:
        self.batch, self.source = batch, source
        self._id: int | None = None
        self._done = False

    def id(self) -> int | None:
        """The source row's id; None for a turn that is never kept (a temporary chat's)."""
        if not self._done:
            self._id = _sources.resolve(self.batch.conn, self.source, turn=self.batch.turn)
            self._done = True
        return self._id


def apply_op(batch: Batch, op: MemoryOp, text: str, vec: np.ndarray | None, source: LazySource | None) -> None:
    """Write one checked op (`vec`: its text's embedding, for every ADD and UPDATE) and link
    it to `source` (core.memory.sources): ADD "added" (the user's own ADD: "remembered", with
    no source when none is given), UPDATE "updated", an UPDATE to the same text or a NOOP
    naming a memory "repeated", and the memory an ADD supersedes "superseded"."""
    if op.event == "ADD":
        assert vec is not None
        old = batch.require(op.supersedes, active=True) if op.supersedes is not None else None
        mem = batch.insert(text, vec, speaker=clean_optional(op.speaker), observed_at=clean_time(op.observed_at),
                           source=clean_optional(op.source))
        user = batch.actor == "user"
        sid = None if source is None else source.id()
        if sid is not None or user:
            _link(batch, mem.id, sid, "remembered" if user else "added")
        if old is not None:
            batch.set_status(old, "superseded", event="SUPERSEDE", superseded_by=mem.id)
            if sid is not None:
                _link(batch, old.id, sid, "superseded")
    elif op.event == "UPDATE":
        mem = batch.require(op.memory_id, active=True)
        if mem.text == text:
            batch.noop(mem.id, text)
            role = "repeated"
        else:
            assert vec is not None
            batch.set_text(mem, text, vec, event="UPDATE")
            role = "updated"
        _link_to(batch, mem.id, source, role)
    elif op.event == "DELETE":
        batch.set_status(batch.require(op.memory_id, active=True), "deleted", event="DELETE")
    elif op.event == "REJECT":
        mid = None if op.memory_id is None else check_id(op.memory_id)
        if mid is not None and fetch_memory(batch.conn, mid) is None:
            mid = None  # a refused update of a memory gone meanwhile: the refusal is still recorded
        batch.reject(mid, text, clean_optional(op.reason))
    else:
        mid = None if op.memory_id is None else check_id(op.memory_id)
        batch.noop(mid, text)
        if mid is not None:
            _link_to(batch, mid, source, "repeated")


def _link_to(batch: Batch, memory_id: int, source: LazySource | None, role: str) -> None:
    sid = None if source is None else source.id()
    if sid is not None:
        _link(batch, memory_id, sid, role)


def _link(batch: Batch, memory_id: int, source_id: int | None, role: str) -> None:
    _sources.link(batch.conn, memory_id, source_id, role, batch.last_event)

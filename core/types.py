"""Shared value types and the two one-method model interfaces.

Every layer speaks these: the memory bank returns `Memory`/`Hit`/`MemoryChanges` (whose
`TurnRef` says which chat turn caused a change), the manager produces `MemoryOp`s, the GUI
redraws from `MemoryChanges`, and any chat model (llama.cpp or the scripted fake) satisfies
`ChatBackend`.
"""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable, Iterator, Literal, Mapping, Protocol, Sequence, runtime_checkable

if TYPE_CHECKING:  # numpy itself loads with the first vector (not on the GUI's start-up path)
    import numpy as np

Status = Literal["active", "deleted", "superseded"]
OpEvent = Literal["ADD", "UPDATE", "DELETE", "NOOP", "REJECT"]  # the model writes NOOP as "NONE" (core.agents.prompts)
OP_EVENTS: tuple[OpEvent, ...] = ("ADD", "UPDATE", "DELETE", "NOOP")  # the model's operations
# A fact the grounding gate refused (core.agents.grounding): never written as a memory, only
# recorded as a REJECT event with its reason, so History shows what was not saved and why.
REJECT: OpEvent = "REJECT"
WRITE_EVENTS: tuple[OpEvent, ...] = OP_EVENTS + (REJECT,)  # what `MemoryBank.apply` accepts
Actor = Literal["manager", "user", "import"]
Message = Mapping[str, str]  # {"role": "system"|"user"|"assistant", "content": "..."}


@dataclass(frozen=True)
class Memory:
    """One row of `memories` (the source of truth)."""

    id: int
    text: str
    speaker: str | None = None
    observed_at: str | None = None  # the conversation timestamp, as text ("1:56 pm on 8 May, 2023" or ISO)
    created_at: str = ""  # ISO-8601 UTC
    updated_at: str = ""
    source: str | None = None  # "chat:<conversation>/<message>", "import:<file>", "locomo:conv-26/D1:3"
    status: Status = "active"
    version: int = 1
    superseded_by: int | None = None  # the newer memory that replaced this one (status superseded)

    def prompt_line(self) -> str:
        """How a memory is shown to a model: `<timestamp>: <text>` (method.md §1)."""
        return f"{self.observed_at}: {self.text}" if self.observed_at else self.text


@dataclass(frozen=True)
class Hit:
    memory: Memory
    score: float  # higher is better; cosine similarity for vector search


@dataclass(frozen=True)
class MemoryEvent:
    """One row of `memory_events`."""

    id: int
    memory_id: int | None
    event: str  # ADD UPDATE DELETE NOOP EDIT RESTORE IMPORT UNDO
    old_text: str | None
    new_text: str | None
    actor: str
    at: str
    turn: str | None = None  # what caused it, e.g. "chat:3/17"
    undone: bool = False
    reason: str | None = None  # REJECT: why the fact was not saved ("not in what was said: 'Luna'")


@dataclass(frozen=True)
class MemoryOp:
    """One validated manager operation, already mapped from alias to real id."""

    event: OpEvent
    text: str = ""
    memory_id: int | None = None  # required for UPDATE / DELETE; optional for NOOP
    old_text: str | None = None
    speaker: str | None = None
    observed_at: str | None = None
    source: str | None = None
    reason: str | None = None  # REJECT: the gate's one-line reason
    supersedes: int | None = None  # ADD: an active memory this fact replaces (it becomes superseded)


@dataclass(frozen=True)
class SourceTurn:
    """The turn the manager read, kept as the source of what it writes (provenance).

    A chat turn names its user message (`message_id`; the text stays in `messages`, never
    copied); any other turn (ingest, evaluation, a tool's remember) names itself by `ref`
    (e.g. "locomo:conv-26/D1:3", "ingest:notes.jsonl/12") and its text is kept with the source."""

    text: str
    speaker: str | None = None
    said_at: str | None = None
    message_id: int | None = None
    ref: str | None = None


@dataclass(frozen=True)
class MemorySource:
    """One link from a memory to where it came from (`MemoryBank.sources`).

    kind: "chat" (a chat message), "turn" (an ingested or evaluated turn), "user" (the user's
    own edit or addition, no turn), "import" (a source carried in by an import); role: how the
    memory used it: "added", "updated", "repeated" (said again: a NOOP), "edited",
    "remembered", "imported", "superseded". `text` is None when the source text is gone
    (its chat was deleted, or the user removed it): `deleted` is then true."""

    source_id: int | None
    kind: str
    role: str
    text: str | None
    speaker: str | None = None
    said_at: str | None = None
    ref: str | None = None  # "chat:<conversation>/<message>" or the external ref
    linked_at: str = ""

    @property
    def deleted(self) -> bool:
        return self.text is None and self.kind in ("chat", "turn", "import")


_CHAT_TURN = re.compile(r"chat:(0|[1-9][0-9]*)(?:/(0|[1-9][0-9]*))?")


@dataclass(frozen=True)
class TurnRef:
    """What caused a memory change: a chat turn (conversation, user message) or anything else.

    Stored in `memory_events.turn` as text: `str()` gives "chat:<conversation>/<message>"
    ("chat:<conversation>" without a message) or the `external` text ("locomo:conv-26/D1:3",
    "import:file.jsonl"); `parse()` reads that text back, so `parse(str(t)) == t` and
    `str(parse(s)) == s` for every string."""

    conversation_id: int | None = None
    message_id: int | None = None
    external: str | None = None

    @classmethod
    def chat(cls, conversation_id: int, message_id: int | None = None) -> "TurnRef":
        return cls(int(conversation_id), None if message_id is None else int(message_id))

    @classmethod
    def parse(cls, text: str) -> "TurnRef":
        match = _CHAT_TURN.fullmatch(text)
        if match is None:
            return cls(external=text)
        return cls(int(match[1]), None if match[2] is None else int(match[2]))

    @classmethod
    def of(cls, value: "TurnRef | str | None") -> "TurnRef | None":
        """A TurnRef from a TurnRef, its stored text, or None."""
        return value if value is None or isinstance(value, TurnRef) else cls.parse(str(value))

    @property
    def is_chat(self) -> bool:
        return self.external is None and self.conversation_id is not None

    def __str__(self) -> str:
        if self.external is not None:
            return self.external
        return f"chat:{self.conversation_id}" + ("" if self.message_id is None else f"/{self.message_id}")


@dataclass
class MemoryChanges:
    """What one operation changed (Anki's OpChanges): the GUI redraws only these rows.

    `added` also holds restored memories (active again); `deleted` soft-deleted ones;
    `forgotten` the ids erased for good. `batch_id` is the operation's batch in the event log
    (`bank.undo(batch=...)` reverts exactly this operation; None when nothing was written or
    after `merge` of different batches); `turn` is what caused it (None for a plain user
    action). Every `MemoryBank` mutator returns one."""

    added: list[Memory] = field(default_factory=list)
    updated: list[Memory] = field(default_factory=list)
    deleted: list[Memory] = field(default_factory=list)
    noops: int = 0
    event_ids: list[int] = field(default_factory=list)
    forgotten: list[int] = field(default_factory=list)
    batch_id: int | None = None
    turn: TurnRef | None = None

    def __bool__(self) -> bool:
        return bool(self.added or self.updated or self.deleted or self.forgotten)

    @property
    def memories(self) -> list[Memory]:
        """Every changed row (added, updated, deleted), in that order."""
        return self.added + self.updated + self.deleted

    @property
    def memory(self) -> Memory:
        """The one memory a single-memory operation (add, edit, delete, restore) wrote.
        ValueError when these changes hold no row or several."""
        rows = self.memories
        if len(rows) != 1:
            raise ValueError(f"expected one changed memory, not {len(rows)} ({self.summary()})")
        return rows[0]

    def summary(self) -> str:
        parts = []
        for name, rows in (("added", self.added), ("updated", self.updated), ("deleted", self.deleted),
                           ("forgotten", self.forgotten)):
            if rows:
                parts.append(f"{len(rows)} {name}")
        return ", ".join(parts) or "no change"

    def merge(self, other: "MemoryChanges") -> "MemoryChanges":
        return MemoryChanges(
            self.added + other.added,
            self.updated + other.updated,
            self.deleted + other.deleted,
            self.noops + other.noops,
            self.event_ids + other.event_ids,
            self.forgotten + other.forgotten,
            _common(self.batch_id, other.batch_id),
            _common(self.turn, other.turn),
        )


def _common(a, b):
    """`a` if both agree (or one is None), else None."""
    if a is None or b is None:
        return b if a is None else a
    return a if a == b else None


@dataclass(frozen=True)
class GenParams:
    """Sampling settings for one generation."""

    temperature: float = 0.7
    top_p: float = 0.95
    max_tokens: int = 512
    seed: int | None = None
    stop: tuple[str, ...] = ()
    top_k: int = 40  # 0 = off
    repeat_penalty: float = 1.0  # 1 = off


class CancelToken:
    """A flag checked between tokens; set from any thread."""

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()


@runtime_checkable
class ChatBackend(Protocol):
    """A chat model (simonw/llm's `Model.execute`): llama.cpp or the scripted fake.

    `complete` yields text pieces as they are generated; with `schema` the output is
    constrained to JSON matching it. When `cancel` is set it stops within one token.
    Not thread-safe: one owner thread at a time (the runtime holds a lock).
    """

    name: str
    n_ctx: int  # the context window in tokens

    def complete(
        self,
        messages: Sequence[Message],
        *,
        params: GenParams = GenParams(),
        schema: dict | None = None,
        cancel: CancelToken | None = None,
    ) -> Iterator[str]: ...

    def complete_text(self, prompt: str, *, params: GenParams = GenParams(),
                      cancel: CancelToken | None = None) -> Iterator[str]:
        """Continue a raw, already templated prompt (e.g. a forced `**Answer:**` line)."""
        ...

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        """The exact prompt text `complete(messages)` would evaluate."""
        ...

    def count_tokens(self, text: str) -> int: ...

    def close(self) -> None: ...


@runtime_checkable
class Embedder(Protocol):
    """Texts -> L2-normalised float32 rows of `dim` columns.

    `related_score`: the cosine from which the Memory Manager treats a memory as related to a
    new fact; `chat_min_score`: the cosine below which a memory stays out of a chat prompt
    (-1.0: no floor). Both are calibrated per embedding model (core.embeddings)."""

    name: str
    dim: int
    related_score: float
    chat_min_score: float

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


def read_stream(stream: Iterator[str], stop: Callable[[str], bool]) -> tuple[list[str], bool]:
    """Pieces of a generation stream up to and including the first one for which `stop`
    (given that piece) is true; the stream is closed either way so a backend can free its
    compute lock. Returns (pieces, stopped)."""
    pieces: list[str] = []
    try:
        for piece in stream:
            pieces.append(piece)
            if stop(piece):
                return pieces, True
        return pieces, False
    finally:
        close = getattr(stream, "close", None)
        if close is not None:
            close()

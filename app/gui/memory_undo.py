"""The window's Undo (Edit > Undo, Ctrl+Z): the bank's latest memory change, named.

`MemoryUndo` keeps `next` (a `NextUndo`: the action's text and the batch it reverts, or None
when there is nothing to undo) up to date: `note(changes)` after every committed change (it
also learns which events make up that change's batch), `check()` after a reload (another
process may have written). `undo()` reverts exactly what the text named: the batch, with
`bank.undo(batch=...)`; a change this session did not see (made before the app started, or
by another process) is "the last memory change", reverted with `bank.undo()`.

What is "next" follows `core.memory.history`'s rule: the newest event that can be undoable
(ADD, UPDATE, EDIT, DELETE, RESTORE, SUPERSEDE, IMPORT) and is not undone, among the latest
HISTORY_WINDOW events; its whole batch is reverted.

Threads: the GUI thread, except `next_undo`, which runs on the runner's "db" worker.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Mapping, Sequence

from PySide6.QtCore import QObject, Signal

from core.errors import NotFoundError
from core.memory.history import UNDOABLE
from core.types import MemoryChanges, MemoryEvent

__all__ = ["MemoryUndo", "NextUndo", "describe", "next_undo"]

HISTORY_WINDOW = 500
KNOWN_BATCHES = 200  # batches of this session remembered for their names
UNKNOWN = "Undo the last memory change"
_NOUNS = {"ADD": "add", "IMPORT": "import", "UPDATE": "update", "EDIT": "edit", "DELETE": "delete",
          "RESTORE": "restore", "SUPERSEDE": "replacement"}


@dataclass(frozen=True)
class NextUndo:
    """`text`: the action's text ("Undo delete of “Sam lives in Lisbon”"); `batch`: what
    `bank.undo(batch=...)` reverts, None for the bank's latest change."""

    text: str
    batch: int | None
    detail: str = ""  # the full texts, for the tooltip


def _quoted(text: str | None, limit: int = 40) -> str:
    line = " ".join((text or "").split())
    return f"“{line if len(line) <= limit else line[:limit - 1].rstrip() + '…'}”"


def describe(events: Sequence[MemoryEvent]) -> str:
    """The Undo action's text for one batch's undoable events (newest first)."""
    if not events:
        return UNKNOWN
    kinds = {e.event for e in events}
    if kinds == {"ADD", "SUPERSEDE"}:  # a fact that replaced an older one: one change for the user
        kinds, events = {"ADD"}, [e for e in events if e.event == "ADD"]
    if len(kinds) > 1:
        return f"Undo the last memory change ({len(events)} changes)"
    noun = _NOUNS.get(next(iter(kinds)), "change")
    if len(events) > 1:
        return f"Undo {noun} of {len(events)} memories"
    event = events[0]
    shown = event.old_text if event.event in ("UPDATE", "EDIT") and event.old_text else (
        event.new_text or event.old_text)
    return f"Undo {noun} of {_quoted(shown)}" if shown else f"Undo {noun} of memory #{event.memory_id}"


def next_undo(bank, batches: Mapping[int, int]) -> NextUndo | None:
    """What Undo reverts now (db worker). `batches`: event id -> batch id, for the changes this
    session saw; None when nothing in the latest HISTORY_WINDOW events can be undone."""
    events = bank.history(limit=HISTORY_WINDOW)
    live = [e for e in events if e.event in UNDOABLE and not e.undone]
    if not live:
        return None
    batch = batches.get(live[0].id)
    if batch is None:
        return NextUndo(UNKNOWN, None, "")
    group = [e for e in live if batches.get(e.id) == batch]
    detail = "\n".join(f"{e.event.lower()} #{e.memory_id}: {e.new_text or e.old_text or ''}" for e in group[:10])
    return NextUndo(describe(group), batch, detail)


class MemoryUndo(QObject):
    """Signals: `changed()` when `next` may have changed, `undone(text)` after an undo
    ("Undid the delete of …"), `error(exc)` for the window to report."""

    changed = Signal()
    undone = Signal(str)
    error = Signal(object)

    def __init__(self, bank, runner, parent=None) -> None:
        super().__init__(parent)
        self.bank = bank
        self.runner = runner
        self.next: NextUndo | None = None
        self._batches: dict[int, int] = {}  # event id -> batch id
        self._order: list[int] = []  # batch ids, oldest first
        self._generation = 0

    def note(self, changes: MemoryChanges) -> None:
        """A committed change (GUI thread): remember its batch, then re-check."""
        if changes.batch_id is not None and changes.event_ids:
            for event_id in changes.event_ids:
                self._batches[event_id] = changes.batch_id
            self._order.append(changes.batch_id)
            if len(self._order) > KNOWN_BATCHES:
                old = self._order.pop(0)
                self._batches = {e: b for e, b in self._batches.items() if b != old}
        self.check()

    def check(self) -> None:
        """Find what Undo would revert now (in the background); `changed` when known."""
        self._generation += 1
        generation, bank, known = self._generation, self.bank, dict(self._batches)

        def done(result: NextUndo | None) -> None:
            if generation == self._generation:
                self.next = result
                self.changed.emit()

        try:
            self.runner.submit(lambda: next_undo(bank, known), name="what undo reverts", on_done=done,
                               on_error=lambda exc: None)
        except RuntimeError:  # the runner is shut down: the window is closing
            pass

    def undo(self, on_done: Callable[[MemoryChanges], None] | None = None) -> None:
        """Revert what `next` names (db worker); nothing when there is nothing to undo."""
        target = self.next
        if target is None:
            return
        bank = self.bank
        what = target.text.removeprefix("Undo ").removeprefix("the ")

        def done(changes: MemoryChanges) -> None:
            self.undone.emit(f"Undid the {what}.")
            if on_done is not None:
                on_done(changes)
            self.check()

        def failed(exc: BaseException) -> None:
            if isinstance(exc, NotFoundError):  # undone elsewhere meanwhile
                self.undone.emit("Nothing to undo.")
            else:
                self.error.emit(exc)
            self.check()

        self.next = None
        self.changed.emit()  # disabled until the check after it
        self.runner.submit(lambda: bank.undo(batch=target.batch) if target.batch is not None else bank.undo(),
                           name="undo", on_done=done, on_error=failed)

"""The one loop that feeds conversation turns to the Memory Manager and can resume.

    report = run_turns(manager, turns, progress=store, on_turn=print)

`memory-r1 ingest` (core.assistant.ingest), the evaluation's memory banks
(training.eval.systems) and the manager's training states (training.data.manager) all run it;
they differ only in the progress store and the hooks. A turn is anything with `speaker`,
`text`, `time` and `turn_id` (core.assistant.ingest.IngestTurn); `turn_id` becomes the
memories' `turn` and `source`.

For each turn, in order: skipped when `progress.is_done(index, turn)`; `before_turn(turn)`
(what it returns is the outcome's `prepared`); `manager.process_turn`; `after_turn(outcome)`;
`progress.record(outcome)`; `on_turn(outcome)`. A turn whose model output fails twice
(ModelOutputError) is logged and recorded like the others, with its `error` set; any other
exception (a crash, Ctrl-C) stops the loop with the progress recorded so far kept, so a re-run
resumes at the first turn not recorded. A turn whose ops were applied just before such a stop
is redone once: its facts are then duplicates, which the manager skips (or the caller rolls
the turn back first, as the state builder does).

Progress stores (`ProgressStore`): `JsonlProgress` here, one JSONL line per turn keyed by the
turn (the evaluation's `turns.jsonl`, the states' `progress.jsonl`); the ingest command's JSON
sidecar is `core.assistant.ingest.SidecarProgress`.

Threads: everything runs on the caller's thread.
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

from core.errors import ModelOutputError
from core.fileio import append_jsonl, read_jsonl
from core.textlog import log_text
from core.types import OP_EVENTS, MemoryChanges

log = logging.getLogger(__name__)

@dataclass
class TurnOutcome:
    """What one turn did: its changes (None when it failed), the model error, the time it took
    (hooks included), what `before_turn` prepared for it and how many proposed facts the
    grounding gate refused (`MemoryManager.last_rejected`)."""

    index: int
    turn: Any
    changes: MemoryChanges | None = None
    error: ModelOutputError | None = None
    seconds: float = 0.0
    prepared: Any = None
    rejected: int = 0

    def op_counts(self) -> dict[str, int]:
        """{"ADD", "UPDATE", "DELETE", "NOOP"} -> how many (all 0 for a failed turn)."""
        ch = self.changes
        if ch is None:
            return dict.fromkeys(OP_EVENTS, 0)
        return {"ADD": len(ch.added), "UPDATE": len(ch.updated), "DELETE": len(ch.deleted), "NOOP": int(ch.noops)}


class ProgressStore(Protocol):
    """Where a run notes the turns it finished, so the next run skips them."""

    def is_done(self, index: int, turn) -> bool:
        """Whether an earlier run already processed `turn` (`index` in the run's list)."""
        ...

    def record(self, outcome: TurnOutcome) -> None:
        """Note one processed turn (failed or not); written before the next turn starts."""
        ...


class JsonlProgress:
    """Progress as an append-only JSONL file: one line per processed turn.

    `key_of(turn)` names a turn; a line's `key_field` holds that name (a turn is done when a
    line names it). `record_of(outcome)` is the line written (it must hold `key_field`). A torn
    last line (a crash mid-write) is dropped on reading, so that turn is redone.
    """

    def __init__(self, path: str | os.PathLike, *, key_of: Callable[[Any], str],
                 record_of: Callable[[TurnOutcome], dict], key_field: str = "dia_id") -> None:
        self.path = Path(path)
        self.key_of = key_of
        self.record_of = record_of
        self.key_field = key_field
        self._done = {r.get(key_field) for r in read_jsonl(self.path)}

    def is_done(self, index: int, turn) -> bool:
        return self.key_of(turn) in self._done

    def record(self, outcome: TurnOutcome) -> None:
        rec = self.record_of(outcome)
        append_jsonl(self.path, rec)
        self._done.add(rec.get(self.key_field))

    def records(self) -> list[dict]:
        """Every line written so far, in order."""
        return read_jsonl(self.path)


@dataclass
class TurnsReport:
    total: int = 0
    skipped: int = 0  # already done in an earlier run
    processed: int = 0
    failed: list[str] = field(default_factory=list)  # turn ids whose model output failed (this run)
    changes: MemoryChanges = field(default_factory=MemoryChanges)
    rejected: int = 0  # facts the grounding gate refused (this run)


def remaining(turns: Sequence, progress: ProgressStore | None) -> int:
    """How many of `turns` a run would still process (0: no model is needed)."""
    if progress is None:
        return len(turns)
    return sum(1 for i, t in enumerate(turns) if not progress.is_done(i, t))


def run_turns(manager, turns: Sequence, *, progress: ProgressStore | None = None,
              before_turn: Callable[[Any], Any] | None = None,
              after_turn: Callable[[TurnOutcome], None] | None = None,
              on_turn: Callable[[TurnOutcome], None] | None = None) -> TurnsReport:
    """Run `manager.process_turn` over the `turns` not done yet, in order (module docstring).

    `manager`: a `core.agents.manager.MemoryManager`. Raises whatever stops the loop (not a
    ModelOutputError of one turn); the turns recorded before it stay recorded.
    """
    report = TurnsReport(total=len(turns))
    for index, turn in enumerate(turns):
        if progress is not None and progress.is_done(index, turn):
            report.skipped += 1
            continue
        start = time.perf_counter()
        outcome = TurnOutcome(index, turn)
        if before_turn is not None:
            outcome.prepared = before_turn(turn)
        try:
            outcome.changes = manager.process_turn(turn.text, speaker=turn.speaker, time=turn.time,
                                                   turn=turn.turn_id, source=turn.turn_id)
            report.changes = report.changes.merge(outcome.changes)
            outcome.rejected = len(getattr(manager, "last_rejected", ()))
            report.rejected += outcome.rejected
        except ModelOutputError as exc:
            log.error("turn %s skipped: %s (%d chars of output)", turn.turn_id, exc, len(exc.raw or ""))
            log_text(f"turn {turn.turn_id} model output", (exc.raw or "")[:500])
            outcome.error = exc
            report.failed.append(turn.turn_id)
        if after_turn is not None:
            after_turn(outcome)
        outcome.seconds = round(time.perf_counter() - start, 4)
        if progress is not None:
            progress.record(outcome)
        report.processed += 1
        if on_turn is not None:
            on_turn(outcome)
    return report

"""Conversations to ingest: LoCoMo JSON samples or JSONL `{speaker, text, time}` turns, as one
ordered list of `IngestTurn`s, and a resumable loop that feeds them to the Memory Manager.

Formats (detected from the content):
- LoCoMo JSON (one sample or a list of samples; parsed by `core.locomo`): every turn of both
  speakers, sessions in `session_N` order, with the session's date_time as the turn time and
  a shared image's caption appended (`Turn.full_text`). Turn ids: `locomo:<sample>/<dia_id>`.
- JSONL (or a JSON list) of `{"speaker": str, "text": str, "time": str?}`; blank lines are
  skipped. Turn ids: `<file name>:<line>`.
A bad line raises ImportFormatError naming the line; nothing is ingested from that file.

Resuming: `IngestState` keeps, per file content hash, how many turns were processed, in a
sidecar JSON in the data dir (`ingest_state.json`, written atomically after every turn), so a
re-run skips the done turns (`SidecarProgress`, the progress store of the one turn loop,
`core.assistant.turns.run_turns`). A turn whose ops were applied just before a crash may be
redone once; its facts are then duplicates and are skipped by the manager's duplicate check.

Forgetting by asking: with `user` (the CLI's `--user NAME`, default the chat's user name), a
turn whose speaker is that user and that asks to forget ("please forget everything about Rex")
soft-deletes the clearly matching memories of that user (`core.assistant.forgetting`); the
turns of every other speaker never delete anything this way, and without `user` no turn does.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Sequence

from core.assistant.turns import TurnOutcome, TurnsReport, run_turns
from core.errors import ImportFormatError, InvalidInputError
from core.fileio import atomic_write_json, jsonl_values
from core.types import MemoryChanges

log = logging.getLogger(__name__)

STATE_FILE = "ingest_state.json"


@dataclass(frozen=True)
class IngestTurn:
    speaker: str
    text: str
    time: str | None
    turn_id: str
    sample_id: str | None = None
    dia_id: str | None = None  # LoCoMo's turn id within its sample


def locomo_turn(sample_id: str, turn) -> IngestTurn:
    """One `core.locomo.Turn` of a sample as the manager gets it (the text with any image
    caption, the session time; turn id `locomo:<sample>/<dia_id>`)."""
    return IngestTurn(turn.speaker, turn.full_text, turn.time or None, f"locomo:{sample_id}/{turn.dia_id}",
                      sample_id, turn.dia_id)


def turns_from_samples(samples) -> list[IngestTurn]:
    """Turns of parsed `core.locomo.Sample`s, in order."""
    return [locomo_turn(s.sample_id, t) for s in samples for t in s.turns]


def _turn_from_obj(obj, where: str, name: str) -> IngestTurn:
    if not isinstance(obj, dict):
        raise ImportFormatError(f"{where}: expected an object with speaker, text and time")
    speaker, text, when = obj.get("speaker"), obj.get("text"), obj.get("time")
    if not isinstance(speaker, str) or not speaker.strip():
        raise ImportFormatError(f"{where}: missing or empty 'speaker'")
    if not isinstance(text, str):
        raise ImportFormatError(f"{where}: missing 'text'")
    if when is not None and not isinstance(when, (str, int, float)):
        raise ImportFormatError(f"{where}: 'time' must be text")
    return IngestTurn(speaker.strip(), text, str(when) if when is not None else None, f"{name}:{where.split()[-1]}")


def parse_jsonl(text: str, name: str = "turns") -> list[IngestTurn]:
    """Turns from JSONL text. Raises ImportFormatError naming the first bad line.

    >>> text = '{"speaker": "A", "text": "hi"}\\n\\n{"speaker": "B", "text": "yo", "time": "x"}'
    >>> [t.turn_id for t in parse_jsonl(text, "f")]
    ['f:1', 'f:3']
    """
    def bad(no: int, exc: ValueError) -> ImportFormatError:
        return ImportFormatError(f"line {no}: not valid JSON ({exc.args[0] if exc.args else exc})")

    return [_turn_from_obj(obj, f"line {no}", name) for no, obj in jsonl_values(text, bad)]


def load_turns(path: str | os.PathLike) -> list[IngestTurn]:
    """All turns of a LoCoMo JSON or JSONL file. Raises InvalidInputError (missing file) or
    ImportFormatError (bad content)."""
    from core.locomo import parse_sample

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError as exc:
        raise InvalidInputError(f"No such file: {p}") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise ImportFormatError(f"{p}: cannot read it as UTF-8 text ({exc})") from exc
    stripped = text.lstrip()
    whole = None
    if stripped.startswith(("[", "{")):
        try:
            whole = json.loads(text)
        except ValueError:
            whole = None  # maybe JSONL whose first line is an object
    if whole is None:
        turns = parse_jsonl(text, p.name)
    else:
        items = whole if isinstance(whole, list) else [whole]
        if items and all(isinstance(i, dict) and "conversation" in i for i in items):
            try:
                turns = turns_from_samples([parse_sample(i, f"sample {n}") for n, i in enumerate(items)])
            except InvalidInputError as exc:
                raise ImportFormatError(f"{p}: {exc}") from exc
        else:
            turns = [_turn_from_obj(obj, f"item {n}", p.name) for n, obj in enumerate(items, 1)]
    if not turns:
        raise ImportFormatError(f"{p}: no conversation turns found")
    return turns


class IngestState:
    """The sidecar that makes ingestion resumable: {key: {"file", "done", "failed", "updated"}}."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._data: dict = {}
        if self.path.exists():
            try:
                raw = json.loads(self.path.read_text(encoding="utf-8"))
                self._data = raw if isinstance(raw, dict) else {}
            except (OSError, ValueError) as exc:
                log.warning("ingest state %s unreadable (%s): starting from scratch", self.path, exc)

    def done(self, key: str) -> int:
        return int(self._data.get(key, {}).get("done", 0))

    def failed(self, key: str) -> list[str]:
        return list(self._data.get(key, {}).get("failed", []))

    def reset(self, key: str) -> None:
        self._data.pop(key, None)
        self._save()

    def record(self, key: str, file: str, done: int, failed: Sequence[str]) -> None:
        self._data[key] = {"file": file, "done": done, "failed": list(failed),
                           "updated": datetime.now(timezone.utc).isoformat(timespec="seconds")}
        self._save()

    def _save(self) -> None:
        atomic_write_json(self.path, self._data)


class SidecarProgress:
    """The `ProgressStore` of `memory-r1 ingest`: turn `index` is done when an earlier run of the
    same file content (`key`) got past it; every turn rewrites the sidecar entry (`IngestState`)."""

    def __init__(self, state: IngestState, key: str, file: str = "") -> None:
        self.state, self.key, self.file = state, key, file
        self._done = state.done(key)
        self._failed = state.failed(key)

    def is_done(self, index: int, turn) -> bool:
        return index < self._done

    def record(self, outcome: TurnOutcome) -> None:
        if outcome.error is not None:
            self._failed.append(outcome.turn.turn_id)
        self._done = outcome.index + 1
        self.state.record(self.key, self.file, self._done, self._failed)




def ingest_turns(manager, turns: Sequence[IngestTurn], *, state: IngestState | None = None,
                 key: str | None = None, file: str = "", user: str | None = None,
                 on_turn: Callable[[IngestTurn, MemoryChanges | None], None] | None = None) -> TurnsReport:
    """Run `manager.process_turn` over `turns` in order (`core.assistant.turns.run_turns`),
    skipping those an earlier run did (when `state`/`key` are given) and recording progress
    after every turn. A turn whose model output fails twice (ModelOutputError) is logged,
    listed in `failed` and skipped; any other error stops the loop (progress so far is kept).
    `user`: the user's name, whose own turns may ask to forget (module docstring)."""
    if user:
        from core.assistant.forgetting import ForgetAwareManager

        manager = ForgetAwareManager(manager, manager.bank, user)
    progress = SidecarProgress(state, key, file) if state is not None and key else None
    return run_turns(manager, turns, progress=progress,
                     on_turn=(lambda o: on_turn(o.turn, o.changes)) if on_turn is not None else None)

"""`MemoryService`: what other apps may do with the memory bank, for the MCP and HTTP servers.

One object over one open `MemoryBank` (the app's data folder, shared with the GUI and the
CLI through SQLite WAL). Every change it makes is logged with actor "tool" (the GUI's History
shows it and Undo reverts it) and the turn `tool:<client>`; deleting is the soft, undoable
`delete`, never `forget`. Results are small JSON-ready dicts.

Models: `models` (a `ModelSet` with "answer" and "manager" roles; default
`ModelSet.for_settings` of the settings file) loads a role on the first call that needs it:
`search`, `list`, `add`, `update`, `delete` and `export` need only the bank's embedder;
`remember` loads the manager, `answer` the answer model (not even that when nothing is
remembered). One model call at a time (a lock): a llama.cpp instance serves one thread.

Threads: any thread (the bank locks; the model lock serialises model calls). Raises the
bank's `UserError`s (NotFoundError for an unknown id, InvalidInputError for empty text).
"""

from __future__ import annotations

import logging
import threading
from datetime import datetime
from pathlib import Path

from core.errors import InvalidInputError
from core.types import Hit, Memory, MemoryChanges

log = logging.getLogger(__name__)

ACTOR = "tool"
MAX_K = 100
MAX_LIST = 1000


def memory_json(mem: Memory, score: float | None = None) -> dict:
    """One memory as a small dict (the fields another app needs)."""
    out = {"id": mem.id, "text": mem.text, "speaker": mem.speaker, "observed_at": mem.observed_at,
           "status": mem.status, "updated_at": mem.updated_at}
    if score is not None:
        out["score"] = round(float(score), 4)
    return out


def changes_json(changes: MemoryChanges) -> dict:
    """What one operation changed: the rows added/updated/deleted, the unchanged count, the batch."""
    return {"added": [memory_json(m) for m in changes.added],
            "updated": [memory_json(m) for m in changes.updated],
            "deleted": [memory_json(m) for m in changes.deleted],
            "unchanged": changes.noops, "batch_id": changes.batch_id}


def _bounded(value: int, name: str, top: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"{name} must be a whole number of at least 1.")
    return min(int(value), top)


class MemoryService:
    """See the module docstring. `client` names the caller in the turn of its changes
    ("mcp", "http"); `user_name` is the speaker the manager writes memories about."""

    def __init__(self, bank, models=None, *, settings=None, client: str = "mcp", user_name: str = "User",
                 export_dir: Path | None = None) -> None:
        self.bank = bank
        self.settings = settings
        self.client = client
        self.user_name = user_name
        self.export_dir = export_dir
        self._models = models
        self._own_models = models is None
        self._models_lock = threading.Lock()
        self.model_lock = threading.Lock()  # one generation at a time

    @property
    def turn(self) -> str:
        return f"tool:{self.client}"

    @property
    def models(self):
        """The ModelSet (made on first use from the settings file; nothing loads until a role is used)."""
        with self._models_lock:
            if self._models is None:
                from core.llm.modelset import ModelSet

                self._models = ModelSet.for_settings(self.app_settings())
            return self._models

    def app_settings(self):
        """The settings given, else the settings file's (read once)."""
        if self.settings is None:
            from core.config import Settings, settings_path

            self.settings = Settings.load(settings_path())
        return self.settings

    def close(self) -> None:
        """Close the models this service made (not the bank, not injected models)."""
        if self._own_models and self._models is not None:
            self._models.close()

    # --- reading --------------------------------------------------------------------------
    def search(self, query: str, k: int = 10, speaker: str | None = None) -> list[dict]:
        hits: list[Hit] = self.bank.search(query, k=_bounded(k, "k", MAX_K), mode="hybrid", speaker=speaker)
        return [memory_json(h.memory, h.score) for h in hits]

    def list(self, limit: int = 50, speaker: str | None = None) -> list[dict]:
        return [memory_json(m) for m in self.bank.list(limit=_bounded(limit, "limit", MAX_LIST), speaker=speaker)]

    def get(self, memory_id: int) -> dict:
        return memory_json(self.bank.get(memory_id))

    # --- writing (actor "tool") -----------------------------------------------------------
    def add(self, text: str, speaker: str | None = None) -> dict:
        changes = self.bank.add(text, speaker=speaker, source=self.turn, actor=ACTOR, turn=self.turn)
        return changes_json(changes)

    def update(self, memory_id: int, text: str) -> dict:
        return changes_json(self.bank.edit(memory_id, text, actor=ACTOR, turn=self.turn))

    def delete(self, memory_id: int) -> dict:
        """Soft delete (undoable in the app; `memory-r1 memory restore ID`)."""
        return changes_json(self.bank.delete(memory_id, actor=ACTOR, turn=self.turn))

    def remember(self, text: str) -> dict:
        """The Memory Manager on one message, as in the chat (facts extracted, duplicates
        skipped, related memories updated), applied in one transaction with actor "tool"."""
        from core.agents.manager import MemoryManager
        from core.agents.prompts import format_time

        if not text or not text.strip():
            raise InvalidInputError("Give a message to remember.")
        with self.model_lock:
            manager = MemoryManager(self.bank, self.models.manager)
            changes = manager.process_turn(text, speaker=self.user_name, time=format_time(datetime.now()),
                                           turn=self.turn, actor=ACTOR)
        return changes_json(changes)

    # --- answering and export ---------------------------------------------------------------
    def answer(self, question: str) -> dict:
        """The Answer Agent: {"answer", "memories" (the ones it used), "retrieved" (count)}."""
        from core.agents.answer import NO_MEMORY_ANSWER, AnswerAgent

        if not question or not question.strip():
            raise InvalidInputError("Give a question to answer.")
        retrieved = AnswerAgent(self.bank, None).retrieve(question) if self.bank.count() else []
        if not retrieved:  # nothing remembered: no model needed
            return {"answer": NO_MEMORY_ANSWER, "memories": [], "retrieved": 0}
        with self.model_lock:
            result = AnswerAgent(self.bank, self.models.answer).answer(question, memories=retrieved)
        return {"answer": result.answer, "memories": [memory_json(m) for m in result.selected],
                "retrieved": len(result.retrieved)}

    def export(self) -> dict:
        """Every memory (+ history) to `<data dir>/exports/memories-<time>.jsonl` (owner-only, like
        the rest of the data folder): {"path", "count"}."""
        from core.paths import data_dir

        folder = self.export_dir or data_dir() / "exports"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"memories-{datetime.now().strftime('%Y%m%d-%H%M%S-%f')}.jsonl"
        count = self.bank.export_jsonl(path)
        return {"path": str(path), "count": count}

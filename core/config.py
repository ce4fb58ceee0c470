"""Settings declared once, as dataclasses with defaults, help text and validation.

Persisted as JSON in the data dir (`settings.json`); unknown keys are ignored and bad values
fall back to defaults with a logged warning, so an old or hand-edited file never stops the app.
"""

from __future__ import annotations

import dataclasses
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import InvalidInputError

log = logging.getLogger(__name__)


@dataclass
class ModelSpec:
    """Which GGUF runs one role, and how."""

    path: str | None = field(default=None, metadata={"help": "GGUF file; None = the embedded SmolLM2-135M"})
    adapter: str | None = field(default=None, metadata={"help": "GGUF LoRA adapter; None = none"})
    n_ctx: int = field(default=4096, metadata={"help": "context size in tokens"})
    n_threads: int | None = field(default=None, metadata={"help": "CPU threads; None = physical cores"})
    n_gpu_layers: int = field(default=0, metadata={"help": "layers offloaded to a GPU build of llama.cpp"})

    def validate(self) -> None:
        if self.n_ctx < 256:
            raise InvalidInputError("Context size must be at least 256 tokens.")
        if self.n_threads is not None and self.n_threads < 1:
            raise InvalidInputError("Threads must be at least 1.")
        if self.n_gpu_layers < -1:
            raise InvalidInputError("GPU layers must be -1 (all) or more.")


@dataclass
class Settings:
    """Everything the user can set; shared by the GUI and the CLI."""

    answer_model: ModelSpec = field(default_factory=ModelSpec)
    manager_model: ModelSpec = field(default_factory=ModelSpec)
    temperature: float = field(default=0.7, metadata={"help": "chat reply sampling temperature"})
    max_tokens: int = field(default=512, metadata={"help": "longest chat reply, in tokens"})
    memory_paused: bool = field(default=False, metadata={"help": "the manager neither reads nor writes"})
    use_shipped_adapters: bool = field(default=True, metadata={"help": "use trained adapters shipped in assets/"})
    fast_embedded_model: bool = field(default=True, metadata={
        "help": "run the embedded model as a Q8_0 copy derived once (at the first start, in the "
                "background) from the shipped Q4_1 file: ~1.9x faster prompt evaluation, val F1 "
                "within noise (docs/results.md); `memory-r1 models optimize`"})
    trash_days: int = field(default=30, metadata={"help": "days a deleted chat stays in the trash before it is "
                                                          "purged for good (at start-up); 0 = at the next start"})
    chat_memory_tokens: int = field(default=120, metadata={"help": "most prompt tokens of memories given with one "
                                                                   "chat message (each costs first-token time)"})
    prefill_while_typing: bool = field(default=True, metadata={
        "help": "while a message is typed, evaluate the prompt its reply would send (history, the memories "
                "found for the draft) in the background, so the reply starts sooner; nothing is stored"})
    manager_extraction: str = field(default="auto", metadata={
        "help": "how the memory manager finds a turn's facts: free (the model writes them), extractive "
                "(it chooses among the turn's own sentences) or auto (extractive under 1B parameters)"})
    user_name: str = field(default="", metadata={"help": "the name memories are written about (\"Sam likes tea\"); "
                                                      "empty = \"User\""})
    system_prompt: str = field(default="", metadata={"help": "added to every chat's system message (a chat may "
                                                            "set its own); the memory instructions stay"})
    top_p: float = field(default=0.95, metadata={"help": "chat reply nucleus sampling (1 = off)"})
    top_k: int = field(default=40, metadata={"help": "chat reply: sample among the k likeliest tokens (0 = off)"})
    repeat_penalty: float = field(default=1.0, metadata={"help": "chat reply: penalty on repeated tokens (1 = off)"})
    theme: str = field(default="system", metadata={"help": "system, light or dark"})
    font_size: int = field(default=0, metadata={"help": "font size in points; 0 = the system's"})
    welcome_shown: bool = False

    def validate(self) -> None:
        self.answer_model.validate()
        self.manager_model.validate()
        if not 0.0 <= self.temperature <= 2.0:
            raise InvalidInputError("Temperature must be between 0 and 2.")
        if not 1 <= self.max_tokens <= 32768:
            raise InvalidInputError("Max tokens must be between 1 and 32768.")
        budget = self.chat_memory_tokens
        if isinstance(budget, bool) or not isinstance(budget, int) or not 0 <= budget <= 4000:
            raise InvalidInputError("Chat memory tokens must be a whole number from 0 to 4000.")
        if self.manager_extraction not in ("free", "extractive", "auto"):
            raise InvalidInputError("Manager extraction must be free, extractive or auto.")
        if isinstance(self.top_p, bool) or not isinstance(self.top_p, (int, float)) or not 0.0 < self.top_p <= 1.0:
            raise InvalidInputError("Top-p must be above 0 and at most 1.")
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, int) or not 0 <= self.top_k <= 1000:
            raise InvalidInputError("Top-k must be a whole number from 0 (off) to 1000.")
        penalty = self.repeat_penalty
        if isinstance(penalty, bool) or not isinstance(penalty, (int, float)) or not 0.5 <= penalty <= 2.0:
            raise InvalidInputError("The repeat penalty must be between 0.5 and 2 (1 = off).")
        if not isinstance(self.system_prompt, str) or len(self.system_prompt) > 4000:
            raise InvalidInputError("The system prompt must be text of at most 4000 characters.")
        if self.theme not in ("system", "light", "dark"):
            raise InvalidInputError("The theme must be system, light or dark.")
        size = self.font_size
        if isinstance(size, bool) or not isinstance(size, int) or not (size == 0 or 6 <= size <= 36):
            raise InvalidInputError("The font size must be 0 (the system's) or from 6 to 36 points.")
        name = self.user_name
        if not isinstance(name, str) or len(name) > 60 or name != name.strip() or "\n" in name:
            raise InvalidInputError("Your name must be one line of at most 60 characters, without "
                                    "spaces at either end.")
        days = self.trash_days
        if isinstance(days, bool) or not isinstance(days, int) or not 0 <= days <= 3650:
            raise InvalidInputError("Days in the trash must be a whole number from 0 to 3650.")

    # --- persistence -------------------------------------------------------------------
    @classmethod
    def load(cls, path: Path) -> "Settings":
        if not path.exists():
            return cls()
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            log.warning("settings file %s unreadable (%s); using defaults", path, exc)
            return cls()
        return cls.from_dict(raw if isinstance(raw, dict) else {})

    @classmethod
    def from_dict(cls, raw: dict) -> "Settings":
        def build(dc, data):
            kwargs = {}
            for f in dataclasses.fields(dc):
                if f.name not in data:
                    continue
                value = data[f.name]
                if f.name in ("answer_model", "manager_model") and isinstance(value, dict):
                    value = build(ModelSpec, value)
                kwargs[f.name] = value
            return dc(**kwargs)

        try:
            settings = build(cls, raw)
            settings.validate()
            return settings
        except (TypeError, InvalidInputError) as exc:
            log.warning("settings invalid (%s); using defaults", exc)
            return cls()

    def gen_params(self):
        """The chat reply's sampling settings as `GenParams`."""
        from core.types import GenParams

        return GenParams(temperature=float(self.temperature), top_p=float(self.top_p), max_tokens=int(self.max_tokens),
                         top_k=int(self.top_k), repeat_penalty=float(self.repeat_penalty))

    def speaker(self) -> str:
        """The user's name as the memories and prompts use it ("User" until one is set)."""
        return self.user_name or "User"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def save(self, path: Path) -> None:
        """Atomic write: a crash never leaves a half-written settings file."""
        self.validate()
        from core.fileio import atomic_write_json

        atomic_write_json(path, self.to_dict(), indent=2)


def settings_path(base: Path | None = None) -> Path:
    from core.paths import data_dir

    return (base or data_dir()) / "settings.json"

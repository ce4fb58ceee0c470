"""Loading and swapping models in the background (the runner's "model" lane).

`ModelControl.load(factory, settings)` builds the `Assistant` (embedder warm-up, one backend
per role) while the window stays usable; `swap(assistant, old, new)` has the assistant's
`ModelSet` load the new model(s) first and swap them in only when every one loaded
(`Assistant.swap_models`), so a file that fails to load is reported and the previous model
stays; the replaced backends are closed once no call uses them any more. `backend_loader(spec)`
replaces `core.llm.runtime.load_backend` for swaps (tests). GUI thread, except the
`load`/`swap` closures (model worker).

Signals (GUI thread): `busyStarted(text)`, `busyEnded(text)`, `progress(text)` (from the
factory), `loaded(assistant)`, `loadFailed(exc)`, `swapped(exc_or_None)` (None: success).
No bool arguments: see app/gui/tasks.py on PySide6 6.12.0.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Callable

from PySide6.QtCore import QObject, Signal

from core.config import Settings

from app.gui.tasks import TaskRunner

if TYPE_CHECKING:
    from core.assistant.pipeline import Assistant


class ModelControl(QObject):
    busyStarted = Signal(str)
    busyEnded = Signal(str)
    progress = Signal(str)
    loaded = Signal(object)
    loadFailed = Signal(object)
    swapped = Signal(object)

    def __init__(self, runner: TaskRunner, backend_loader: Callable | None = None, parent=None) -> None:
        super().__init__(parent)
        self.runner = runner
        self.backend_loader = backend_loader  # None: the ModelSet's own loader

    def _progress(self, text: str) -> None:  # model worker
        try:
            self.progress.emit(text)
        except RuntimeError:  # the window is gone
            pass

    def load(self, factory: Callable, settings: Settings) -> None:
        """Run `factory(settings, progress) -> Assistant` in the background."""
        self._submit(factory, settings, self._progress, name="load models", busy="Loading the models…",
                     ok=("Ready.", self.loaded.emit), failed=("", self.loadFailed.emit))

    def swap(self, assistant: Assistant, old: Settings, new: Settings) -> None:
        """Load the models of `new` that differ from `old`, then swap them into `assistant`.

        Compared and loaded as `core.catalog.shipped.effective_spec` resolves them, so turning
        `use_shipped_adapters` on or off reloads the roles a shipped adapter applies to, and
        `fast_embedded_model` the roles on the embedded model (once its faster copy exists: until
        then the shipped file stays, and the copy is derived in the background)."""
        import copy

        from core.catalog.shipped import effective_spec

        loader = self.backend_loader
        old, new = copy.deepcopy(old), copy.deepcopy(new)  # the window changes them meanwhile

        def load():  # model worker
            changed = {role: effective_spec(new, role) for role in ("answer", "manager")}
            changed = {role: spec for role, spec in changed.items() if spec != effective_spec(old, role)}
            assistant.swap_models(changed, loader=loader)
            return changed

        self._submit(load, name="swap models", busy="Loading the new model…",
                     ok=("Model changed.", lambda _changed: self.swapped.emit(None)),
                     failed=("The previous model is still in use.", self.swapped.emit))

    def _submit(self, fn: Callable, *args, name: str, busy: str, ok: tuple[str, Callable],
                failed: tuple[str, Callable]) -> None:
        """Run `fn(*args)` on the model lane with the busy indicator on; at the end the indicator
        goes off with the (text, callback) pair's text and the callback gets the result or error."""
        self.busyStarted.emit(busy)

        def done(result):
            self.busyEnded.emit(ok[0])
            ok[1](result)

        def error(exc):
            self.busyEnded.emit(failed[0])
            failed[1](exc)

        self.runner.submit(fn, *args, name=name, lane="model", on_done=done, on_error=error)

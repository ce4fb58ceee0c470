"""Loading and swapping models in the background (the runner's "model" lane).

`ModelControl.load(factory, settings)` builds the `Assistant` (embedder warm-up, one backend
per role) while the window stays usable; `swap(assistant, old, new)` loads the new model(s)
first and swaps them in only when every one loaded, so a file that fails to load is reported
and the previous model stays; the replaced backends are closed once `set_backends` returned
(no call uses them any more). GUI thread, except the `load`/`swap` closures (model worker).

Signals (GUI thread): `busyStarted(text)`, `busyEnded(text)`, `progress(text)` (from the
factory), `loaded(assistant)`, `loadFailed(exc)`, `swapped(exc_or_None)` (None: success).
No bool arguments: see app/gui/tasks.py on PySide6 6.12.0.
"""

from __future__ import annotations

from typing import Callable

from PySide6.QtCore import QObject, Signal

from core.config import Settings

from app.gui.tasks import TaskRunner


def default_backend_loader(spec):  # model worker
    from core.llm.runtime import load_backend

    return load_backend(spec)


def assistant_backends(assistant) -> list:
    """The assistant's current backends (core.assistant.pipeline keeps them in these attributes)."""
    return [getattr(assistant, name, None) for name in ("_answer_backend", "_manager_backend")]


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
        self.backend_loader = backend_loader or default_backend_loader

    def _progress(self, text: str) -> None:  # model worker
        try:
            self.progress.emit(text)
        except RuntimeError:  # the window is gone
            pass

    def load(self, factory: Callable, settings: Settings) -> None:
        """Run `factory(settings, progress) -> Assistant` in the background."""
        self.busyStarted.emit("Loading the models…")

        def done(assistant):
            self.busyEnded.emit("Ready.")
            self.loaded.emit(assistant)

        def failed(exc):
            self.busyEnded.emit("")
            self.loadFailed.emit(exc)

        self.runner.submit(factory, settings, self._progress, name="load models", lane="model",
                           on_done=done, on_error=failed)

    def swap(self, assistant, old: Settings, new: Settings) -> None:
        """Load the models of `new` that differ from `old`, then swap them into `assistant`.

        Compared and loaded as `core.catalog.shipped.effective_spec` resolves them, so turning
        `use_shipped_adapters` on or off reloads the roles a shipped adapter applies to."""
        import copy

        from core.catalog.shipped import effective_spec

        loader = self.backend_loader
        old, new = copy.deepcopy(old), copy.deepcopy(new)  # the window changes them meanwhile

        def load():  # model worker
            loaded = []
            try:
                for role in ("answer", "manager"):
                    spec = effective_spec(new, role)
                    loaded.append(loader(spec) if spec != effective_spec(old, role) else None)
            except BaseException:
                for backend in loaded:
                    if backend is not None:
                        backend.close()
                raise
            previous = assistant_backends(assistant)
            assistant.set_backends(answer_backend=loaded[0], manager_backend=loaded[1])
            current = assistant_backends(assistant)
            for backend in previous:
                if backend is not None and all(backend is not c for c in current):
                    backend.close()
            return loaded

        def done(_loaded):
            self.busyEnded.emit("Model changed.")
            self.swapped.emit(None)

        def failed(exc):
            self.busyEnded.emit("The previous model is still in use.")
            self.swapped.emit(exc)

        self.busyStarted.emit("Loading the new model…")
        self.runner.submit(load, name="swap models", lane="model", on_done=done, on_error=failed)

"""The one background-task helper: all model and database work runs here, off the GUI thread.

`TaskRunner.submit(fn, ...)` runs `fn(*args)` on a worker thread of a *lane* and delivers the
result (or the exception) back on the GUI thread through a queued Qt signal. Each lane is a
`QThreadPool` with one thread, so work in a lane is serial (design.md: one owner for stateful
native things — the `Llama` instance is only ever used by the "model" lane, and bank calls
queue up in the "db" lane in the order the user made them). Two lanes mean a memory edit does
not wait for a long reply to finish streaming.

Never pass a Python bool to `Signal.emit` (PySide6 6.12.0 loses a reference to True/False
per emit, fatal on Python 3.11); emit ints, strings or objects that contain the bool.

Threads: `submit`, `cancel_all`, `busy` and `shutdown` are called on the GUI thread; the
callbacks `on_done(result)` / `on_error(exc)` are always called on the GUI thread. The GUI
thread never blocks on a worker: `shutdown(wait_ms)` is only for the very end of the program.
"""

from __future__ import annotations

import itertools
import logging
import os
import sys
import threading
from dataclasses import dataclass, field
from typing import Any, Callable

from PySide6.QtCore import QObject, QRunnable, Qt, QThreadPool, Signal, Slot

from core.errors import UserError
from core.types import CancelToken

log = logging.getLogger(__name__)

LANES = ("model", "db")
_local = threading.local()


def lower_thread_priority(nice: int) -> None:
    """Raise the calling OS thread's niceness to `nice` (Linux: per thread, and inherited by the
    threads it starts afterwards). Best effort: a no-op elsewhere or where not permitted."""
    if nice <= 0 or getattr(_local, "niced", False) or not sys.platform.startswith("linux"):
        return
    _local.niced = True
    try:
        current = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), min(19, max(current, nice)))
    except OSError as exc:  # not permitted in some sandboxes: keep going at normal priority
        log.debug("could not lower the %s thread's priority: %s", threading.current_thread().name, exc)


@dataclass
class Task:
    """A submitted unit of work. `cancel` is the flag the work checks between tokens."""

    id: int
    name: str
    lane: str
    on_done: Callable[[Any], None] | None = None
    on_error: Callable[[BaseException], None] | None = None
    cancel: CancelToken = field(default_factory=CancelToken)
    finished: bool = False


class _TaskRunnable(QRunnable):
    """Runs one task on a pool thread and posts the outcome back."""

    def __init__(self, runner: "TaskRunner", task: Task, fn: Callable, args: tuple, kwargs: dict):
        super().__init__()
        self.setAutoDelete(True)
        self._runner, self._task, self._fn, self._args, self._kwargs = runner, task, fn, args, kwargs

    def run(self) -> None:  # worker thread
        threading.current_thread().name = f"gui-{self._task.lane}"
        try:
            result = self._fn(*self._args, **self._kwargs)
        except BaseException as exc:  # noqa: BLE001 - delivered to on_error on the GUI thread
            if not isinstance(exc, UserError):
                log.exception("background task %r failed", self._task.name)
            self._runner._post(self._task, False, exc)
        else:
            self._runner._post(self._task, True, result)


class TaskRunner(QObject):
    """Serial lanes of background work with results delivered on the GUI thread.

    Signals (GUI thread): `started(Task)`, `finished(Task)`, `idle()` when no task is left.
    An exception without an `on_error` callback goes to `unhandled(Task, exc)`.
    """

    started = Signal(object)
    finished = Signal(object)
    idle = Signal()
    unhandled = Signal(object, object)
    _deliver = Signal(object)  # one (task, ok, payload) tuple: see the note in `_post`

    def __init__(self, parent: QObject | None = None) -> None:
        super().__init__(parent)
        self._pools: dict[str, QThreadPool] = {}
        for lane in LANES:
            pool = QThreadPool(self)
            pool.setMaxThreadCount(1)
            pool.setExpiryTimeout(-1)
            self._pools[lane] = pool
        self._ids = itertools.count(1)
        self._pending: dict[int, Task] = {}
        self._closed = False
        self._deliver.connect(self._on_deliver_packed, Qt.ConnectionType.QueuedConnection)

    # --- GUI thread API -------------------------------------------------------------------
    def submit(self, fn: Callable, *args, name: str = "", lane: str = "db",
               on_done: Callable[[Any], None] | None = None,
               on_error: Callable[[BaseException], None] | None = None,
               pass_cancel: bool = False, **kwargs) -> Task:
        """Queue `fn(*args, **kwargs)` on `lane`; with `pass_cancel` it gets `cancel=<token>`.

        Raises RuntimeError after `shutdown`.
        """
        if self._closed:
            raise RuntimeError("the task runner is shut down")
        if lane not in self._pools:
            raise ValueError(f"unknown lane {lane!r}")
        task = Task(next(self._ids), name or getattr(fn, "__name__", "task"), lane, on_done, on_error)
        if pass_cancel:
            kwargs["cancel"] = task.cancel
        self._pending[task.id] = task
        self.started.emit(task)
        self._pools[lane].start(_TaskRunnable(self, task, fn, args, kwargs))
        return task

    def busy(self, lane: str | None = None) -> bool:
        return any(t.lane == lane or lane is None for t in self._pending.values())

    def pending(self) -> list[Task]:
        return list(self._pending.values())

    def cancel_all(self) -> None:
        for task in self._pending.values():
            task.cancel.cancel()

    def shutdown(self, wait_ms: int = 10_000) -> bool:
        """Cancel everything and wait for the workers (end of program only). True if they ended."""
        self._closed = True
        self.cancel_all()
        ok = True
        for pool in self._pools.values():
            pool.clear()
            ok = pool.waitForDone(wait_ms) and ok
        return ok

    # --- delivery ---------------------------------------------------------------------------
    def _post(self, task: Task, ok: bool, payload: object) -> None:  # worker thread
        # Packed in a tuple: PySide6 6.12.0 drops a reference to a Python bool passed to
        # Signal.emit (True/False get deallocated on Python 3.11 after enough emits).
        try:
            self._deliver.emit((task, ok, payload))
        except RuntimeError:  # the runner was deleted while the task ran (program exit)
            log.debug("result of %r dropped: runner gone", task.name)

    @Slot(object)
    def _on_deliver_packed(self, packed: tuple) -> None:  # GUI thread
        self._on_deliver(*packed)

    def _on_deliver(self, task: Task, ok: bool, payload: object) -> None:  # GUI thread
        task.finished = True
        self._pending.pop(task.id, None)
        try:
            if ok:
                if task.on_done is not None:
                    task.on_done(payload)
            elif task.on_error is not None:
                task.on_error(payload)  # type: ignore[arg-type]
            else:
                self.unhandled.emit(task, payload)
        finally:
            self.finished.emit(task)
            if not self._pending:
                self.idle.emit()


class BackgroundCall:
    """`fn()` started at once on its own (daemon) thread; `result()` waits for it and returns its
    value or raises its exception on the caller's thread; `wait()` waits without raising.

    For work that runs in parallel *inside* one lane's task (the start-up load: both models and
    the embedder at the same time), where a lane's serial order does not apply. Any thread.
    """

    def __init__(self, fn: Callable[[], Any], *, name: str = "background-call") -> None:
        self._fn = fn
        self._value: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        try:
            self._value = self._fn()
        except BaseException as exc:  # noqa: BLE001 - re-raised by result()
            self._error = exc

    def wait(self, timeout: float | None = None) -> bool:
        """Whether it has finished (after waiting up to `timeout` seconds; None: for ever)."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def result(self) -> Any:
        self._thread.join()
        if self._error is not None:
            raise self._error
        return self._value


class TokenBuffer:
    """Text pieces appended by a worker thread, taken in batches by a GUI-thread timer.

    The worker's `on_token` calls `append` (cheap, no Qt call); a `QTimer` on the GUI thread
    calls `take()` every ~50 ms and repaints once per batch, so a fast model never floods the
    event loop with one repaint per token.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._parts: list[str] = []

    def append(self, piece: str) -> None:
        if piece:
            with self._lock:
                self._parts.append(piece)

    def take(self) -> str:
        with self._lock:
            parts, self._parts = self._parts, []
        return "".join(parts)

"""The one owner of the chat models: `ModelSet` loads each role's backend, keeps it, swaps it
and closes it.

Roles: "answer" (the Answer Agent), "manager" (the Memory Manager), "decide" (a second instance
of the manager model for its per-fact decision calls: extraction and decision then each keep
their instruction prefix in llama.cpp's KV cache), "judge" (the evaluation's judge). Each role
gets its own backend unless told to share (core/llm/runtime.py: two roles' prompts on one
instance evict each other's cached prefix). A role comes from one source:
- ModelSpecs tried in order (`from_specs`, `for_settings`) through `loader` (default
  `core.llm.runtime.load_backend`). When one raises ModelLoadError and another follows, the
  failure is logged and reported through `progress` ("<the error> Using the embedded model for
  the answer instead.") and the next is tried; the last one's error propagates.
  `for_settings` gives the app's order (`role_attempts`): the role's spec with its shipped
  adapter (core.catalog.shipped), the spec as set when that differs, and for a custom model the
  embedded one. With `share_identical`, a role whose specs equal an earlier role's shares its
  instance (`memory-r1 chat`).
- a zero-argument factory (`lazy`: the evaluation's, and tests' fakes);
- a backend already loaded (`of`: adopted, so closed by `close()`).

Loading is lazy: `get(role)` (`.answer`, `.manager`, `.decide`, `.judge`) loads a role on first
use; `load(*roles)` loads them now and, when one fails, closes what it loaded. `swap(specs)`
loads new backends for some roles and puts them in place only when every one loaded (a failure
leaves the current ones); the replaced ones are closed after `release` said no call uses them.
`close()` closes every distinct backend once (errors are logged, not raised) and forgets them;
a role with a spec or factory source loads again on its next use.

Threads: any thread. Loading, swapping and closing take one lock; `get` of a loaded role does
not wait for it. The backends follow their own contract (core.llm.runtime).
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Mapping, Sequence

from core.config import ModelSpec, Settings
from core.errors import InvalidInputError, ModelLoadError
from core.types import ChatBackend

log = logging.getLogger(__name__)

ROLES = ("answer", "manager", "decide", "judge")
LABELS = {"answer": "answer", "manager": "memory manager", "decide": "memory manager (decisions)",
          "judge": "judge"}

Progress = Callable[[str], None]
Loader = Callable[[ModelSpec], ChatBackend]


def default_loader(spec: ModelSpec) -> ChatBackend:
    """`core.llm.runtime.load_backend`, looked up at call time."""
    from core.llm import runtime

    return runtime.load_backend(spec)


def role_attempts(settings: Settings, role: str) -> list[ModelSpec]:
    """What the app tries for `role` ("answer" or "manager"), in order: its spec with any
    shipped adapter (core.catalog.shipped), the spec as set when that differs, and for a custom
    model the embedded one without an adapter (same context size and threads)."""
    from core.catalog.roles import role_spec
    from core.catalog.shipped import effective_spec

    own = role_spec(settings, role)
    attempts = [effective_spec(settings, role)]
    if attempts[0] != own:
        attempts.append(own)
    if own.path:
        attempts.append(ModelSpec(n_ctx=own.n_ctx, n_threads=own.n_threads))
    return attempts


@dataclass
class _Source:
    """Where a role's backend comes from (none of them: an adopted backend, not reloadable)."""

    specs: list[ModelSpec] = field(default_factory=list)
    factory: Callable[[], ChatBackend] | None = None
    same_as: str | None = None

    def loadable(self) -> bool:
        return bool(self.specs) or self.factory is not None or self.same_as is not None


class ModelSet:
    """The backends of the roles and their owner (see the module docstring)."""

    def __init__(self, *, loader: Loader | None = None, progress: Progress | None = None) -> None:
        self.loader = loader or default_loader
        self.progress = progress
        self._sources: dict[str, _Source] = {}
        self._made: dict[str, ChatBackend] = {}
        self._specs: dict[str, ModelSpec] = {}  # the spec each loaded role came from
        self._lock = threading.RLock()

    # --- construction -------------------------------------------------------------------
    @classmethod
    def from_specs(cls, specs: Mapping[str, ModelSpec | Sequence[ModelSpec] | None], *,
                   loader: Loader | None = None, progress: Progress | None = None,
                   share_identical: bool = False) -> "ModelSet":
        """Roles loaded from specs (a spec, or a list tried in order; None: no such role)."""
        models = cls(loader=loader, progress=progress)
        for role, given in specs.items():
            if given is None:
                continue
            attempts = [given] if isinstance(given, ModelSpec) else list(given)
            twin = next((r for r, s in models._sources.items() if s.specs == attempts), None)
            models._sources[_check(role)] = (_Source(same_as=twin) if share_identical and twin
                                             else _Source(specs=attempts))
        return models

    @classmethod
    def for_settings(cls, settings: Settings, roles: Sequence[str] = ("answer", "manager"), *,
                     loader: Loader | None = None, progress: Progress | None = None) -> "ModelSet":
        """The app's roles: each from `role_attempts(settings, role)` (with the fallbacks)."""
        return cls.from_specs({role: role_attempts(settings, role) for role in roles}, loader=loader,
                              progress=progress)

    @classmethod
    def lazy(cls, **factories: Callable[[], ChatBackend] | None) -> "ModelSet":
        """Roles made by zero-argument factories on first use (None: no such role)."""
        models = cls()
        for role, factory in factories.items():
            if factory is not None:
                models._sources[_check(role)] = _Source(factory=factory)
        return models

    @classmethod
    def of(cls, **backends: ChatBackend | None) -> "ModelSet":
        """Backends already loaded, adopted (None: no such role; one object may fill two roles)."""
        models = cls()
        for role, backend in backends.items():
            if backend is not None:
                models._sources[_check(role)] = _Source()
                models._made[role] = backend
        return models

    # --- access -------------------------------------------------------------------------
    def has(self, role: str) -> bool:
        """Whether `role` has a backend or a way to load one."""
        return role in self._made or (role in self._sources and self._sources[role].loadable())

    def get(self, role: str, progress: Progress | None = None) -> ChatBackend:
        """The role's backend, loaded now if it is not yet. Raises InvalidInputError for a role
        with no source, ModelLoadError when no attempt loads."""
        backend = self._made.get(role)
        if backend is not None:
            return backend
        with self._lock:
            if role in self._made:
                return self._made[role]
            source = self._sources.get(role)
            if source is None or not source.loadable():
                raise InvalidInputError(f"No {role} model configured.")
            if source.same_as is not None:
                backend = self.get(source.same_as, progress)
                if source.same_as in self._specs:
                    self._specs[role] = self._specs[source.same_as]
            elif source.factory is not None:
                backend = source.factory()
            else:
                backend, self._specs[role] = self._load_attempts(role, source.specs, progress or self.progress)
            self._made[role] = backend
            return backend

    @property
    def answer(self) -> ChatBackend:
        return self.get("answer")

    @property
    def manager(self) -> ChatBackend:
        return self.get("manager")

    @property
    def decide(self) -> ChatBackend | None:
        """The second manager instance for decision calls, or None when there is none."""
        return self.get("decide") if self.has("decide") else None

    @property
    def judge(self) -> ChatBackend:
        return self.get("judge")

    def loaded(self, role: str) -> ChatBackend | None:
        """The role's backend if it is loaded, else None (never loads)."""
        return self._made.get(role)

    def spec(self, role: str) -> ModelSpec | None:
        """The spec the role's backend was loaded from (after any fallback), or None."""
        return self._specs.get(role)

    def adapter_path(self, role: str):
        """The LoRA adapter the role's loaded backend runs (`LlamaBackend.adapter_path`), else
        the adapter of the spec it was loaded from; None when not loaded or without one."""
        backend = self._made.get(role)
        if backend is None:
            return None
        path = getattr(backend, "adapter_path", None)  # LlamaBackend's; not part of ChatBackend
        if path is None and role in self._specs:
            path = self._specs[role].adapter
        return path

    def backends(self) -> list[ChatBackend]:
        """The distinct loaded backends."""
        return list({id(b): b for b in self._made.values()}.values())

    # --- loading --------------------------------------------------------------------------
    def _load_attempts(self, role: str, attempts: list[ModelSpec],
                       progress: Progress | None) -> tuple[ChatBackend, ModelSpec]:
        label = LABELS.get(role, role)
        _report(progress, f"Loading the {label} model…")
        for i, spec in enumerate(attempts):
            try:
                return self.loader(spec), spec
            except ModelLoadError as exc:
                if i + 1 == len(attempts):
                    raise
                if spec.path and not attempts[i + 1].path:
                    then = f"Using the embedded model for the {label} instead."
                else:
                    then = f"Loading the {label} model without the shipped adapter."
                log.warning("the %s model %s (adapter %s) failed to load (%s); %s", label,
                            spec.path or "(embedded)", spec.adapter, exc, then)
                _report(progress, f"{exc} {then}")
        raise InvalidInputError(f"No {role} model configured.")  # an empty list: not loadable

    def load(self, *roles: str, progress: Progress | None = None) -> "ModelSet":
        """Load `roles` (default: every role) now, in order. When one fails, the backends this
        call loaded are closed and the error propagates. Returns self."""
        with self._lock:
            new: list[str] = []
            try:
                for role in roles or tuple(self._sources):
                    if role not in self._made:
                        self.get(role, progress)
                        new.append(role)
            except BaseException:
                for backend in self._forget(new):
                    _close(backend)
                raise
        return self

    def replace(self, backends: Mapping[str, ChatBackend], *,
                release: Callable[[list[ChatBackend]], None] | None = None) -> list[ChatBackend]:
        """Put `backends` (loaded, adopted from now on) in place of those roles' current ones
        (a role sharing a replaced role's instance follows it), then call `release(replaced)`,
        which returns once no call uses a replaced backend. Returns the replaced backends that
        no role uses any more; they are not closed (`swap` closes them)."""
        with self._lock:
            before = self.backends()
            for role, backend in backends.items():
                self._made[_check(role)] = backend
                self._sources[role] = _Source()
                self._specs.pop(role, None)
            for role, source in self._sources.items():
                if source.same_as is not None and source.same_as in backends and role not in backends:
                    self._made[role] = backends[source.same_as]
            now = self.backends()
            replaced = [b for b in before if all(b is not c for c in now)]
        if release is not None and replaced:
            release(replaced)
        return replaced

    def swap(self, specs: Mapping[str, ModelSpec], *, loader: Loader | None = None,
             release: Callable[[list[ChatBackend]], None] | None = None) -> None:
        """Load a new backend for each role in `specs` (no fallback: the user chose that model),
        then put all of them in place (`replace`) and close the replaced ones. When one fails to
        load, those loaded are closed, the current ones stay and the error propagates."""
        load = loader or self.loader
        new: dict[str, ChatBackend] = {}
        try:
            for role, spec in specs.items():
                new[_check(role)] = load(spec)
        except BaseException:
            for backend in new.values():
                _close(backend)
            raise
        replaced = self.replace(new, release=release)  # `release` runs without this set's lock
        with self._lock:
            for role, spec in specs.items():
                self._sources[role] = _Source(specs=[spec])
                self._specs[role] = spec
        for backend in replaced:
            _close(backend)

    def close(self) -> None:
        """Close every distinct backend once and forget them (idempotent)."""
        with self._lock:
            backends = self._forget(list(self._made))
        for backend in backends:
            _close(backend)

    def _forget(self, roles: Sequence[str]) -> list[ChatBackend]:
        """Drop `roles`' backends; returns those no remaining role uses."""
        dropped = [self._made.pop(r) for r in roles if r in self._made]
        for r in roles:
            self._specs.pop(r, None)
        left = list(self._made.values())
        return list({id(b): b for b in dropped if all(b is not o for o in left)}.values())

    def __enter__(self) -> "ModelSet":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check(role: str) -> str:
    if role not in ROLES:
        raise InvalidInputError(f"Unknown model role {role!r}; use one of: {', '.join(ROLES)}.")
    return role


def _report(progress: Progress | None, text: str) -> None:
    if progress is not None:
        progress(text)


def _close(backend: ChatBackend) -> None:
    try:
        backend.close()
    except Exception:  # closing is best effort: the others still get closed
        log.warning("closing the model %s failed", getattr(backend, "name", backend), exc_info=True)

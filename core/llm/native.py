"""llama.cpp plumbing shared by the runtime: native log routing, the process-wide compute
lock, the standard streams kept across parallel loads, and JSON-schema grammars. No model is
owned here (see core.llm.runtime).

Importing this module does not import llama_cpp; `import_llama_cpp()` does, after setting up
the log callback's prerequisites. Any thread may call everything here.
"""

from __future__ import annotations

import collections
import contextlib
import ctypes
import functools
import json
import logging
import os
import sys
import threading
from typing import Iterator

log = logging.getLogger("core.llm.runtime")
native_log = logging.getLogger("core.llm.runtime.native")


# --- native log -> Python logging ---------------------------------------------------------

class _NativeLog:
    """Collects llama.cpp/ggml log text into whole lines and emits them as log records.

    llama.cpp sends pieces (level 5 = continue the previous message); a record is emitted per
    complete line. INFO/DEBUG lines become DEBUG records (a model load prints hundreds), WARN
    and ERROR keep their level. The last warnings/errors are kept to explain a failed load.
    """

    # enum ggml_log_level (ggml.h): NONE=0 DEBUG=1 INFO=2 WARN=3 ERROR=4 CONT=5
    # (llama-cpp-python's own _logger.py still has the older numbering)
    _LEVELS = {0: logging.DEBUG, 1: logging.DEBUG, 2: logging.DEBUG, 3: logging.WARNING,
               4: logging.ERROR}

    def __init__(self) -> None:
        self.verbose = False  # True: llama.cpp INFO lines are logged at INFO
        self._lock = threading.Lock()
        self._buffer = ""
        self._level = logging.DEBUG
        self.recent: collections.deque[str] = collections.deque(maxlen=8)

    def __call__(self, level: int, text: bytes | None, _user_data) -> None:
        try:  # an exception must never cross back into C
            self.feed(level, (text or b"").decode("utf-8", errors="replace"))
        except Exception:  # pragma: no cover - defensive
            pass

    def feed(self, level: int, text: str) -> None:
        with self._lock:
            if level != 5:
                if self._buffer:
                    self._emit(self._buffer)
                    self._buffer = ""
                self._level = self._LEVELS.get(level, logging.DEBUG)
                if level == 2 and self.verbose:
                    self._level = logging.INFO
            self._buffer += text
            while "\n" in self._buffer:
                line, self._buffer = self._buffer.split("\n", 1)
                self._emit(line)

    def _emit(self, line: str) -> None:
        line = line.rstrip()
        if not line.strip():
            return
        if self._level >= logging.WARNING:
            self.recent.append(line.strip())
        native_log.log(self._level, "%s", line)

    def take_recent(self) -> list[str]:
        with self._lock:
            if self._buffer:
                self._emit(self._buffer)
                self._buffer = ""
            lines = list(self.recent)
            self.recent.clear()
            return lines


NATIVE_LOG = _NativeLog()
_CALLBACK = None  # the ctypes callback object; must stay referenced while llama.cpp may call it
_INSTALL_LOCK = threading.Lock()


def install_native_log() -> None:
    """Route llama.cpp's (and ggml's) log into `core.llm.runtime.native`. Idempotent, any thread."""
    global _CALLBACK
    with _INSTALL_LOCK:
        if _CALLBACK is not None:
            return
        import llama_cpp

        _CALLBACK = llama_cpp.llama_log_callback(NATIVE_LOG)
        llama_cpp.llama_log_set(_CALLBACK, ctypes.c_void_p(0))


def import_llama_cpp():
    """Import llama_cpp lazily (the CLI's registration must not) and hook its log first.

    Before the first import it sets OMP_WAIT_POLICY=PASSIVE unless the user set it: ggml's
    CPU backend runs on OpenMP, whose idle workers otherwise spin between tokens and starve
    the sampling thread, the GUI and any other process (measured here on 2 shared cores:
    2 threads generated 1.6 tokens/s spinning, 21 passive). It only takes effect if no
    OpenMP runtime (llama.cpp's or torch's) is loaded yet, so the app sets it at start-up too.
    """
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import llama_cpp

    install_native_log()
    return llama_cpp


# --- the standard streams across loads -------------------------------------------------------

_STREAMS_LOCK = threading.Lock()
_streams_users = 0
_saved_streams: tuple | None = None  # (dup of fd 1, dup of fd 2, sys.stdout, sys.stderr)


@contextlib.contextmanager
def std_streams_kept() -> Iterator[None]:
    """Run a `Llama(...)` construction inside this. llama-cpp-python (verbose=False) points
    file descriptors 1 and 2 (and sys.stdout/sys.stderr) at /dev/null while a model loads and
    then puts back what it found there; two loads at once on different threads (the app loads
    both models and the embedder in parallel) race, and the later one can put /dev/null back
    for good: seen here, the app's stderr (warnings, `--timings -`) was gone after start-up.
    The first of overlapping loads saves the real streams, the last one restores them. Any
    thread; if the descriptors cannot be duplicated nothing is saved (as before)."""
    global _streams_users, _saved_streams
    with _STREAMS_LOCK:
        if _streams_users == 0:
            try:
                _saved_streams = (os.dup(1), os.dup(2), sys.stdout, sys.stderr)
            except OSError:
                _saved_streams = None
        _streams_users += 1
    try:
        yield
    finally:
        with _STREAMS_LOCK:
            _streams_users -= 1
            if _streams_users == 0 and _saved_streams is not None:
                out, err, stdout, stderr = _saved_streams
                _saved_streams = None
                try:
                    os.dup2(out, 1)
                    os.dup2(err, 2)
                finally:
                    os.close(out)
                    os.close(err)
                sys.stdout, sys.stderr = stdout, stderr


# --- one native computation at a time, process-wide -------------------------------------

class _FairLock:
    """A FIFO lock: a thread that releases and re-acquires at once queues behind waiters.

    Held around each native decode step (one token, or one prompt evaluation) of every
    backend, so two backends (e.g. the answer agent streaming while the manager works in the
    background) alternate token by token instead of running 2 x n_threads on n cores: ggml's
    worker threads spin at barriers, and oversubscribed they ran ~10x slower here.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._queue: collections.deque[object] = collections.deque()
        self._held = False

    def __enter__(self) -> None:
        me = object()
        with self._cond:
            self._queue.append(me)
            while self._held or self._queue[0] is not me:
                self._cond.wait()
            self._queue.popleft()
            self._held = True

    def __exit__(self, *exc) -> None:
        with self._cond:
            self._held = False
            self._cond.notify_all()


COMPUTE_LOCK = _FairLock()


# --- grammar --------------------------------------------------------------------------------

def json_schema_grammar(schema: dict):
    """A cached `LlamaGrammar` for `schema` (property order kept: it fixes the output order).

    Raises ValueError for a schema the converter does not support (a programming error).
    Logs a warning, once per schema, for arrays without maxItems or strings without maxLength
    (a small model can loop inside them until max_tokens).
    """
    return _grammar_from_json(json.dumps(schema, ensure_ascii=False))


@functools.lru_cache(maxsize=64)
def _grammar_from_json(schema_json: str):
    from llama_cpp.llama_grammar import LlamaGrammar

    loose = unbounded_paths(json.loads(schema_json))
    if loose:
        log.warning("schema has unbounded parts (no maxItems/maxLength): %s", ", ".join(loose))
    from llama_cpp.llama_grammar import json_schema_to_gbnf

    try:
        gbnf = json_schema_to_gbnf(schema_json)
    except Exception as exc:
        raise ValueError(f"JSON schema not supported by the grammar converter: {exc}") from exc
    return LlamaGrammar.from_string(gbnf.replace(_LOOSE_CHAR, _STRICT_CHAR), verbose=False)


# llama-cpp-python's converter lets a string hold raw control characters (a newline...),
# which strict JSON parsers reject; llama.cpp's own converter excludes them, as we do.
_LOOSE_CHAR = r'char ::= [^"\\] |'
_STRICT_CHAR = r'char ::= [^"\\\x7F\x00-\x1F] |'


def unbounded_paths(schema: dict, path: str = "$") -> list[str]:
    """Where a schema lets output grow without bound.

    >>> unbounded_paths({"type": "object", "properties": {"facts": {"type": "array",
    ...     "items": {"type": "string", "maxLength": 80}}}})
    ['$.facts']
    >>> unbounded_paths({"type": "string", "enum": ["ADD", "NONE"]})
    []
    """
    if not isinstance(schema, dict):
        return []
    kind = schema.get("type")
    found: list[str] = []
    if kind == "array":
        if "maxItems" not in schema:
            found.append(path)
        found += unbounded_paths(schema.get("items", {}), path + "[]")
    elif kind == "string" and not ({"maxLength", "enum", "const"} & schema.keys()):
        found.append(path)
    for name, sub in (schema.get("properties") or {}).items():
        found += unbounded_paths(sub, f"{path}.{name}")
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            found += unbounded_paths(sub, path)
    return found

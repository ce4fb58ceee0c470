"""The model runtime: one owner object over a llama-cpp-python `Llama` (a `ChatBackend`).

`LlamaBackend` loads a GGUF (the embedded SmolLM2-135M by default) and optionally a GGUF LoRA
adapter, and streams text for chat messages (rendered with the GGUF's own chat template) or
for a raw prompt. With `schema` the output is constrained to JSON matching that schema by a
llama.cpp grammar built from it (`json_schema_grammar`).

Checks before native code: the model and adapter files are validated by `core.llm.gguf_info`
(missing, not GGUF, truncated) and the memory the model needs (weights + KV cache + compute
buffers) is compared with what is available; each failure is one `ModelLoadError`. A failure
inside llama.cpp itself (an architecture it does not know, a bad adapter) is turned into a
`ModelLoadError` too, after freeing whatever was allocated.

llama.cpp's native log (it also sets ggml's) goes to the Python logger `core.llm.runtime.native`
through one process-wide ctypes callback, never to the terminal (plumbing in core.llm.native,
with the process-wide COMPUTE_LOCK that makes backends take turns per token). llama-cpp-python itself, with
verbose=False, briefly points file descriptors 1 and 2 at /dev/null while a model loads
(`native.std_streams_kept` puts the real ones back after overlapping loads).

Threads: any thread may call `complete`/`complete_text`; one generation runs at a time. The
lock is taken at the first `next()` of the returned iterator and released when it is exhausted
or closed, so consume (or close) the iterator on the thread that started it. `count_tokens` and
`apply_chat_template` only read the vocabulary/template and take no lock. `close()` may be
called from any thread: it stops a running generation at its next token and frees the model.

Prefix reuse: `Llama.generate` keeps the KV cache of the longest common token prefix of
consecutive prompts; nothing here resets it, so a fixed instruction prefix is evaluated once.
Prompts that alternate between two different prefixes (e.g. the manager's and the answer
agent's) evict each other: give each role its own `LlamaBackend` (the embedded model is
~100 MB). There is deliberately no state cache (llama-cpp-python's `LlamaRAMCache` grew far
past its limit here); see benchmarks/runtime.py for the figures.
"""

from __future__ import annotations

import codecs
import ctypes
import logging
import os
import random
import threading
from pathlib import Path
from typing import Iterator, Sequence

from core.config import ModelSpec
from core.errors import InvalidInputError, ModelLoadError
from core.llm.gguf_info import GGUFInfo, human_size, validate_gguf
from core.llm.native import (COMPUTE_LOCK, NATIVE_LOG, import_llama_cpp, install_native_log,
                           json_schema_grammar, std_streams_kept, unbounded_paths)

__all__ = ["LlamaBackend", "load_backend", "json_schema_grammar", "unbounded_paths",
           "install_native_log", "available_memory", "estimate_memory", "check_memory",
           "COMPUTE_LOCK", "JSON_MAX_TOKENS"]
from core.types import CancelToken, GenParams, Message

log = logging.getLogger(__name__)

JSON_MAX_TOKENS = 1024  # cap for a schema-constrained generation whose params ask for no cap
N_BATCH = 512
_COMPUTE_OVERHEAD = 48 * 1024 * 1024  # graph/scratch buffers beyond the logits buffer
_CLOSE_WAIT_S = 5.0
_FALLBACK_TEMPLATE = (  # ChatML, used only when a GGUF carries no chat template
    "{% for m in messages %}{{ '<|im_start|>' + m['role'] + '\n' + m['content'] + '<|im_end|>\n' }}"
    "{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


# --- memory check ---------------------------------------------------------------------------

def available_memory() -> int:
    """Bytes of memory available to a new model now (psutil; tests monkeypatch this)."""
    import psutil

    return int(psutil.virtual_memory().available)


def estimate_memory(info: GGUFInfo, n_ctx: int, *, gpu_fraction: float = 0.0,
                    adapter: GGUFInfo | None = None) -> dict[str, int]:
    """Bytes a model needs in RAM: weights, f16 KV cache for `n_ctx`, compute buffers, adapter.

    `gpu_fraction` (0..1) is the share of layers offloaded to a GPU, which leaves host RAM.
    """
    cpu = 1.0 - min(max(gpu_fraction, 0.0), 1.0)
    weights = int((info.tensor_data_end - info.data_offset) * cpu)
    kv = int(info.kv_bytes_per_token() * n_ctx * cpu)
    compute = N_BATCH * (info.vocab_size or 32000) * 4 + _COMPUTE_OVERHEAD
    extra = adapter.file_size if adapter else 0
    return {"weights": weights, "kv_cache": kv, "compute": compute, "adapter": extra,
            "total": weights + kv + compute + extra}


def check_memory(info: GGUFInfo, n_ctx: int, *, gpu_fraction: float = 0.0,
                 adapter: GGUFInfo | None = None) -> None:
    """Raise ModelLoadError when the estimate exceeds `available_memory()`."""
    need = estimate_memory(info, n_ctx, gpu_fraction=gpu_fraction, adapter=adapter)
    have = available_memory()
    if need["total"] > have:
        raise ModelLoadError(
            f"{info.path.name} needs about {human_size(need['total'])} of memory "
            f"({human_size(need['weights'])} of weights and {human_size(need['kv_cache'])} for a "
            f"{n_ctx}-token context) but only {human_size(have)} is available; close other "
            f"programs, lower the context size, or choose a smaller model.")


# --- the backend ----------------------------------------------------------------------------

def _physical_cores() -> int:
    try:
        import psutil

        return psutil.cpu_count(logical=False) or os.cpu_count() or 1
    except Exception:  # pragma: no cover
        return os.cpu_count() or 1


class LlamaBackend:
    """One loaded GGUF (plus optional LoRA adapter): a `core.types.ChatBackend`.

    Arguments override the `ModelSpec` (None = take the spec's value; spec None = defaults;
    path None everywhere = the embedded model). `seed` seeds the per-call seeds drawn when
    `GenParams.seed` is None, so a run is reproducible. `verbose` logs llama.cpp's info lines
    at INFO instead of DEBUG.

    Raises ModelLoadError (before native code where possible) and InvalidInputError for bad
    settings. See the module docstring for threads.
    """

    def __init__(self, spec: ModelSpec | None = None, *, path=None, adapter=None,
                 n_ctx: int | None = None, n_threads: int | None = None,
                 n_gpu_layers: int | None = None, seed: int = 0, verbose: bool = False) -> None:
        self._llm = None
        self._closed = False
        self._close_pending = False
        self._lock = threading.Lock()  # one generation at a time, held by an open stream
        self._owner: int | None = None  # the thread whose stream holds _lock
        self._state_lock = threading.Lock()
        spec = spec or ModelSpec()
        merged = ModelSpec(
            path=str(path) if path is not None else spec.path,
            adapter=str(adapter) if adapter is not None else spec.adapter,
            n_ctx=n_ctx if n_ctx is not None else spec.n_ctx,
            n_threads=n_threads if n_threads is not None else spec.n_threads,
            n_gpu_layers=n_gpu_layers if n_gpu_layers is not None else spec.n_gpu_layers)
        merged.validate()
        from core.paths import embedded_gguf

        self.model_path = Path(merged.path).expanduser() if merged.path else embedded_gguf()
        self.adapter_path = Path(merged.adapter).expanduser() if merged.adapter else None
        self.n_ctx = merged.n_ctx
        self.n_threads = merged.n_threads or _physical_cores()
        self.n_gpu_layers = merged.n_gpu_layers
        self.name = self.model_path.stem + (f"+{self.adapter_path.stem}" if self.adapter_path else "")
        self.info, self.adapter_info = self._validate_files()
        NATIVE_LOG.verbose = verbose
        lc = import_llama_cpp()
        gpu_fraction = self._gpu_fraction(lc)
        check_memory(self.info, self.n_ctx, gpu_fraction=gpu_fraction, adapter=self.adapter_info)
        self._llm = self._load(seed)
        try:
            self._rng = random.Random(seed)
            self._vocab = self._llm._model.vocab
            self._checked_grammars: set[str] = set()
            self._formatter = self._make_formatter()
        except BaseException:
            self._free()
            raise
        log.info("loaded %s (n_ctx=%d, threads=%d, gpu_layers=%d)", self.name, self.n_ctx,
                 self.n_threads, self.n_gpu_layers)

    # --- loading ------------------------------------------------------------------------
    def _validate_files(self) -> tuple[GGUFInfo, GGUFInfo | None]:
        info = validate_gguf(self.model_path)
        if info.is_adapter:
            raise ModelLoadError(f"{self.model_path.name} is a LoRA adapter, not a model; "
                                 "choose it as the adapter of a base model.")
        if self.adapter_path is None:
            return info, None
        adapter = validate_gguf(self.adapter_path)
        if not adapter.is_adapter:
            raise ModelLoadError(f"{self.adapter_path.name} is not a LoRA adapter GGUF.")
        if adapter.architecture and info.architecture and adapter.architecture != info.architecture:
            raise ModelLoadError(
                f"The adapter {self.adapter_path.name} is for a '{adapter.architecture}' model, "
                f"not for {self.model_path.name} ('{info.architecture}').")
        return info, adapter

    def _gpu_fraction(self, lc) -> float:
        if self.n_gpu_layers == 0 or not lc.llama_supports_gpu_offload():
            return 0.0
        layers = (self.info.block_count or 1) + 1
        return 1.0 if self.n_gpu_layers < 0 else min(1.0, self.n_gpu_layers / layers)

    def _load(self, seed: int):
        from llama_cpp import Llama

        llm = Llama.__new__(Llama)  # keep a handle on it so a failed __init__ can be freed
        NATIVE_LOG.take_recent()
        try:
            with std_streams_kept():  # parallel loads must not leave fds 1/2 on /dev/null
                Llama.__init__(
                    llm,
                    model_path=str(self.model_path), n_ctx=self.n_ctx, n_batch=N_BATCH,
                    n_threads=self.n_threads, n_threads_batch=self.n_threads,
                    n_gpu_layers=self.n_gpu_layers, seed=seed, verbose=False)
            if self.adapter_path is not None:
                self._attach_adapter(llm)
        except Exception as exc:
            stack = getattr(llm, "_stack", None)
            if stack is not None:
                stack.close()
            detail = "; ".join(NATIVE_LOG.take_recent()[-3:]) or str(exc)
            what = self.name if self.adapter_path else self.model_path.name
            raise ModelLoadError(f"llama.cpp could not load {what}: {detail}") from exc
        return llm

    def _attach_adapter(self, llm) -> None:
        """Load the LoRA adapter onto `llm` at scale 1 (freed with it, before the model).

        Done here, not through `Llama(lora_path=...)`: that checks the returned pointer with
        `is None`, but a NULL ctypes pointer is not None, so a failed adapter was silently
        ignored (and it also turns mmap off, which the graph-level adapters no longer need).
        """
        lc = import_llama_cpp()
        adapter = lc.llama_adapter_lora_init(llm._model.model, str(self.adapter_path).encode("utf-8"))
        if not adapter:  # NULL
            raise RuntimeError("the LoRA adapter could not be loaded")
        llm._stack.callback(lc.llama_adapter_lora_free, adapter)
        adapters = (lc.llama_adapter_lora_p_ctypes * 1)(adapter)
        scales = (ctypes.c_float * 1)(1.0)
        if lc.llama_set_adapters_lora(llm._ctx.ctx, adapters, 1, scales):
            raise RuntimeError("the LoRA adapter could not be applied")

    def _make_formatter(self):
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        model = self._llm._model
        template = self.info.chat_template or self._llm.metadata.get("tokenizer.chat_template")
        if not template:
            log.warning("%s has no chat template; using ChatML", self.model_path.name)
            template = _FALLBACK_TEMPLATE
        eos, bos = model.token_eos(), model.token_bos()
        return Jinja2ChatFormatter(
            template=template,
            eos_token=model.token_get_text(eos) if eos != -1 else "",
            bos_token=model.token_get_text(bos) if bos != -1 else "")

    # --- the ChatBackend interface ------------------------------------------------------
    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        """The prompt text for `messages` by the GGUF's own template, ending with the
        assistant's turn header. A template that rejects a system message (some do) gets it
        merged into the first user message instead. Raises InvalidInputError otherwise."""
        self._check_open()
        msgs = [{"role": m["role"], "content": m["content"]} for m in messages]
        try:
            return self._formatter(messages=msgs).prompt
        except Exception as exc:
            merged = _merge_system(msgs)
            if merged is not None:
                try:
                    return self._formatter(messages=merged).prompt
                except Exception:
                    pass
            raise InvalidInputError(f"The model's chat template rejected the conversation: {exc}") from exc

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in a prompt (special tokens parsed, no BOS added)."""
        return len(self._tokenize(text, add_bos=False))

    def complete(self, messages: Sequence[Message], *, params: GenParams = GenParams(),
                 schema: dict | None = None, cancel: CancelToken | None = None) -> Iterator[str]:
        """Stream the assistant's reply to `messages` (chat template from the GGUF).

        Raises (at call time) InvalidInputError when the prompt does not fit the context,
        RuntimeError when closed. The iterator stops at end-of-generation, a stop string,
        `params.max_tokens` (capped by the context; JSON_MAX_TOKENS with a schema when
        max_tokens <= 0), or within one token of `cancel` being set.
        """
        tokens = self._tokenize(self.apply_chat_template(messages), add_bos=False)
        return self._start(tokens, params, schema, cancel)

    def complete_text(self, prompt: str, *, params: GenParams = GenParams(),
                      schema: dict | None = None, cancel: CancelToken | None = None) -> Iterator[str]:
        """Like `complete` for a raw prompt (no chat template; BOS added if the model wants
        one; special tokens in `prompt` are parsed). Used by training and evaluation."""
        model = self._llm_or_raise()._model
        return self._start(self._tokenize(prompt, add_bos=model.add_bos_token()), params, schema, cancel)

    def reset_cache(self) -> None:
        """Forget the cached prompt prefix: the next prompt is evaluated from its first token
        (benchmarks of a cold start). Waits for a running generation to finish."""
        with self._lock:
            self._llm_or_raise().reset()

    @property
    def raw_llama(self):
        """The underlying `llama_cpp.Llama`, for benchmarks that compare against calling
        llama-cpp-python directly; app code goes through `complete`."""
        return self._llm_or_raise()

    def close(self) -> None:
        """Free the model, context and adapter. Idempotent; any thread. A generation running
        elsewhere stops at its next token first; one left suspended frees the model when it is
        closed or garbage-collected."""
        with self._state_lock:
            if self._closed or self._llm is None:
                self._closed = True
                return
            self._close_pending = True
        mine = self._owner == threading.get_ident()  # this thread's own stream is suspended
        if not mine and self._lock.acquire(timeout=_CLOSE_WAIT_S):
            try:
                self._free()
            finally:
                self._lock.release()
        else:
            log.warning("%s: a generation is still open; the model is freed when it ends", self.name)

    def __enter__(self) -> "LlamaBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __del__(self) -> None:
        try:
            if not self._closed and self._llm is not None and self._lock.acquire(blocking=False):
                try:
                    self._free()
                finally:
                    self._lock.release()
        except Exception:  # pragma: no cover - interpreter shutdown
            pass

    @property
    def closed(self) -> bool:
        return self._closed

    # --- internals ----------------------------------------------------------------------
    def _free(self) -> None:
        with self._state_lock:
            llm, self._llm = self._llm, None
            self._closed = True
        if llm is not None:
            llm.close()
            log.info("closed %s", self.name)

    def _check_open(self) -> None:
        if self._closed or self._close_pending:
            raise RuntimeError(f"model {self.name} is closed")

    def _llm_or_raise(self):
        self._check_open()
        return self._llm

    def _tokenize(self, text: str, *, add_bos: bool) -> list[int]:
        llm = self._llm_or_raise()
        return llm.tokenize(text.encode("utf-8", errors="replace"), add_bos=add_bos, special=True)

    def _start(self, tokens: list[int], params: GenParams, schema: dict | None,
               cancel: CancelToken | None) -> Iterator[str]:
        llm = self._llm_or_raise()
        if not tokens:
            bos = llm.token_bos()
            if bos == -1:
                raise InvalidInputError("The prompt is empty.")
            tokens = [bos]
        room = self.n_ctx - len(tokens)
        if room <= 0:
            raise InvalidInputError(
                f"The prompt is {len(tokens)} tokens, more than the model's context of "
                f"{self.n_ctx} tokens; shorten it or raise the context size.")
        wanted = params.max_tokens if params.max_tokens and params.max_tokens > 0 else (
            JSON_MAX_TOKENS if schema is not None else room)
        grammar = self._grammar(schema) if schema is not None else None
        return self._stream(tokens, min(wanted, room), params, grammar, cancel)

    def _grammar(self, schema: dict):
        """The schema's grammar, checked once by llama.cpp's parser (a NULL sampler would
        crash inside llama-cpp-python)."""
        grammar = json_schema_grammar(schema)
        if grammar._grammar not in self._checked_grammars:
            lc = import_llama_cpp()
            sampler = lc.llama_sampler_init_grammar(
                self._vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8"))
            if not sampler:
                raise ValueError(f"llama.cpp rejected the grammar for schema {schema!r}: "
                                 + "; ".join(NATIVE_LOG.take_recent()))
            lc.llama_sampler_free(sampler)
            self._checked_grammars.add(grammar._grammar)
        return grammar

    def _acquire(self, cancel: CancelToken | None) -> bool:
        """Wait for the generation lock (False if cancelled while waiting). Raises
        RuntimeError instead of deadlocking when this thread holds it in an open stream."""
        if self._owner == threading.get_ident():
            raise RuntimeError(f"a generation of {self.name} is already open on this thread; "
                               "finish or close it first")
        while not self._lock.acquire(timeout=0.05):
            if cancel is not None and cancel.cancelled:
                return False
        self._owner = threading.get_ident()
        return True

    def _stream(self, tokens: list[int], max_new: int, params: GenParams, grammar,
                cancel: CancelToken | None) -> Iterator[str]:
        if not self._acquire(cancel):
            return
        try:
            if self._closed or self._close_pending or (cancel is not None and cancel.cancelled):
                return
            yield from self._generate(tokens, max_new, params, grammar, cancel)
        finally:
            if self._close_pending and not self._closed:
                self._free()
            self._owner = None
            self._lock.release()

    def _generate(self, tokens, max_new, params, grammar, cancel) -> Iterator[str]:
        llm = self._llm
        assert llm is not None  # `_stream` checked it is open; only a holder of `_lock` frees it
        lc = import_llama_cpp()
        llm.set_seed(params.seed if params.seed is not None else self._rng.randrange(2**31))
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        stops = _StopScanner(params.stop)
        gen = llm.generate(tokens, top_k=params.top_k, top_p=params.top_p, min_p=0.05,
                           temp=params.temperature, repeat_penalty=params.repeat_penalty, grammar=grammar)
        produced = 0
        try:
            while True:
                with COMPUTE_LOCK:  # evaluate the last token (or the prompt), sample the next
                    token = next(gen, None)
                if token is None or lc.llama_vocab_is_eog(self._vocab, token):
                    break
                produced += 1
                text, done = stops.feed(decoder.decode(llm.detokenize([token])))
                if text:
                    yield text
                if done:
                    return
                if produced >= max_new or self._close_pending or (
                        cancel is not None and cancel.cancelled):
                    break
        finally:
            gen.close()
        text, _ = stops.feed(decoder.decode(b"", final=True))
        rest = text + stops.flush()
        if rest:
            yield rest


def _merge_system(msgs: list[dict]) -> list[dict] | None:
    """`[system, user, ...]` -> `[user(system + user), ...]`, or None if there is no system."""
    if len(msgs) < 2 or msgs[0]["role"] != "system" or msgs[1]["role"] != "user":
        return None
    first = {"role": "user", "content": msgs[0]["content"] + "\n\n" + msgs[1]["content"]}
    return [first] + msgs[2:]


class _StopScanner:
    """Holds back text that could be the start of a stop string; cuts at the first match.

    >>> s = _StopScanner(("\\nUser:",))
    >>> s.feed("Hello\\nUs"), s.feed("er: hi")
    (('Hello', False), ('', True))
    """

    def __init__(self, stops: Sequence[str]) -> None:
        self.stops = [s for s in stops if s]
        self.held = ""

    def feed(self, piece: str) -> tuple[str, bool]:
        if not self.stops:
            return piece, False
        self.held += piece
        cut = min((i for i in (self.held.find(s) for s in self.stops) if i >= 0), default=-1)
        if cut >= 0:
            out, self.held = self.held[:cut], ""
            return out, True
        keep = 0
        for s in self.stops:
            for k in range(min(len(s) - 1, len(self.held)), keep, -1):
                if self.held.endswith(s[:k]):
                    keep = k
                    break
        out, self.held = self.held[:len(self.held) - keep], self.held[len(self.held) - keep:]
        return out, False

    def flush(self) -> str:
        out, self.held = self.held, ""
        return out


def load_backend(spec: ModelSpec | None = None) -> LlamaBackend:
    """A `LlamaBackend` for `spec` (None, or a spec whose path is None: the embedded model)."""
    return LlamaBackend(spec)

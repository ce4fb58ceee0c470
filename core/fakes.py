"""Scripted fakes with the same interfaces as the real components, for fast logic tests.

Fakes live here, in one place (tests, benchmarks and dev tools import them from here). They
stand beside the real-component tests (real SQLite + sqlite-vec, the real embedded GGUF), never
instead of them:
- `FakeBackend`: a `ChatBackend` replaying scripted replies; `router` scripts one backend for
  both agents by the call's schema (fact extraction, manager decision, chat/QA);
- `HashEmbedder`: a deterministic, model-free `Embedder`;
- `write_gguf`: a small real GGUF file (header, metadata, tensors) for the model-file code.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Sequence, Union

import numpy as np

from core.embeddings import DEFAULT_DIM
from core.types import CancelToken, GenParams, Message

Script = Union[str, Callable[[Sequence[Message], Union[dict, None]], str], BaseException]


class FakeBackend:
    """A `ChatBackend` that replays scripted replies.

    responses: consumed in order, one per `complete` call. Each is a string, a callable
    `(messages, schema) -> str`, or an exception instance (raised, to simulate a model
    failure). When they run out, `default` is used the same way.
    The reply is streamed in pieces of `chunk` characters with `delay` seconds between them,
    and stops at the next piece once `cancel` is set. Every call is recorded in `calls`.
    """

    def __init__(self, responses: Sequence[Script] = (), *, default: Script = "",
                 chunk: int = 4, delay: float = 0.0, name: str = "fake",
                 n_ctx: int = 4096) -> None:
        self.name = name
        self.n_ctx = n_ctx
        self._responses = list(responses)
        self.default = default
        self.chunk = max(1, chunk)
        self.delay = delay
        self.calls: list[dict] = []
        self.closed = False
        self._lock = threading.Lock()

    def _next(self) -> Script:
        with self._lock:
            return self._responses.pop(0) if self._responses else self.default

    def complete(self, messages: Sequence[Message], *, params: GenParams = GenParams(),
                 schema: dict | None = None, cancel: CancelToken | None = None) -> Iterator[str]:
        if self.closed:
            raise RuntimeError("backend is closed")
        self.calls.append({"messages": [dict(m) for m in messages], "schema": schema, "params": params})
        script = self._next()
        if isinstance(script, BaseException):
            raise script
        text = script(messages, schema) if callable(script) else str(script)
        if params.max_tokens and params.max_tokens > 0:
            text = " ".join(text.split(" ")[: params.max_tokens * 4]) if len(text) > params.max_tokens * 16 else text
        return self._stream(text, cancel)

    def _stream(self, text: str, cancel: CancelToken | None) -> Iterator[str]:
        for i in range(0, len(text), self.chunk):
            if cancel is not None and cancel.cancelled:
                return
            if self.delay:
                time.sleep(self.delay)
            yield text[i:i + self.chunk]

    def complete_text(self, prompt: str, *, params: GenParams = GenParams(),
                      schema: dict | None = None, cancel: CancelToken | None = None) -> Iterator[str]:
        """`LlamaBackend.complete_text`: the raw prompt is recorded as one user message and
        under `calls[-1]["prompt"]`; scripts see `[{"role": "user", "content": prompt}]`."""
        stream = self.complete([{"role": "user", "content": prompt}], params=params,
                               schema=schema, cancel=cancel)
        self.calls[-1]["prompt"] = prompt
        return stream

    def apply_chat_template(self, messages: Sequence[Message]) -> str:
        """A ChatML rendering, like the embedded model's template (no default system prompt)."""
        parts = [f"<|im_start|>{m['role']}\n{m['content']}<|im_end|>\n" for m in messages]
        return "".join(parts) + "<|im_start|>assistant\n"

    def count_tokens(self, text: str) -> int:
        return max(1, len(text) // 4) if text else 0

    def close(self) -> None:
        self.closed = True


# --------------------------------------------------------------------------- scripts


def is_extraction(messages: Sequence[Message], schema: dict | None) -> bool:
    """True for the Memory Manager's fact-extraction call (its schema has a "facts" list)."""
    return schema is not None and "facts" in schema.get("properties", {})


def decision_inputs(messages: Sequence[Message]) -> tuple[list[dict], list[str]]:
    """(shown memories `{"id", "text"}`, new facts) of a manager decision call, read back from
    its last message (`core.agents.prompts.manager_messages`)."""
    content = messages[-1]["content"]
    shown = json.loads(content.split("Existing memories:\n", 1)[1].split("\nNew facts:", 1)[0])
    facts = json.loads(content.split("New facts:\n", 1)[1])
    return shown, facts


def add_every_fact(messages: Sequence[Message]) -> str:
    """A decision that ADDs every new fact (under the new ids after the shown memories)."""
    shown, facts = decision_inputs(messages)
    return json.dumps({"memory": [{"id": str(len(shown) + i), "text": f, "event": "ADD"}
                                  for i, f in enumerate(facts)]})


Facts = Union[str, Sequence[str], Callable[[str], Sequence[str]]]


def router(reply: str = "", *, facts: Facts = (),
           decide: Callable[[Sequence[Message]], str] | None = None) -> Callable:
    """A script for one backend serving both agents, routed by the call's schema: the fact
    extraction gets `facts` (raw JSON text, a list, or a callable on the call's user message
    returning a list), a decision call `decide(messages)` (default: no ops), a chat or QA call
    (no schema) `reply`.

    >>> script = router("**Answer:** hi", facts=["Ann has a cat."])
    >>> script([], {"properties": {"facts": {}}}), script([], {"properties": {"memory": {}}}), script([], None)
    ('{"facts": ["Ann has a cat."]}', '{"memory": []}', '**Answer:** hi')
    """
    def script(messages, schema):
        if is_extraction(messages, schema):
            found = facts(messages[-1]["content"]) if callable(facts) else facts
            return found if isinstance(found, str) else json.dumps({"facts": list(found)})
        if schema:
            return decide(messages) if decide is not None else json.dumps({"memory": []})
        return reply

    return script


# --------------------------------------------------------------------------- embedder

_TOKEN = re.compile(r"\w+", re.UNICODE)


class HashEmbedder:
    """Bag of hashed words and character trigrams, L2-normalised. Deterministic; no model.

    Similar texts share words, so nearest neighbours are meaningful enough for logic tests.
    Its cosines run lower than a sentence model's, hence its own `related_score`.
    """

    related_score = 0.1
    chat_min_score = -1.0  # no chat floor: hashed cosines are not calibrated

    def __init__(self, dim: int = DEFAULT_DIM, name: str = "hash-embedder") -> None:
        self.dim = dim
        self.name = name

    def _one(self, text: str) -> np.ndarray:
        vec = np.zeros(self.dim, dtype=np.float32)
        words = _TOKEN.findall(text.lower())
        feats = words + [w[i:i + 3] for w in words for i in range(max(1, len(w) - 2))]
        for feat in feats:
            h = int.from_bytes(hashlib.blake2b(feat.encode(), digest_size=8).digest(), "little")
            vec[h % self.dim] += 1.0 if (h >> 32) & 1 else -1.0
        norm = float(np.linalg.norm(vec))
        if norm == 0.0:
            vec[0] = 1.0
            return vec
        return vec / norm

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        return np.stack([self._one(t) for t in texts]).astype(np.float32)


# --------------------------------------------------------------------------- GGUF files


def write_gguf(path, tensors: Mapping[str, np.ndarray] | None = None, *, arch: str = "llama",
               name: str | None = None, context_length: int | None = None, block_count: int | None = None,
               embedding_length: int | None = None, head_count: int | None = None,
               head_count_kv: int | None = None, file_type: int | None = None,
               chat_template: str | None = None, general_type: str | None = None,
               lora: bool = False, lora_alpha: float | None = None) -> Path:
    """A small real GGUF file at `path` (the `gguf` package's writer): the given metadata, then
    `tensors` (name -> array). `lora=True` marks it a LoRA adapter (general.type "adapter",
    adapter.type "lora", and adapter.lora.alpha when `lora_alpha` is given). Returns `path`."""
    import gguf

    writer = gguf.GGUFWriter(str(path), arch)
    kind = "adapter" if lora else general_type
    if kind:
        writer.add_type(kind)
    if lora:
        writer.add_string("adapter.type", "lora")
        if lora_alpha is not None:
            writer.add_float32("adapter.lora.alpha", lora_alpha)
    fields: tuple[tuple[Callable[[Any], None], object], ...] = (
        (writer.add_name, name), (writer.add_context_length, context_length),
        (writer.add_block_count, block_count), (writer.add_embedding_length, embedding_length),
        (writer.add_head_count, head_count), (writer.add_head_count_kv, head_count_kv),
        (writer.add_file_type, file_type), (writer.add_chat_template, chat_template))
    for add, value in fields:
        if value is not None:
            add(value)
    for tensor_name, array in (tensors or {}).items():
        writer.add_tensor(tensor_name, array)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return Path(path)

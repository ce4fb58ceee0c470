"""Scripted fakes with the same interfaces as the real components, for fast logic tests.

Fakes live here, in one place. They stand beside the real-component tests (real SQLite +
sqlite-vec, the real embedded GGUF), never instead of them.
"""

from __future__ import annotations

import threading
import time
from typing import Callable, Iterator, Sequence, Union

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

    def push(self, *responses: Script) -> None:
        with self._lock:
            self._responses.extend(responses)

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

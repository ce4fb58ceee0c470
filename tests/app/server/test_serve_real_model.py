"""`serve` with the real embedded model (SmolLM2-135M) and the real embedder: a streamed
completion through the `openai` client answers, and the manager runs after it."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

openai = pytest.importorskip("openai")


def test_streamed_completion_with_the_embedded_model(make_bank, real_embedder):
    from core.config import Settings

    from app.server.http_server import LocalServer

    bank = make_bank(embedder=real_embedder)
    bank.add("User has a cat named Tom.", speaker="User")
    server = LocalServer(bank, settings=Settings(), api_key="k")
    server.start()
    try:
        client = openai.OpenAI(base_url=server.url, api_key="k", max_retries=0, timeout=600)
        stream = client.chat.completions.create(model="memory-r1", stream=True,
                                                messages=[{"role": "user", "content": "What is my cat called?"}])
        chunks = list(stream)
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert text.strip()
        assert chunks[-1].choices[0].finish_reason == "stop"
        assert server.app.state.sessions.assistant().wait_idle(600)
    finally:
        server.stop()

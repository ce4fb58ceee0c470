"""Prefill while typing with the real embedded SmolLM2-135M: once a draft is prefilled, the reply
to the same message evaluates (almost) no prompt token; without it the whole new turn is."""

from __future__ import annotations

import json

import pytest

from core.assistant.pipeline import Assistant
from core.config import ModelSpec, Settings
from core.fakes import FakeBackend, HashEmbedder, router
from core.llm.runtime import load_backend
from core.memory import MemoryBank

pytestmark = pytest.mark.slow


def _prompt_evaluated(backend) -> int:
    import llama_cpp

    return llama_cpp.llama_perf_context(backend.raw_llama.ctx).n_p_eval


def test_a_prefilled_message_evaluates_no_prompt_tokens_at_send(tmp_path):
    backend = load_backend(ModelSpec(n_threads=1))
    bank = MemoryBank(tmp_path / "bank.sqlite3", HashEmbedder())
    manager = FakeBackend(default=router("", facts=json.dumps({"facts": []})))
    a = Assistant(bank, backend, manager, settings=Settings(max_tokens=4, temperature=0.0), user_name="Ann")
    try:
        for text in ["Ann has a dog called Rex.", "Ann lives in Lisbon.", "Ann paints lakes at sunrise."]:
            bank.add(text, speaker="Ann")
        cid = bank.chats.create_conversation("t").id
        a.reply(cid, "Hello there!")
        a.wait_idle(30)

        before = _prompt_evaluated(backend)
        a.reply(cid, "Tell me about my dog and where I live.")  # not prefilled
        cold = _prompt_evaluated(backend) - before

        a.prefill(cid, "What do I paint in the mornings?")
        assert a.wait_prefilled(60)
        before = _prompt_evaluated(backend)
        reply = a.reply(cid, "What do I paint in the mornings?")
        warm = _prompt_evaluated(backend) - before
        assert cold > 20 and warm <= 2, (cold, warm)
        assert reply.message_id  # stored as usual
    finally:
        a.close()
        bank.close()
        backend.close()

"""Integration with the real embedded SmolLM2-135M GGUF and the real all-MiniLM-L6-v2.

Ingest a short conversation about a pet and a city through `memory-r1 ingest`, then
`memory-r1 ask --json`. Assertions are on structure and on the bank (what the tiny model
wrote varies), never on its exact wording.
"""

from __future__ import annotations

import json

import pytest

pytestmark = pytest.mark.slow

TURNS = [
    {"speaker": "Maya", "text": "I adopted a dog named Biscuit. Biscuit is a golden retriever.",
     "time": "10:00 am on 5 June, 2023"},
    {"speaker": "Leo", "text": "That's great! I live in Lisbon now, I moved there for work.",
     "time": "10:02 am on 5 June, 2023"},
    {"speaker": "Maya", "text": "My dog Biscuit loves the beach.", "time": "10:05 am on 5 June, 2023"},
]
WORDS = ("dog", "biscuit", "retriever", "pet", "lisbon")


@pytest.fixture(scope="module")
def embedded_model_available():
    pytest.importorskip("llama_cpp")
    from core.paths import embedded_gguf

    return embedded_gguf()


def test_ingest_then_ask_with_the_embedded_model(embedded_model_available, tmp_path, capsys):
    from app.cli import main
    from core.memory import MemoryBank

    f = tmp_path / "pets.jsonl"
    f.write_text("\n".join(json.dumps(t) for t in TURNS) + "\n", encoding="utf-8")
    assert main(["ingest", str(f), "--json", "--n-ctx", "2048"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["turns"] == 3 and summary["processed"] == 3

    with MemoryBank.open() as bank:
        memories = bank.list()
        events = bank.history(limit=1000)
        assert memories, "the manager stored nothing from three fact-rich turns"
        assert any(w in m.text.lower() for m in memories for w in WORDS), [m.text for m in memories]
        assert {m.speaker for m in memories} <= {"Maya", "Leo"}
        assert all(m.observed_at and m.observed_at.endswith("June, 2023") for m in memories)
        adds = [e for e in events if e.event == "ADD"]
        assert adds and all(e.actor == "manager" for e in adds)
        assert {e.turn for e in adds} <= {f"pets.jsonl:{i}" for i in (1, 2, 3)}
        assert summary["added"] == len(adds)
        ids = {m.id for m in bank.list(status=None)}

    assert main(["ask", "What is the name of Maya's dog?", "--json", "--n-ctx", "2048"]) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert set(out) == {"answer", "selected", "retrieved"}
    assert isinstance(out["answer"], str)
    assert out["retrieved"] and set(out["retrieved"]) <= ids
    assert all(isinstance(i, int) for i in out["selected"]) and set(out["selected"]) <= set(out["retrieved"])


def test_chat_reply_with_the_embedded_model(embedded_model_available):
    from core.config import ModelSpec, Settings
    from core.embeddings import default_embedder
    from core.memory import MemoryBank
    from core.assistant.pipeline import Assistant
    from core.llm.runtime import load_backend

    backend = load_backend(ModelSpec(n_ctx=2048))
    bank = MemoryBank.open(embedder=default_embedder())
    try:
        bank.add("Maya has a dog named Biscuit", speaker="Maya", observed_at="10:00 am on 5 June, 2023")
        assistant = Assistant(bank, backend, settings=Settings(max_tokens=48), user_name="Maya")
        errors: list = []
        assistant.add_error_listener(errors.append)
        cid = bank.chats.create_conversation("t").id
        pieces: list[str] = []
        reply = assistant.reply(cid, "What is my dog called?", on_token=pieces.append)
        assert reply.text.strip() and "".join(pieces).strip() == reply.text
        assert [m.text for m in reply.retrieved] == ["Maya has a dog named Biscuit"]
        stored = bank.chats.get_message(reply.message_id)
        assert stored.content == reply.text and stored.meta["retrieved"] == [reply.retrieved[0].id]
        assert assistant.wait_idle(600)
        assistant.close()
        assert not errors or all(type(e).__name__ == "ModelOutputError" for e in errors)
    finally:
        bank.close()
        backend.close()

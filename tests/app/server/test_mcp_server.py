"""`memory-r1 mcp` (app/server/mcp_server.py) through a real MCP client session: in process (the
SDK's in-memory connection) over a real bank with scripted models, and `python -m app mcp` as a
stdio subprocess on the real embedder."""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import anyio
import pytest

from core.fakes import FakeBackend, add_every_fact, router
from core.llm.modelset import ModelSet

mcp = pytest.importorskip("mcp")

ROOT = Path(__file__).resolve().parents[3]
ANSWER = "**Memories selected as relevant:**\n- User has a cat named Tom.\n**Answer:** Your cat is Tom."


class CountingModels:
    """A lazy ModelSet whose factories count how often a model was loaded."""

    def __init__(self, answer: FakeBackend, manager: FakeBackend) -> None:
        self.loads: list[str] = []
        self.answer, self.manager = answer, manager
        self.models = ModelSet.lazy(answer=lambda: self._load("answer"), manager=lambda: self._load("manager"))

    def _load(self, role: str):
        self.loads.append(role)
        return getattr(self, role)


@pytest.fixture
def models():
    facts = lambda text: ["User has a dog named Rex."] if "dog" in text else []  # noqa: E731
    manager = FakeBackend(default=router(facts=facts, decide=add_every_fact))
    return CountingModels(FakeBackend(default=router(ANSWER)), manager)


def call(server, steps):
    """Run `steps(client)` (an async function) in one MCP client session; returns its result."""
    from mcp import Client

    async def main():
        async with Client(server) as client:
            return await steps(client)

    return anyio.run(main)


def result(res) -> dict:
    assert not res.is_error, res.content
    assert json.loads(res.content[0].text) == res.structured_content
    return res.structured_content


@pytest.fixture
def server(bank, models, tmp_path):
    from app.server.mcp_server import build_server
    from app.server.service import MemoryService

    return build_server(MemoryService(bank, models.models, export_dir=tmp_path / "exports"))


def test_tools_are_listed_with_documented_typed_parameters(server):
    async def steps(client):
        return (await client.list_tools()).tools

    tools = {t.name: t for t in call(server, steps)}
    assert set(tools) == {"search_memories", "remember", "add_memory", "update_memory", "forget_memory",
                          "list_memories", "answer", "export_memories"}
    search = tools["search_memories"].input_schema
    assert search["required"] == ["query"]
    assert search["properties"]["k"]["type"] == "integer" and search["properties"]["k"]["default"] == 10
    assert all(p.get("description") for t in tools.values() for p in t.input_schema["properties"].values())
    assert all(t.description for t in tools.values())


def test_add_search_update_forget_list_with_actor_tool_and_undo(server, bank, models):
    async def steps(client):
        added = result(await client.call_tool("add_memory", {"text": "User has a cat named Tom."}))
        mid = added["added"][0]["id"]
        found = result(await client.call_tool("search_memories", {"query": "cat Tom", "k": 5}))
        updated = result(await client.call_tool("update_memory", {"id": mid, "text": "User has a cat named Tim."}))
        listed = result(await client.call_tool("list_memories", {}))
        gone = result(await client.call_tool("forget_memory", {"id": mid}))
        after = result(await client.call_tool("list_memories", {"limit": 10}))
        return mid, found, updated, listed, gone, after

    mid, found, updated, listed, gone, after = call(server, steps)
    assert found["memories"][0]["id"] == mid and "score" in found["memories"][0]
    assert updated["updated"][0]["text"] == "User has a cat named Tim."
    assert [m["id"] for m in listed["memories"]] == [mid]
    assert gone["deleted"][0]["id"] == mid and after["memories"] == []
    assert models.loads == []  # search/list/add/update/forget need no model
    events = bank.history(mid)
    assert [e.event for e in events] == ["DELETE", "EDIT", "ADD"]
    assert {e.actor for e in events} == {"tool"} and {e.turn for e in events} == {"tool:mcp"}
    bank.undo()  # the soft delete is undoable
    assert bank.get(mid).status == "active"


def test_remember_runs_the_manager_and_answer_uses_memories(server, bank, models):
    bank.add("User has a cat named Tom.", speaker="User")

    async def steps(client):
        remembered = result(await client.call_tool("remember", {"text": "I got a dog, his name is Rex."}))
        again = result(await client.call_tool("remember", {"text": "My dog is called Rex."}))
        answered = result(await client.call_tool("answer", {"question": "What is my cat called?"}))
        return remembered, again, answered

    remembered, again, answered = call(server, steps)
    assert [m["text"] for m in remembered["added"]] == ["User has a dog named Rex."]
    assert again["added"] == [] and again["unchanged"] == 1  # the chat's dedupe path
    mid = remembered["added"][0]["id"]
    assert bank.history(mid)[0].actor == "tool"
    assert answered["answer"] == "Your cat is Tom."
    assert [m["text"] for m in answered["memories"]] == ["User has a cat named Tom."]
    assert models.loads == ["manager", "answer"]  # each loaded once, on first use


def test_answer_without_memories_loads_no_model(server, models):
    async def steps(client):
        return result(await client.call_tool("answer", {"question": "Who am I?"}))

    assert call(server, steps)["memories"] == []
    assert models.loads == []


def test_export(server, bank):
    bank.add("Ann likes tea.")

    async def steps(client):
        return result(await client.call_tool("export_memories", {}))

    out = call(server, steps)
    lines = Path(out["path"]).read_text(encoding="utf-8").splitlines()
    assert out["count"] == 1 and json.loads(lines[1])["text"] == "Ann likes tea."


def test_errors_are_tool_errors_and_change_nothing(server, bank):
    bank.add("Ann likes tea.")
    before = ([(m.id, m.text, m.status) for m in bank.list(status=None)], len(bank.history()))

    async def steps(client):
        return [await client.call_tool(name, args) for name, args in (
            ("forget_memory", {"id": 999}), ("update_memory", {"id": 999, "text": "x"}),
            ("add_memory", {"text": "   "}), ("search_memories", {"query": ""}),
            ("search_memories", {"query": "tea", "k": 0}), ("forget_memory", {"id": "abc"}))]

    outs = call(server, steps)
    assert all(r.is_error for r in outs)
    assert "There is no memory #999." in outs[0].content[0].text
    assert ([(m.id, m.text, m.status) for m in bank.list(status=None)], len(bank.history())) == before


def test_stdio_subprocess_with_the_real_embedder(data_home):
    """`python -m app mcp` over stdin/stdout, on the app's data folder, the real MiniLM."""
    from mcp import Client, StdioServerParameters

    env = {**os.environ, "MEMORY_R1_HOME": str(data_home), "PYTHONPATH": str(ROOT), "HF_HUB_OFFLINE": "1",
           "TRANSFORMERS_OFFLINE": "1"}
    params = StdioServerParameters(command=sys.executable, args=["-m", "app", "mcp"], env=env, cwd=str(ROOT))

    async def main():
        async with Client(params, read_timeout_seconds=120) as client:
            added = result(await client.call_tool("add_memory", {"text": "Ann is allergic to peanuts."}))
            result(await client.call_tool("add_memory", {"text": "Ann plays the violin."}))
            found = result(await client.call_tool("search_memories", {"query": "food allergy", "k": 1}))
            listed = result(await client.call_tool("list_memories", {}))
            return added, found, listed

    added, found, listed = anyio.run(main)
    assert found["memories"][0]["id"] == added["added"][0]["id"]
    assert len(listed["memories"]) == 2
    # the same bank the app opens
    from core.memory import MemoryBank
    from core.fakes import HashEmbedder

    with MemoryBank(data_home / "memory.sqlite3", HashEmbedder()) as bank:
        assert {e.actor for e in bank.history()} == {"tool"}

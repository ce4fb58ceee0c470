"""The chat prompt the pipeline builds: the memory token budget (best first, id order, never
over), earlier turns rendered byte-identically (turn N's prompt + reply is a prefix of turn
N+1's, so llama.cpp reuses their KV) and truthful "memories used"."""

from __future__ import annotations

import json
import re
import time

import pytest

from core.config import Settings
from core.errors import InvalidInputError
from core.fakes import FakeBackend, router

NO_FACTS = json.dumps({"facts": []})


def chat_calls(backend):
    """The reply calls (not the manager's, not the one-token prompt warm-ups)."""
    return [c for c in backend.calls if not c["schema"] and c["params"].max_tokens != 1]


def warm_calls(backend):
    return [c for c in backend.calls if not c["schema"] and c["params"].max_tokens == 1]


def block_lines(content: str) -> list[str]:
    return [ln[2:] for ln in content.splitlines() if ln.startswith("- ") and not ln.startswith("- (")]


@pytest.fixture
def assistant(make_assistant):
    return lambda backend, **settings: make_assistant(backend, settings=Settings(**settings))


def test_budget_is_never_exceeded_best_first_and_in_id_order(bank, assistant):
    for i in range(30):
        bank.add(f"Ann's garden note {i}: tomatoes and basil grow " + "well " * (i % 5), speaker="Ann",
                 observed_at="1 May, 2023")
    backend = FakeBackend(default=router("Nice garden!", facts=NO_FACTS))
    a = assistant(backend, chat_memory_tokens=60)
    cid = bank.chats.create_conversation("t").id
    reply = a.reply(cid, "How are my tomatoes and basil?")
    content = chat_calls(backend)[-1]["messages"][-1]["content"]
    lines = block_lines(content)
    assert lines and sum(backend.count_tokens(f"- {ln}\n") for ln in lines) <= 60
    by_line = {m.prompt_line(): m for m in bank.list()}
    shown = [by_line[ln] for ln in lines]
    assert [m.id for m in shown] == sorted(m.id for m in shown)  # stable: id order
    ranked = [m.id for m in reply.retrieved]  # best first
    assert set(m.id for m in shown) == set(ranked[:len(shown)]) or all(
        ranked.index(m.id) < len(ranked) for m in shown)
    assert {m.id for m in shown} <= set(ranked)
    # the best-ranked memory that fits is always in
    assert ranked[0] in {m.id for m in shown}
    meta = bank.chats.messages(cid)[-1].meta
    assert meta["shown"] == [m.id for m in shown] and meta["now"]


def test_zero_budget_shows_no_memory_and_the_setting_is_validated(bank, assistant):
    bank.add("Ann has a cat named Tom", speaker="Ann")
    backend = FakeBackend(default=router("Hi!", facts=NO_FACTS))
    a = assistant(backend, chat_memory_tokens=0)
    a.reply(bank.chats.create_conversation("t").id, "my cat?")
    assert "Tom" not in chat_calls(backend)[-1]["messages"][-1]["content"]
    for bad in (-1, 4001, 1.5, True, "300"):
        with pytest.raises(InvalidInputError):
            Settings(chat_memory_tokens=bad).validate()
    assert Settings.from_dict({"chat_memory_tokens": -5}).chat_memory_tokens == Settings().chat_memory_tokens


def test_each_turn_prompt_starts_with_the_previous_prompt_and_reply(bank, assistant):
    for i, text in enumerate(["Ann has a cat named Tom", "Ann lives in Oslo", "Ann likes green tea",
                              "Ann's sister is Eva", "Ann plays the violin"]):
        bank.add(text, speaker="Ann", observed_at=f"{i + 1} May, 2023")
    replies = iter(["Tom is lovely!", "Oslo is nice.", "Green tea, yes.", "Eva!", "Violin, cool.", "Ok."])
    manager = router("", facts=NO_FACTS)
    backend = FakeBackend(default=lambda m, s: manager(m, s) if s else next(replies))
    a = assistant(backend, chat_memory_tokens=40)
    cid = bank.chats.create_conversation("t").id
    for q in ["Tell me about my cat", "Where do I live?", "What do I drink?", "Who is my sister?"]:
        a.reply(cid, q)
    calls = chat_calls(backend)
    rendered = [backend.apply_chat_template(c["messages"]) for c in calls]
    for (prev, reply), nxt in zip(zip(rendered, [m.content for m in bank.chats.messages(cid)
                                                  if m.role == "assistant"]), rendered[1:]):
        assert nxt.startswith(prev + reply)
    # a memory already shown in the history window is not repeated
    all_lines = [ln for c in calls for ln in block_lines(c["messages"][-1]["content"])]
    assert len(all_lines) == len(set(all_lines))


def test_history_window_moves_in_steps(bank, assistant):
    backend = FakeBackend(default=router("ok", facts=NO_FACTS))
    a = assistant(backend)
    cid = bank.chats.create_conversation("t").id
    firsts = []
    for i in range(9):
        a.reply(cid, f"message {i}")
        firsts.append(chat_calls(backend)[-1]["messages"][1]["content"] if i else None)
    # the first history message changes only every second turn (a step of 4 messages)
    changes = sum(1 for x, y in zip(firsts[1:], firsts[2:]) if x != y)
    assert 0 < changes <= 3 and all(len(c["messages"]) <= 12 for c in chat_calls(backend))


def test_memories_used_are_the_ones_the_reply_draws_on(bank, assistant):
    cat = bank.add("Ann has a cat named Tom", speaker="Ann").memory
    bank.add("Ann lives in Oslo", speaker="Ann")
    backend = FakeBackend([router("Your cat is called Tom!", facts=NO_FACTS),
                           router("I can't recall that.", facts=NO_FACTS)],
                          default=router("ok", facts=NO_FACTS))
    a = assistant(backend)
    cid = bank.chats.create_conversation("t").id
    first = a.reply(cid, "What is my cat's name?")
    assert [m.id for m in first.selected] == [cat.id]
    assert bank.chats.messages(cid)[-1].meta["selected"] == [cat.id]
    second = a.reply(cid, "What is my cat's favourite toy?")
    assert second.selected == []
    assert not re.search(r"memor|answer", second.text, re.I)


def test_a_moved_window_is_warmed_up_for_the_next_turn(bank, assistant):
    backend = FakeBackend(default=router("ok", facts=NO_FACTS))
    a = assistant(backend)
    cid = bank.chats.create_conversation("t").id
    for i in range(6):
        a.reply(cid, f"message {i}")
        if i < 5:
            assert warm_calls(backend) == []  # the window has not moved yet: prompt + reply is the prefix
    deadline = time.time() + 5
    while not warm_calls(backend) and time.time() < deadline:
        time.sleep(0.01)
    warm = warm_calls(backend)[0]["messages"]
    assert len(warm_calls(backend)) == 1
    a.reply(cid, "message 6")
    nxt = chat_calls(backend)[-1]["messages"]
    assert warm == nxt[:-1]  # the next prompt is the warmed-up one plus its own turn


# --- prefill while typing ------------------------------------------------------------------
@pytest.fixture
def fixed_clock(monkeypatch):
    """The pipeline's clock stands still (a prefill and its reply may straddle a minute)."""
    from datetime import datetime

    import core.assistant.pipeline as pipeline

    class Clock(datetime):
        @classmethod
        def now(cls, tz=None):
            return datetime(2026, 12, 1, 10, 30)

    monkeypatch.setattr(pipeline, "datetime", Clock)


def _chat_with_memories(bank, assistant, **settings):
    for i, text in enumerate(["Ann has a cat named Tom", "Ann lives in Oslo", "Ann likes green tea"]):
        bank.add(text, speaker="Ann", observed_at=f"{i + 1} May, 2023")
    backend = FakeBackend(default=router("Sure.", facts=NO_FACTS))
    a = assistant(backend, **settings)
    cid = bank.chats.create_conversation("t").id
    a.reply(cid, "Tell me about my cat")
    return backend, a, cid


def test_prefill_evaluates_exactly_the_prompt_the_reply_then_sends_and_stores_nothing(bank, assistant, fixed_clock):
    backend, a, cid = _chat_with_memories(bank, assistant)
    bank.add("Ann plays the violin", speaker="Ann")  # not shown yet
    messages, memories = len(bank.chats.messages(cid)), bank.count()
    a.prefill(cid, "Do I play the violin?")
    assert a.wait_prefilled(5)
    warm = warm_calls(backend)
    assert len(warm) == 1
    assert "Ann plays the violin" in warm[0]["messages"][-1]["content"]  # the draft's memories
    assert (len(bank.chats.messages(cid)), bank.count()) == (messages, memories)  # nothing stored
    a.reply(cid, "Do I play the violin?")
    assert chat_calls(backend)[-1]["messages"] == warm[0]["messages"]  # so only a token is new


def test_prefill_of_a_new_chat_and_of_a_temporary_one(bank, assistant, fixed_clock):
    bank.add("Ann has a cat named Tom", speaker="Ann")
    backend = FakeBackend(default=router("Sure.", facts=NO_FACTS))
    a = assistant(backend, system_prompt="Answer briefly.")
    a.prefill(None, "Tell me about my cat")  # the GUI creates the chat when the message is sent
    a.wait_prefilled(5)
    a.reply(bank.chats.create_conversation("t").id, "Tell me about my cat")
    assert warm_calls(backend)[-1]["messages"] == chat_calls(backend)[-1]["messages"]
    assert "Answer briefly." in chat_calls(backend)[-1]["messages"][0]["content"]
    a.prefill(None, "Tell me about my cat", temporary=True)
    a.wait_prefilled(5)
    a.reply(bank.chats.create_conversation("tmp", temporary=True).id, "Tell me about my cat", temporary=True)
    warm = warm_calls(backend)[-1]["messages"]
    assert warm == chat_calls(backend)[-1]["messages"] and "Tom" not in warm[-1]["content"]


def test_no_prefill_when_off_for_commands_forget_requests_and_blank_drafts(bank, assistant):
    backend, a, cid = _chat_with_memories(bank, assistant)
    for draft in ["remember that I like jazz", "please forget what I said about my cat", "   ", ""]:
        a.prefill(cid, draft)
        assert a.wait_prefilled(5)
    assert warm_calls(backend) == []
    backend_off, off, cid_off = _chat_with_memories(bank, assistant, prefill_while_typing=False)
    off.prefill(cid_off, "Where do I live?")
    assert off.wait_prefilled(5) and warm_calls(backend_off) == []


def test_a_newer_draft_replaces_a_waiting_one_and_a_reply_drops_it(bank, assistant):
    import threading

    gate = threading.Event()
    manager = router("", facts=NO_FACTS)

    def script(messages, schema):
        if schema:
            return manager(messages, schema)
        if "draft one" in messages[-1]["content"]:
            gate.wait(10)  # the model is busy with the first draft
        return "ok"

    backend = FakeBackend(default=script)
    a = assistant(backend)
    cid = bank.chats.create_conversation("t").id
    a.prefill(cid, "draft one")
    deadline = time.time() + 5
    while not warm_calls(backend) and time.time() < deadline:
        time.sleep(0.01)
    a.prefill(cid, "draft two")
    a.prefill(cid, "draft three")  # replaces "draft two", which never started
    sent = threading.Thread(target=a.reply, args=(cid, "the message"))
    sent.start()  # drops "draft three" and cancels "draft one"
    deadline = time.time() + 5
    while a._replying == 0 and time.time() < deadline:
        time.sleep(0.01)
    gate.set()
    sent.join(10)
    assert a.wait_prefilled(5)
    drafts = [c["messages"][-1]["content"].rsplit("Ann: ", 1)[1] for c in warm_calls(backend)]
    assert drafts == ["draft one"]
    assert chat_calls(backend)[-1]["messages"][-1]["content"].endswith("Ann: the message")

"""The chat pipeline (`core.assistant.pipeline.Assistant`) with FakeBackends over a real bank: storage
of messages, streaming, cancel, the background manager queue, pre-emption, temporary chats,
paused memory, explicit remember/forget commands, regenerate, errors and closing."""

from __future__ import annotations

import json
import logging
import threading
import time

import pytest

from core.config import Settings
from core.errors import InvalidInputError, ModelOutputError, NotFoundError
from core.fakes import FakeBackend, HashEmbedder, is_extraction, router as route
from core.memory import MemoryBank
from core.assistant.commands import parse_command, third_person
from core.assistant.pipeline import Assistant
from core.types import CancelToken

FACTS_CAT = json.dumps({"facts": ["Ann has a cat named Tom."]})


def router(reply: str = "**Answer:** Nice!", facts: str = FACTS_CAT):
    """A script for one shared backend: JSON for the manager, `reply` for chat."""
    return route(reply, facts=facts)


@pytest.fixture
def make(make_assistant):
    return lambda answer=None, manager=None, **kw: make_assistant(answer or FakeBackend(default=router()),
                                                                  manager, **kw)


def conv(bank, temporary=False):
    return bank.chats.create_conversation("t", temporary=temporary).id


def test_reply_streams_stores_both_messages_and_the_manager_learns(bank, make):
    backend = FakeBackend(default=router("**Memories selected as relevant:**\n- none\n**Answer:** Hello Ann!"), chunk=3)
    assistant = make(backend)
    seen: list = []
    assistant.add_memory_listener(lambda changes, turn: seen.append((changes, turn)))
    cid = conv(bank)
    pieces: list[str] = []
    reply = assistant.reply(cid, "I have a cat called Tom.", on_token=pieces.append)
    assert reply.text == "Hello Ann!" == "".join(pieces) and not reply.cancelled and reply.changes is None
    msgs = bank.chats.messages(cid)
    assert [(m.role, m.content) for m in msgs] == [("user", "I have a cat called Tom."), ("assistant", "Hello Ann!")]
    assert msgs[1].id == reply.message_id and msgs[0].id == reply.user_message_id
    assert msgs[1].meta["selected"] == [] and msgs[1].meta["retrieved"] == [] and msgs[1].meta["cancelled"] is False
    assert assistant.wait_idle(10)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    mem = bank.list()[0]
    assert mem.speaker == "Ann" and mem.source == f"chat:{cid}/{reply.user_message_id}" and mem.observed_at
    assert len(seen) == 1 and seen[0][1] == f"chat:{cid}/{reply.user_message_id}"
    assert [m.text for m in seen[0][0].added] == ["Ann has a cat named Tom."]
    # the manager saw only the user's words, never the reply or the system prompt
    extraction = [c for c in backend.calls if is_extraction(c["messages"], c["schema"])]
    assert len(extraction) == 1 and "Hello Ann!" not in json.dumps(extraction[0]["messages"])
    # the next question sees the updated bank
    nxt = assistant.reply(cid, "What is my cat called?")
    assert [m.id for m in nxt.retrieved] == [mem.id]
    chat_call = [c for c in backend.calls if not c["schema"]][-1]
    assert "Ann has a cat named Tom." in chat_call["messages"][-1]["content"]
    user_turn, reply_turn = [m["content"] for m in chat_call["messages"][1:3]]
    assert user_turn.endswith("\nAnn: I have a cat called Tom.") and reply_turn == "Hello Ann!"


def test_selected_memories_are_reported_and_stored(bank, make):
    mem = bank.add("Ann has a cat named Tom.", speaker="Ann", observed_at="1 May, 2023").memory
    reply_text = "**Memories selected as relevant:**\n- 1 May, 2023: Ann has a cat named Tom.\n**Answer:** Tom!"
    assistant = make(FakeBackend(default=router(reply_text, facts='{"facts": []}')))
    cid = conv(bank)
    reply = assistant.reply(cid, "cat name?")
    assert [m.id for m in reply.selected] == [mem.id] and reply.text == "Tom!"
    assert bank.chats.get_message(reply.message_id).meta["selected"] == [mem.id]


def test_the_manager_never_delays_a_reply(bank, make):
    release = threading.Event()
    entered = threading.Event()

    def slow_extraction(messages, schema):
        entered.set()
        release.wait(10)
        return FACTS_CAT

    manager = FakeBackend([slow_extraction], default='{"facts": []}')
    assistant = make(FakeBackend(default="**Answer:** ok"), manager)
    cid = conv(bank)
    assistant.reply(cid, "I have a cat named Tom.")
    assert entered.wait(5)  # the manager is now stuck inside turn 1
    start = time.perf_counter()
    reply = assistant.reply(cid, "second")
    assert reply.text == "ok" and time.perf_counter() - start < 2.0
    assert not assistant.wait_idle(0.05)
    release.set()
    assert assistant.wait_idle(10)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]


def test_a_shared_model_is_preempted_by_a_reply_and_the_turn_redone(bank, make):
    started = threading.Event()
    state = {"calls": 0}

    def script(messages, schema):
        if is_extraction(messages, schema):
            state["calls"] += 1
            started.set()
            return '{"facts": ["Ann has a cat named Tom."]}' + " " * 3000  # streams for ~3 s
        return "**Answer:** quick"

    backend = FakeBackend(default=script, chunk=4, delay=0.004)
    assistant = make(backend)
    cid = conv(bank)
    assistant.reply(cid, "I have a cat named Tom")
    assert started.wait(5)
    start = time.perf_counter()
    reply = assistant.reply(cid, "hi again")
    assert reply.text == "quick" and time.perf_counter() - start < 1.5  # not after the ~3 s turn
    assert assistant.wait_idle(30)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    assert state["calls"] >= 3  # turn 1 cut short and redone, then turn 2


def test_cancel_keeps_the_partial_reply(bank, make):
    assistant = make(FakeBackend(default=router("**Answer:** one two three four five six"), chunk=2))
    cid = conv(bank)
    token = CancelToken()
    pieces: list[str] = []

    def on_token(t):
        pieces.append(t)
        if len(pieces) == 3:
            token.cancel()

    reply = assistant.reply(cid, "count for me", on_token=on_token, cancel=token)
    assert reply.cancelled and reply.text == "".join(pieces).strip() and reply.text.startswith("one")
    stored = bank.chats.get_message(reply.message_id)
    assert stored.content == reply.text and stored.meta["cancelled"] is True


def test_temporary_chat_neither_reads_nor_writes_memory(bank, make):
    bank.add("Ann has a cat named Tom.", speaker="Ann")
    backend = FakeBackend(default=router())
    assistant = make(backend)
    cid = conv(bank, temporary=True)
    reply = assistant.reply(cid, "I also have a dog named Rex", temporary=True)
    assert reply.retrieved == []
    assert assistant.wait_idle(5)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    assert not any(c["schema"] for c in backend.calls)
    assert "Tom" not in json.dumps(backend.calls[-1]["messages"])
    remember = assistant.reply(cid, "remember that I like jazz", temporary=True)
    assert remember.changes is None and len(bank.list()) == 1
    # regenerate in a temporary chat stays temporary
    again = assistant.regenerate(cid)
    assert again.retrieved == []


def test_paused_memory_reads_but_does_not_write(bank, make):
    mem = bank.add("Ann has a cat named Tom.", speaker="Ann").memory
    backend = FakeBackend(default=router())
    assistant = make(backend, settings=Settings(memory_paused=True))
    cid = conv(bank)
    reply = assistant.reply(cid, "I got a new dog")
    assert [m.id for m in reply.retrieved] == [mem.id]
    assert assistant.wait_idle(5) and len(bank.list()) == 1
    assert not any(c["schema"] for c in backend.calls)
    assert assistant.reply(cid, "remember that I like jazz").changes is None and len(bank.list()) == 1


def test_remember_command_writes_directly_without_a_model(bank, make):
    backend = FakeBackend(default=router())
    assistant = make(backend)
    cid = conv(bank)
    reply = assistant.reply(cid, "Remember that my sister lives in Lisbon.")
    assert [m.text for m in reply.changes.added] == ["Ann's sister lives in Lisbon"]
    assert "Ann's sister lives in Lisbon" in reply.text and backend.calls == []
    mem = bank.list()[0]
    assert mem.speaker == "Ann" and bank.history(mem.id)[0].actor == "user"
    assert assistant.wait_idle(5) and backend.calls == []  # not given to the manager
    dup = assistant.reply(cid, "remember that my sister lives in Lisbon")
    assert not dup.changes and "already" in dup.text and len(bank.list()) == 1
    assert bank.chats.get_message(reply.message_id).meta["changes"]["added"] == [mem.id]


def test_forget_command_soft_deletes_the_matching_memory(bank, make):
    keep = bank.add("Ann plays the violin", speaker="Ann").memory
    gone = bank.add("Ann's old job was at the bakery", speaker="Ann").memory
    assistant = make(FakeBackend(default=router()))
    cid = conv(bank)
    reply = assistant.reply(cid, "forget about my old job at the bakery")
    assert [m.id for m in reply.changes.deleted] == [gone.id]
    assert bank.get(gone.id).status == "deleted" and bank.get(keep.id).status == "active"
    assert "bakery" in reply.text
    none = assistant.reply(cid, "forget my passport number")
    assert not none.changes and "found nothing about" in none.text
    bank.undo()
    assert bank.get(gone.id).status == "active"


def test_regenerate_replaces_the_last_reply_and_does_not_requeue(bank, make):
    answers = iter(["**Answer:** first", "**Answer:** second"])
    backend = FakeBackend(default=lambda m, s: router(facts='{"facts": []}')(m, s) if s else next(answers))
    assistant = make(backend)
    cid = conv(bank)
    first = assistant.reply(cid, "hello")
    assert assistant.wait_idle(5)
    n_manager = sum(1 for c in backend.calls if c["schema"])
    second = assistant.regenerate(cid)
    assert second.text == "second" and second.message_id == first.message_id
    assert second.user_message_id == first.user_message_id
    assert [m.content for m in bank.chats.messages(cid)] == ["hello", "second"]
    assert assistant.wait_idle(5) and sum(1 for c in backend.calls if c["schema"]) == n_manager
    with pytest.raises(InvalidInputError):
        assistant.regenerate(conv(bank))


def test_manager_errors_reach_the_error_listener_and_change_nothing(bank, make):
    manager = FakeBackend(default="this is not json")
    assistant = make(FakeBackend(default="**Answer:** ok"), manager)
    errors: list = []
    assistant.add_error_listener(errors.append)
    cid = conv(bank)
    assistant.reply(cid, "I have a cat")
    assert assistant.wait_idle(5)
    assert len(errors) == 1 and isinstance(errors[0], ModelOutputError)
    assert bank.list() == [] and bank.history() == []
    assert assistant.reply(cid, "still there?").text == "ok"  # the pipeline keeps working


def test_a_hundred_kilobyte_message_is_kept_whole_and_the_prompt_bounded(bank, make):
    backend = FakeBackend(default=router(facts='{"facts": []}'))
    assistant = make(backend)
    cid = conv(bank)
    text = "x" * 100_000
    reply = assistant.reply(cid, text)
    assert bank.chats.get_message(reply.user_message_id).content == text
    chat_call = [c for c in backend.calls if not c["schema"]][0]
    assert sum(len(m["content"]) for m in chat_call["messages"]) < 4096 * 3
    assert assistant.wait_idle(10)


def test_a_question_with_no_memories_gets_a_reply_and_the_prompt_says_so(bank, make):
    backend = FakeBackend(default=router("**Answer:** I don't know yet.", facts='{"facts": []}'))
    assistant = make(backend)
    reply = assistant.reply(conv(bank), "What is my favourite colour?")
    assert reply.text == "I don't know yet." and reply.retrieved == []
    assert "(no memories)" in backend.calls[0]["messages"][-1]["content"]


def test_bad_input(bank, make):
    assistant = make()
    with pytest.raises(InvalidInputError):
        assistant.reply(conv(bank), "   ")
    with pytest.raises(NotFoundError):
        assistant.reply(9999, "hello")


def test_set_backends_swaps_models(bank, make):
    assistant = make(FakeBackend(default=router("**Answer:** old")))
    cid = conv(bank)
    assert assistant.reply(cid, "hi").text == "old"
    new = FakeBackend(default=router("**Answer:** new"))
    assistant.set_backends(answer_backend=new, manager_backend=new)
    assert assistant.reply(cid, "hi").text == "new"
    assert assistant.wait_idle(5)


def test_close_abandons_queued_turns_with_a_log(bank, caplog):
    release = threading.Event()

    def blocked(messages, schema):
        release.wait(5)
        return FACTS_CAT

    manager = FakeBackend(default=blocked)
    assistant = Assistant(bank, FakeBackend(default="**Answer:** ok"), manager)
    cid = conv(bank)
    assistant.reply(cid, "one")
    assistant.reply(cid, "two")
    with caplog.at_level(logging.WARNING, logger="core.assistant.pipeline"):
        release.set()
        assistant.close()
    assert not assistant._thread.is_alive()
    assert assistant.pending_turns() in (1, 2)  # turn 2 at least was never processed
    assert "not processed" in caplog.text
    assistant.reply(cid, "three")  # replies still work; the turn is logged, not queued
    assert assistant.pending_turns() in (1, 2)


def test_parse_command_and_third_person():
    assert parse_command("please remember that I'm vegetarian") == ("remember", "I'm vegetarian")
    assert parse_command("Remember when we went to Rome") is None
    assert parse_command("remember to buy milk") is None
    assert parse_command("Forget everything") is None
    assert parse_command("What do you remember about me?") is None
    assert third_person("I go to the gym and I study law", "Ann") == "Ann goes to the gym and Ann studies law"
    assert third_person("my sister visited me", "Bo") == "Bo's sister visited Bo"


def test_chat_leaves_out_memories_below_the_embedders_floor(tmp_path):
    class FlooredEmbedder(HashEmbedder):
        chat_min_score = 0.3

    b = MemoryBank(tmp_path / "floor.sqlite3", FlooredEmbedder())
    try:
        b.add("Ann has a cat named Tom", speaker="Ann", actor="user")
        b.add("Quarterly invoices are due in March", speaker="Ann", actor="user")
        answer = FakeBackend(default=router())
        a = Assistant(b, answer, None, user_name="Ann")
        try:
            reply = a.reply(conv(b), "What is the name of Ann's cat Tom?")
        finally:
            a.close()
        assert [m.text for m in reply.retrieved] == ["Ann has a cat named Tom"]
        prompt = answer.calls[0]["messages"][-1]["content"]
        assert "cat named Tom" in prompt and "invoices" not in prompt
    finally:
        b.close()


def test_a_reply_that_shows_nothing_is_answered_again_greedily_once(bank, make):
    answer = FakeBackend(["", "**Answer:** Hello Ann!", ""], default="")
    assistant = make(answer, FakeBackend(default='{"facts": []}'))
    cid = conv(bank)
    pieces: list[str] = []
    reply = assistant.reply(cid, "Hi there.", on_token=pieces.append)
    assert reply.text == "Hello Ann!" == "".join(pieces)
    chat_calls = [c for c in answer.calls if not c["schema"]]
    assert [c["params"].temperature for c in chat_calls] == [Settings().temperature, 0.0]
    assert chat_calls[0]["messages"] == chat_calls[1]["messages"]
    assert bank.chats.messages(cid)[-1].content == "Hello Ann!"
    # greedy and still empty: stored as it is, no third try
    again = assistant.reply(cid, "And?")
    assert again.text == "" and len([c for c in answer.calls if not c["schema"]]) == 4

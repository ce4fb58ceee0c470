"""Edit and resend, reply versions, a stopped reply, the chat's system prompt and the reply's
statistics, through the real pipeline (FakeBackend over a real bank)."""

from __future__ import annotations

import threading

import pytest

from core.config import Settings
from core.errors import InvalidInputError
from core.fakes import FakeBackend, is_extraction, router
from core.types import CancelToken

LONG = " ".join(f"word{i}" for i in range(2000))


def facts(text: str) -> list[str]:
    if "cat" in text:
        return ["Ann has a cat named Tom."]
    if "dog" in text:
        return ["Ann has a dog named Rex."]
    return []


def conv(bank) -> int:
    return bank.chats.create_conversation("t").id


def chat_calls(backend):
    return [c for c in backend.calls if c["schema"] is None and not is_extraction(c["messages"], c["schema"])]


def test_edit_and_resend_replaces_later_turns_and_undoes_their_memories(bank, make_assistant):
    backend = FakeBackend(default=router("Nice!", facts=facts))
    assistant = make_assistant(backend)
    cid = conv(bank)
    first = assistant.reply(cid, "I have a cat called Tom.")
    assistant.reply(cid, "How are you?")
    assert assistant.wait_idle(10)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    reply = assistant.edit_and_resend(cid, first.user_message_id, "I have a dog called Rex.")
    assert assistant.wait_idle(10)
    msgs = bank.chats.messages(cid)
    assert [(m.role, m.content) for m in msgs] == [("user", "I have a dog called Rex."), ("assistant", "Nice!")]
    assert msgs[0].id == reply.user_message_id != first.user_message_id
    # the cat fact the replaced turn wrote is undone; the edited message went to the manager again
    assert reply.undone_count == 1 and [m.text for m in reply.undone.deleted] == ["Ann has a cat named Tom."]
    assert [m.text for m in bank.list()] == ["Ann has a dog named Rex."]
    assert bank.list()[0].source == f"chat:{cid}/{reply.user_message_id}"
    # the new reply's prompt has none of the replaced turns
    last = chat_calls(backend)[-1]["messages"]
    assert not any("cat" in m["content"] or "How are you" in m["content"] for m in last)


def test_edit_of_a_turn_not_processed_yet_writes_nothing_for_it(bank, make_assistant):
    gate = threading.Event()

    def slow_facts(text):
        gate.wait(10)
        return facts(text)

    assistant = make_assistant(FakeBackend(default=router("Nice!", facts=slow_facts)))
    cid = conv(bank)
    first = assistant.reply(cid, "I have a cat called Tom.")
    second = assistant.reply(cid, "My cat is grey.")
    assert bank.chats.is_pending(second.user_message_id)
    reply = assistant.edit_and_resend(cid, first.user_message_id, "Nothing to remember here.")
    gate.set()
    assert assistant.wait_idle(10)
    assert bank.list() == [] and reply.undone_count == 0
    assert not bank.chats.pending_turns()


def test_edit_checks_its_arguments(bank, make_assistant):
    assistant = make_assistant(FakeBackend(default=router("Nice!")))
    cid = conv(bank)
    r = assistant.reply(cid, "hello")
    with pytest.raises(InvalidInputError):
        assistant.edit_and_resend(cid, r.message_id, "not a user message")
    with pytest.raises(InvalidInputError):
        assistant.edit_and_resend(cid, r.user_message_id, "   ")
    assert len(bank.chats.messages(cid)) == 2


def test_regenerate_keeps_versions_and_changes_no_memory(bank, make_assistant):
    replies = iter(["First.", "Second.", "Third.", "Fourth."])
    backend = FakeBackend(default=lambda messages, schema: router(next(replies) if not schema and not
                                                                  is_extraction(messages, schema) else "",
                                                                  facts=facts)(messages, schema))
    assistant = make_assistant(backend)
    cid = conv(bank)
    first = assistant.reply(cid, "I have a cat called Tom.")
    assert assistant.wait_idle(10)
    events = len(bank.history())
    assistant.regenerate(cid)
    third = assistant.regenerate(cid)
    assert assistant.wait_idle(10)
    assert third.message_id == first.message_id and third.text == "Third."
    msg = bank.chats.get_message(first.message_id)
    assert [v["content"] for v in msg.meta["versions"]] == ["First.", "Second.", "Third."]
    assert msg.meta["version"] == 2 and msg.content == "Third."
    assert len(bank.history()) == events and [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    back = bank.chats.select_version(first.message_id, 0)
    assert back.content == "First." and back.meta["version"] == 0 and len(back.meta["versions"]) == 3
    # the next turn's history is the version shown
    assistant.reply(cid, "And now?")
    history = chat_calls(backend)[-1]["messages"]
    assert any(m["role"] == "assistant" and m["content"] == "First." for m in history)
    with pytest.raises(InvalidInputError):
        bank.chats.select_version(first.message_id, 3)


def test_a_stopped_reply_lets_the_manager_read_the_message_but_never_the_reply(bank, make_assistant):
    backend = FakeBackend(default=router(LONG + " dog", facts=facts), chunk=4, delay=0.002)
    assistant = make_assistant(backend)
    cid = conv(bank)
    cancel = CancelToken()
    seen: list[str] = []

    def on_token(piece):
        seen.append(piece)
        if len(seen) == 5:
            cancel.cancel()

    reply = assistant.reply(cid, "I have a cat called Tom.", on_token=on_token, cancel=cancel)
    assert reply.cancelled and 0 < len(reply.text) < len(LONG)
    assert assistant.wait_idle(10)
    assert [m.text for m in bank.list()] == ["Ann has a cat named Tom."]
    read = [c["messages"][-1]["content"] for c in backend.calls if is_extraction(c["messages"], c["schema"])]
    assert read and all("word1" not in t for t in read)
    assert any("cat called Tom" in t for t in read)


def test_system_prompt_default_and_per_chat_override(bank, make_assistant):
    backend = FakeBackend(default=router("Nice!"))
    assistant = make_assistant(backend, settings=Settings(system_prompt="Answer like a pirate."))
    cid = conv(bank)
    assistant.reply(cid, "hello")
    system = chat_calls(backend)[-1]["messages"][0]
    assert system["role"] == "system" and system["content"].endswith("Answer like a pirate.")
    assert "memories" in system["content"]  # the memory instructions stay
    bank.chats.set_system_prompt(cid, "Be brief.")
    assistant.reply(cid, "again")
    msgs = chat_calls(backend)[-1]["messages"]
    assert msgs[0]["content"].endswith("Be brief.") and "pirate" not in msgs[0]["content"]
    assert [m.role for m in bank.chats.messages(cid)].count("system") == 1
    assert sum(m["role"] == "system" for m in msgs) == 1  # the stored system message is not history
    bank.chats.set_system_prompt(cid, "")
    assert bank.chats.system_prompt(cid) is None
    assert assistant.system_extra(cid) == "Answer like a pirate."


def test_reply_meta_has_model_speed_and_first_token_time(bank, make_assistant):
    backend = FakeBackend(default=router("One two three four five six."), chunk=2, name="tiny-test")
    assistant = make_assistant(backend)
    reply = assistant.reply(conv(bank), "hello")
    meta = bank.chats.get_message(reply.message_id).meta
    assert meta["model"] == "tiny-test" and meta["tokens"] > 1
    assert 0 <= meta["ttft_s"] < 5 and meta["tokens_per_s"] > 0
    assert reply.meta == meta

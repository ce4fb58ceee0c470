"""core/agents/prompts.py: message layout (fixed prefix first), schema bounds, tolerant parsers."""

from __future__ import annotations

import json
from datetime import datetime

import pytest

from core.agents import prompts
from core.errors import ModelOutputError


def test_prompt_version_is_a_nonempty_string():
    assert isinstance(prompts.PROMPT_VERSION, str) and prompts.PROMPT_VERSION


def test_extraction_prompt_holds_only_the_turn_and_a_fixed_prefix():
    a = prompts.extraction_messages("Yesterday I adopted a cat.", "Ann", "2:00 pm on 3 May, 2023")
    b = prompts.extraction_messages("I live in Oslo.", "Bob", None)
    assert [m["role"] for m in a] == ["system"] + ["user", "assistant"] * len(prompts.FACT_EXAMPLES) + ["user"]
    assert a[:-1] == b[:-1]  # the same fixed instructions and examples: their KV is reused between calls
    assert "Yesterday I adopted a cat." in a[-1]["content"]
    assert "Speaker: Ann" in a[-1]["content"] and "2:00 pm on 3 May, 2023" in a[-1]["content"]
    assert all("Yesterday I adopted a cat." not in m["content"] for m in a[:-1])
    assert "Time: unknown" in b[-1]["content"]
    assert "relative dates" in a[0]["content"]
    for m in a[2:-1:2]:  # the examples' answers are valid outputs of the schema
        assert isinstance(json.loads(m["content"])["facts"], list)


def test_facts_schema_is_bounded():
    schema = prompts.FACTS_SCHEMA
    facts = schema["properties"]["facts"]
    assert facts["maxItems"] == prompts.FACT_MAX_ITEMS
    assert facts["items"]["maxLength"] == prompts.FACT_MAX_CHARS
    assert schema["required"] == ["facts"]


def test_manager_schema_is_bounded_and_ids_are_aliases():
    schema = prompts.manager_schema(3, 2)
    mem = schema["properties"]["memory"]
    assert mem["maxItems"] == 5
    item = mem["items"]["properties"]
    assert item["id"]["enum"] == ["0", "1", "2", "3", "4"]
    assert item["event"]["enum"] == ["ADD", "UPDATE", "DELETE", "NONE"]
    assert item["text"]["maxLength"] == prompts.FACT_MAX_CHARS
    big = prompts.manager_schema(500, 500)["properties"]["memory"]
    assert big["maxItems"] == prompts.MANAGER_MAX_ITEMS
    assert prompts.manager_schema(0, 0)["properties"]["memory"]["maxItems"] == 1


def test_schemas_have_no_unbounded_parts():
    runtime = pytest.importorskip("core.llm.runtime")
    for schema in (prompts.FACTS_SCHEMA, prompts.manager_schema(5, 3)):
        assert runtime.unbounded_paths(schema) == []


def test_schemas_compile_to_llama_grammars():
    pytest.importorskip("llama_cpp")
    from llama_cpp.llama_grammar import LlamaGrammar

    for schema in (prompts.FACTS_SCHEMA, prompts.manager_schema(4, 2)):
        assert LlamaGrammar.from_json_schema(json.dumps(schema), verbose=False) is not None


def test_manager_messages_use_small_aliases_and_a_fixed_prefix():
    a = prompts.manager_messages(["Jo has a cat"], ["Jo has a dog", "Jo lives in Oslo"])
    b = prompts.manager_messages(["x"], [])
    assert a[:-1] == b[:-1] and [m["role"] for m in a] == ["system", "user", "assistant", "user"]
    user = a[-1]["content"]
    shown = json.loads(user.split("Existing memories:\n")[1].split("\nNew facts:")[0])
    assert shown == [{"id": "0", "text": "Jo has a dog"}, {"id": "1", "text": "Jo lives in Oslo"}]
    assert json.loads(user.split("New facts:\n")[1]) == ["Jo has a cat"]
    example = json.loads(a[2]["content"])["memory"]
    assert {item["event"] for item in example} == {"ADD", "UPDATE", "DELETE", "NONE"}
    for event in ("ADD", "UPDATE", "DELETE", "NONE"):
        assert event in a[0]["content"]


def test_parse_facts_tolerates_fences_and_rejects_garbage():
    assert prompts.parse_facts('```json\n{"facts": ["A has a cat"]}\n```') == ["A has a cat"]
    assert prompts.parse_facts('Sure! {"facts": []} hope it helps') == []
    assert prompts.parse_facts('{"facts": ["' + "x" * 500 + '"]}')[0] == "x" * prompts.FACT_MAX_CHARS
    assert prompts.parse_facts('{"facts": ["Bo is a dog who is a dog who is a dog who is a dog", "Bo is a dog"]}') == [
        "Bo is a dog"]
    assert len(prompts.parse_facts(json.dumps({"facts": [f"fact {i}" for i in range(40)]}))) == prompts.FACT_MAX_ITEMS
    for bad in ("", "no json here", '{"facts": "one"}', "[1, 2]", '{"facts": [', '{"memory": []}'):
        with pytest.raises(ModelOutputError):
            prompts.parse_facts(bad)


def test_parse_manager_items_rejects_non_json():
    with pytest.raises(ModelOutputError) as err:
        prompts.parse_manager_items("I think you should ADD it")
    assert err.value.raw == "I think you should ADD it"
    with pytest.raises(ModelOutputError):
        prompts.parse_manager_items('{"memory": {"id": "0"}}')


def test_answer_prompt_groups_both_speakers_and_puts_the_question_last():
    mems = {"Ann": ["1:00 pm on 1 May, 2023: Ann has a cat."], "Bob": ["2:00 pm on 2 May, 2023: Bob lives in Oslo."]}
    msgs = prompts.answer_messages("Where does Bob live?", mems)
    other = prompts.answer_messages("What pet?", {"Ann": []})
    assert msgs[0] == other[0]
    user = msgs[1]["content"]
    question = user.index("Question: Where does Bob live?")
    assert user.index("Memories for Ann:") < user.index("Memories for Bob:") < question
    assert "- 2:00 pm on 2 May, 2023: Bob lives in Oslo." in user
    system = msgs[0]["content"]
    assert prompts.SELECTION_HEADER in system and prompts.ANSWER_MARKER in system
    assert "most recent" in system and "5-6 words" in system
    nod = prompts.answer_messages("Where does Bob live?", mems, distill=False)
    assert prompts.SELECTION_HEADER not in nod[0]["content"] and prompts.ANSWER_MARKER in nod[0]["content"]


def test_memory_block_with_no_memories_says_so():
    assert prompts.NO_MEMORIES in prompts.memory_block({})
    assert prompts.NO_MEMORIES in prompts.memory_block({"Ann": []})


def test_chat_prompt_keeps_a_stable_prefix_and_history_order():
    hist = [("user", "hi"), ("assistant", "hello!"), ("system", "ignored"), ("user", "")]
    a = prompts.chat_messages("What is my cat called?", {"Ann": ["1 May, 2023: Ann's cat is Tom."]}, hist,
                              user_name="Ann", assistant_name="Max", now="3:00 pm on 5 May, 2023")
    b = prompts.chat_messages("Other", {}, [], user_name="Ann", assistant_name="Max")
    assert a[0] == b[0] and "Ann" in a[0]["content"] and "Max" in a[0]["content"]
    assert [m["role"] for m in a] == ["system", "user", "assistant", "user"]
    assert a[1]["content"] == "hi" and a[2]["content"] == "hello!"
    last = a[-1]["content"]
    assert "Ann's cat is Tom" in last and last.endswith("Ann: What is my cat called?")
    assert "Now: 3:00 pm on 5 May, 2023" in last
    off = prompts.chat_messages("x", {"Ann": ["secret"]}, memory_off=True)
    assert "secret" not in off[-1]["content"] and "memory is off" in off[-1]["content"]


@pytest.mark.parametrize("text, answer, selected, marker", [
    ("**Memories selected as relevant:**\n- 1 May: A has a cat.\n- 2 May: B is in Oslo.\n**Answer:** Oslo",
     "Oslo", ["1 May: A has a cat.", "2 May: B is in Oslo."], True),
    ("**Memories selected as relevant:**\n- none\n**Answer:** I don't know", "I don't know", [], True),
    ("**Answer**: 7 May 2023", "7 May 2023", [], True),
    ("Memories selected as relevant:\n1. first\n2) second\n\nAnswer: beach", "beach", ["first", "second"], True),
    ("**Memories selected as relevant:**\n- only a list, cut off", "", ["only a list, cut off"], False),
    ("Just an answer", "Just an answer", [], False),
    ("", "", [], False),
    ("**Answer:** line one\nline two", "line one line two", [], True),
    ("**Answer:** **Biscuit**.", "Biscuit.", [], True),
    ("The answer is: **Biscuit", "Biscuit", [], False),
    ("- **Lisbon**", "Lisbon", [], False),
    ("- first memory\n- Lisbon", "Lisbon", ["first memory"], False),
    ("**Answer:** **Note**: it is **big**", "Note: it is big", [], True),
])
def test_parse_answer_variants(text, answer, selected, marker):
    parsed = prompts.parse_answer(text)
    assert parsed.answer == answer
    assert parsed.selected_lines == selected
    assert parsed.has_marker is marker


def test_format_time_matches_locomo_style():
    assert prompts.format_time(datetime(2023, 6, 16, 19, 20)) == "7:20 pm on 16 June, 2023"
    assert prompts.format_time(datetime(2024, 1, 1, 0, 5)) == "12:05 am on 1 January, 2024"


def test_chat_prompt_asks_for_the_reply_directly_and_renders_turns_deterministically():
    system = prompts.chat_system("Ann", "Max")
    assert prompts.ANSWER_MARKER not in system and "relevant:" not in system.lower()
    turn = prompts.chat_user_turn("hi ", {"Ann": ["1 May, 2023: Ann has a cat."]}, user_name="Ann", now="noon")
    assert turn == prompts.chat_user_turn("hi", {"Ann": ["1 May, 2023: Ann has a cat."]}, user_name="Ann",
                                          now="noon")
    msgs = prompts.chat_messages("next", {}, [("user", turn), ("assistant", "Hello!")], user_name="Ann",
                                 earlier=True)
    assert msgs[1]["content"] == turn and "shown earlier" in msgs[-1]["content"]
    assert prompts.NO_MEMORIES not in msgs[-1]["content"]

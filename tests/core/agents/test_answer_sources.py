"""The Answer Agent's source quotes: each memory with an excerpt of the turn it came from,
each turn quoted once, memories and quotes sharing the item budget per speaker; without
sources (or without any source text) the paper's prompt, byte for byte."""

from __future__ import annotations

import hashlib

from core.agents import prompts
from core.agents.answer import AnswerAgent
from core.agents.evidence import EXCERPT_CHARS, excerpt
from core.fakes import FakeBackend
from core.types import MemoryOp, SourceTurn

WHEN = "1:56 pm on 8 May, 2023"
LONG = ("Oh wow, what a week it has been, honestly I barely slept and the weather was awful all the time. "
        "Anyway I adopted a beagle from the shelter last week and his name is Scout, he is adorable. "
        "Then we went to the market and bought far too many vegetables for the two of us, as usual.")


def add(bank, text, speaker, turn_text, ref, when=WHEN):
    changes = bank.apply([MemoryOp("ADD", text=text, speaker=speaker, observed_at=when)],
                         turn=ref, source=SourceTurn(turn_text, speaker, when, ref=ref))
    return changes.added[0].id


def memories(bank, *ids):
    by_id = {m.id: m for m in bank.list()}
    return [by_id[i] for i in ids]


def user_text(prompt) -> str:
    return prompt.messages[1]["content"]


def test_paper_prompt_unchanged(bank):
    # the paper's system text is frozen: changing it changes what earlier runs measured
    assert hashlib.sha256(prompts.ANSWER_SYSTEM.encode()).hexdigest()[:16] == "7775d0194538d6d5"
    a = add(bank, "Ann adopted a beagle named Scout", "Ann", LONG, "t:1")
    b = add(bank, "Bob lives in Oslo", "Bob", "I live in Oslo.", "t:2")
    mems = memories(bank, a, b)
    agent = AnswerAgent(bank, FakeBackend(), sources=False)
    prompt = agent.build_prompt("Who is Scout?", mems)
    assert prompt.messages == [
        {"role": "system", "content": prompts.ANSWER_SYSTEM},
        {"role": "user", "content": f"Memories for Ann:\n- {WHEN}: Ann adopted a beagle named Scout\n\n"
                                    f"Memories for Bob:\n- {WHEN}: Bob lives in Oslo\n\nQuestion: Who is Scout?\n"
                                    "List the relevant memories, then give the answer after **Answer:** in less "
                                    "than 5-6 words."}]
    assert prompt.source_refs == [] and prompt.used == mems
    nd = agent.build_prompt("Who is Scout?", mems, distill=False).messages
    assert nd == prompts.answer_messages("Who is Scout?", AnswerAgent.group(mems, ["Ann", "Bob"]), distill=False)


def test_each_memory_quotes_its_turn_once(bank):
    a = add(bank, "Ann adopted a beagle named Scout", "Ann", LONG, "t:1")
    b = add(bank, "Ann went to the market", "Ann", LONG, "t:1")  # a second memory from the same turn
    c = add(bank, "Bob lives in Oslo", "Bob", "Hi! I live in Oslo, it is cold.", "t:2")
    prompt = AnswerAgent(bank, FakeBackend()).build_prompt("Who is Scout?", memories(bank, a, b, c))
    text = user_text(prompt)
    assert prompt.messages[0]["content"] != prompts.ANSWER_SYSTEM
    assert prompts.ANSWER_SOURCES_NOTE.strip() in prompt.messages[0]["content"]
    quote = excerpt(LONG, "Ann adopted a beagle named Scout Ann went to the market")  # both memories' words
    assert len(quote) <= EXCERPT_CHARS and "Scout" in quote and "market" in quote and quote.startswith("...")
    assert text.count(quote) == 1, text
    assert f'- {WHEN}: Ann adopted a beagle named Scout\n  (said #1: "{quote}")' in text
    assert f"- {WHEN}: Ann went to the market\n  (said #1, quoted above)" in text
    assert f'- {WHEN}: Bob lives in Oslo\n  (said #2: "Hi! I live in Oslo, it is cold.")' in text
    assert prompt.source_refs == ["t:1", "t:2"] and prompt.items == 5
    assert [m.id for m in prompt.used] == [a, b, c]


def test_quotes_go_with_the_best_memories_within_their_budget(bank):
    ann = [add(bank, f"Ann visited city number {i}", "Ann", f"I visited city number {i} today.", f"a:{i}")
           for i in range(4)]
    bob = [add(bank, f"Bob read book number {i}", "Bob", f"I read book number {i}.", f"b:{i}") for i in range(2)]
    mems = memories(bank, *ann, *bob)
    # the paper's k // 2 memories per speaker; then at most one quote per speaker, best first
    prompt = AnswerAgent(bank, FakeBackend(), k=6, max_quotes=1).build_prompt("What?", mems)
    text = user_text(prompt)
    assert [m.id for m in prompt.used] == [*ann[:3], *bob]
    assert "I visited city number 0 today." in text and "I visited city number 1 today." not in text
    assert "I read book number 0." in text and "I read book number 1." not in text
    assert "city number 3" not in text and prompt.items == 7
    assert prompt.source_refs == ["a:0", "b:0"]
    # the quote budget in characters: the best memory of each speaker first (Ann's, Bob's, ...)
    one = AnswerAgent(bank, FakeBackend(), k=6, quote_chars=100).build_prompt("What?", mems)
    assert one.source_refs == ["a:0", "b:0"] and one.items == 7
    two = AnswerAgent(bank, FakeBackend(), k=6, quote_chars=60).build_prompt("What?", mems)
    assert two.source_refs == ["a:0"]
    # one speaker: k memories in all
    solo = AnswerAgent(bank, FakeBackend(), k=3).build_prompt("What?", memories(bank, *ann))
    assert [m.id for m in solo.used] == ann[:3] and solo.items == 6


def test_a_turn_is_quoted_under_its_first_memory_in_the_prompt(bank):
    # Bob's memory ranks first across speakers, but Ann's memory of the same turn comes first
    # in the prompt: the quote goes under Ann's, Bob's points up to it
    a = add(bank, "Ann likes Oslo", "Ann", "We both love Oslo, Bob too.", "t:1")
    b = add(bank, "Bob loves Oslo", "Bob", "We both love Oslo, Bob too.", "t:1")
    text = user_text(AnswerAgent(bank, FakeBackend()).build_prompt("Who likes Oslo?", memories(bank, a, b)))
    assert text.index('(said #1: "We both love Oslo, Bob too.")') < text.index("Bob loves Oslo")
    assert "- Bob loves Oslo" not in text  # (the timestamped line)
    assert f"{WHEN}: Bob loves Oslo\n  (Ann said #1, quoted above)" in text


def test_a_removed_source_is_skipped_and_no_text_means_the_paper_prompt(bank):
    a = add(bank, "Ann adopted a beagle named Scout", "Ann", LONG, "t:1")
    b = add(bank, "Ann lives in Lisbon", "Ann", "I moved to Lisbon in March.", "t:2")
    mems = memories(bank, a, b)
    [src] = [s for s in bank.memory_sources(a) if s.text]
    bank.remove_source_text([src.source_id])
    agent = AnswerAgent(bank, FakeBackend())
    text = user_text(agent.build_prompt("Where?", mems))
    assert "Scout\n  (said" not in text and '(said #1: "I moved to Lisbon in March.")' in text
    [src2] = [s for s in bank.memory_sources(b) if s.text]
    bank.remove_source_text([src2.source_id])
    plain = agent.build_prompt("Where?", mems).messages
    assert plain == AnswerAgent(bank, FakeBackend(), sources=False).build_prompt("Where?", mems).messages


def test_answer_reports_what_it_showed(bank):
    a = add(bank, "Ann adopted a beagle named Scout", "Ann", LONG, "t:1")
    backend = FakeBackend(default=f"**Memories selected as relevant:**\n- {WHEN}: Ann adopted a beagle named "
                                  "Scout\n**Answer:** a beagle")
    res = AnswerAgent(bank, backend).answer("What dog did Ann adopt?", memories=memories(bank, a))
    assert res.answer == "a beagle" and [m.id for m in res.selected] == [a]
    assert [m.id for m in res.shown] == [a] and res.source_refs == ["t:1"]
    assert "(said #1:" in backend.calls[0]["messages"][1]["content"]


def test_excerpt_bounds():
    assert excerpt("", "x") == ""
    assert excerpt("  a   b  ", "x") == "a b"
    cut = excerpt("word " * 100 + "Luna the cat " + "word " * 100, "Ann has a cat named Luna", 80)
    assert len(cut) <= 80 and "Luna" in cut and cut.startswith("...") and cut.endswith("...")
    assert len(excerpt("x" * 500, "x", 50)) <= 50

"""The grounding gate and the extractive mode inside `MemoryManager.plan_turn` (scripted models,
real SQLite + sqlite-vec bank): what the turn does not support becomes a REJECT op with its
reason and is never deduplicated, decided or written; questions and requests give no memory
unless they also state something; prompt examples never reach the bank."""

from __future__ import annotations

import json
import re
from types import SimpleNamespace

import pytest

from core.agents import prompts
from core.agents.manager import ManagerConfig, MemoryManager, resolve_extraction
from core.assistant.turns import run_turns
from core.errors import InvalidInputError
from core.fakes import FakeBackend, HashEmbedder
from core.types import REJECT

TIME = "1:56 pm on 8 May, 2023"
SAM = "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex."


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)})


def ops(*items: dict) -> str:
    return json.dumps({"memory": list(items)})


def kind(schema) -> str:
    props = (schema or {}).get("properties", {})
    return "facts" if "facts" in props else "keep" if "keep" in props else "memory" if "memory" in props else "?"


def sized(backend, n: int | None):
    """`backend` reporting a GGUF parameter count like `LlamaBackend.info` (None: no info)."""
    if n is not None:
        backend.info = SimpleNamespace(parameter_count=n)
    return backend


def seed(bank, *texts, speaker="Sam"):
    return [bank.add(t, speaker=speaker, observed_at=TIME, source="seed", actor="user").memory for t in texts]


def by_event(ops_, event):
    return [op for op in ops_ if op.event == event]


# --------------------------------------------------------------------- after extraction

def test_an_invented_fact_is_rejected_with_its_reason_and_a_said_one_added(bank):
    backend = FakeBackend([facts("Sam has a cat named Luna.", "Sam lives in Lisbon.")])
    manager = MemoryManager(bank, backend)
    planned = manager.plan_turn(SAM, speaker="Sam", time=TIME, source="t:1")
    (rej,) = by_event(planned, REJECT)
    assert rej.text == "Sam has a cat named Luna." and rej.reason == "not in what was said: 'Luna'"
    assert (rej.speaker, rej.observed_at, rej.source, rej.memory_id) == ("Sam", TIME, "t:1", None)
    assert [op.text for op in by_event(planned, "ADD")] == ["Sam lives in Lisbon."]
    assert len(backend.calls) == 1  # no decision call for the refused fact


def test_a_refused_fact_is_not_deduplicated_nor_shown(bank):
    cat = seed(bank, "Sam has a cat named Luna.")[0]  # the same text is already a memory
    backend = FakeBackend([facts("Sam has a cat named Luna.")])
    planned = MemoryManager(bank, backend, config=ManagerConfig(decide_when_empty=True)).plan_turn(
        SAM, speaker="Sam", time=TIME)
    assert [(op.event, op.memory_id) for op in planned] == [(REJECT, None)]  # not a NOOP on #cat
    assert len(backend.calls) == 1 and bank.get(cat.id).status == "active"


def test_the_gate_switched_off_is_the_papers_path(bank):
    backend = FakeBackend([facts("Sam has a cat named Luna.")])
    manager = MemoryManager(bank, backend, config=ManagerConfig(gate=False))
    changes = manager.process_turn(SAM, speaker="Sam", time=TIME)
    assert [m.text for m in changes.added] == ["Sam has a cat named Luna."] and manager.last_rejected == []


def test_process_turn_keeps_the_rejected_ops_and_writes_only_the_rest(bank):
    manager = MemoryManager(bank, FakeBackend([facts("Sam has a cat named Luna.", "Sam lives in Lisbon."),
                                               facts()]))
    changes = manager.process_turn(SAM, speaker="Sam", time=TIME, turn="t:1")
    assert [m.text for m in changes.added] == ["Sam lives in Lisbon."]
    assert [(op.event, op.text) for op in manager.last_rejected] == [(REJECT, "Sam has a cat named Luna.")]
    assert [m.text for m in bank.list()] == ["Sam lives in Lisbon."]
    manager.process_turn("Haha ok.", speaker="Sam", time=TIME)
    assert manager.last_rejected == []  # per turn


def test_the_turn_loop_counts_the_rejected_facts(bank):
    script = [facts("Sam has a cat named Luna.", "Sam lives in Lisbon."), facts("Kate loves hiking.")]
    turns = [SimpleNamespace(text=SAM, speaker="Sam", time=TIME, turn_id="f:1"),
             SimpleNamespace(text="Sure, sounds good!", speaker="Sam", time=TIME, turn_id="f:2")]
    seen = []
    report = run_turns(MemoryManager(bank, FakeBackend(script)), turns, on_turn=seen.append)
    assert [o.rejected for o in seen] == [1, 1] and report.rejected == 2
    assert [m.text for m in bank.list()] == ["Sam lives in Lisbon."]


def test_the_other_speakers_seen_are_known_names(bank):
    manager = MemoryManager(bank, FakeBackend(default=facts()))
    fact = "Sam told Jon about the move to Lisbon."
    text = "I told you about the move to Lisbon."
    assert not manager.check(fact, text, speaker="Sam", time=TIME).ok  # who is Jon?
    manager.process_turn("Hey Sam, how was the trip?", speaker="Jon", time=TIME)
    assert manager.context_names("Sam") == ("Jon",) and manager.check(fact, text, speaker="Sam", time=TIME).ok


def test_the_cosine_is_used_only_with_the_calibrated_embedder(make_bank, tmp_path):
    lexical = MemoryManager(make_bank(tmp_path / "a.sqlite3"), FakeBackend())
    assert lexical.gate_embedder is None
    assert lexical.check("Sam lives in Lisbon.", SAM, speaker="Sam", time=TIME).cosine is None
    named = make_bank(tmp_path / "b.sqlite3", HashEmbedder(name="all-MiniLM-L6-v2"))
    calibrated = MemoryManager(named, FakeBackend())
    assert calibrated.gate_embedder is named.embedder
    assert calibrated.check("Sam lives in Lisbon.", SAM, speaker="Sam", time=TIME).cosine is not None


# --------------------------------------------------------------------- after the decision

def test_decided_texts_are_gated_an_update_against_turn_and_memory(bank):
    dog, city = seed(bank, "Sam has a dog.", "Sam lives in Porto.")
    backend = FakeBackend([
        facts("Sam has a dog called Rex.", "Sam lives in Lisbon."),
        ops({"id": "0", "text": "Sam has a dog called Rex.", "event": "UPDATE"},
            {"id": "1", "text": "Sam lives in Lisbon with Kate.", "event": "UPDATE"},
            {"text": "Sam has a sister named Anna who is a nurse.", "event": "ADD"},
            {"text": "Sam has a dog called Rex who lives in Lisbon.", "event": "ADD"}),
    ])
    config = ManagerConfig(decide_when_empty=True, related_min_score=-1.0)
    planned = MemoryManager(bank, backend, config=config).plan_turn(SAM, speaker="Sam", time=TIME)
    shown = [m.strip() for m in backend.calls[1]["messages"][-1]["content"].splitlines()]
    assert any("Sam has a dog." in line for line in shown)
    ids = {m.text: m.id for m in (dog, city)}
    got = [(op.event, op.memory_id, op.text) for op in planned]
    assert ("UPDATE", ids["Sam has a dog."], "Sam has a dog called Rex.") in got
    assert (REJECT, ids["Sam lives in Porto."], "Sam lives in Lisbon with Kate.") in got  # the target kept
    assert (REJECT, None, "Sam has a sister named Anna who is a nurse.") in got
    assert ("ADD", None, "Sam has a dog called Rex who lives in Lisbon.") in got
    rejected = {op.text: op for op in by_event(planned, REJECT)}
    assert rejected["Sam lives in Lisbon with Kate."].reason == "not in what was said: 'Kate'"
    assert rejected["Sam lives in Lisbon with Kate."].old_text == "Sam lives in Porto."


def test_an_update_may_rest_on_the_memory_it_rewrites(bank):
    seed(bank, "Sam has a dog named Rex.")
    backend = FakeBackend([facts("Sam's dog is three years old."),
                           ops({"id": "0", "text": "Sam has a dog named Rex who is three years old.",
                                "event": "UPDATE"})])
    config = ManagerConfig(related_min_score=-1.0)
    changes = MemoryManager(bank, backend, config=config).process_turn(
        "My dog is three years old now.", speaker="Sam", time=TIME)
    assert [m.text for m in changes.updated] == ["Sam has a dog named Rex who is three years old."]


# --------------------------------------------------------------------- questions and requests

@pytest.mark.parametrize("mode", ["free", "extractive"])
def test_a_question_gives_no_memory(bank, mode):
    backend = FakeBackend(default=lambda m, schema: facts("Sam is not sure where to live.")
                          if kind(schema) == "facts" else json.dumps({"keep": [1]}))
    manager = MemoryManager(bank, backend, config=ManagerConfig(extraction=mode))
    changes = manager.process_turn("Where do I live?", speaker="Sam", time=TIME)
    assert not changes and bank.list() == []
    if mode == "free":
        assert [op.reason for op in manager.last_rejected] == ["a question, not a statement"]
    else:
        assert backend.calls == [] and manager.last_rejected == []  # no candidate: no model call


@pytest.mark.parametrize("mode", ["free", "extractive"])
def test_a_request_keeps_only_what_it_states(bank, mode):
    def reply(messages, schema):
        if kind(schema) == "facts":
            return facts("Sam has a dog named Rex.", "Sam takes Rex to the vet.", "Sam should take Rex to the vet.")
        return json.dumps({"keep": list(schema["properties"]["keep"]["items"]["enum"])})

    manager = MemoryManager(bank, FakeBackend(default=reply), config=ManagerConfig(extraction=mode))
    changes = manager.process_turn("Should I take my dog Rex to the vet?", speaker="Sam", time=TIME)
    assert [m.text for m in changes.added] == ["Sam has a dog named Rex."]
    if mode == "free":
        assert len(manager.last_rejected) == 2
        assert {op.reason for op in manager.last_rejected} == {"a question, not a statement"}


# --------------------------------------------------------------------- extractive mode

def test_extractive_mode_chooses_numbered_sentences_and_code_rewrites(bank):
    backend = FakeBackend([json.dumps({"keep": [1, 3]})])
    manager = MemoryManager(bank, backend, config=ManagerConfig(extraction="extractive"))
    text = ("Hi John! I adopted a dog last week, his name is Buddy. I started learning the guitar. "
            "I moved to Lisbon in March.")
    changes = manager.process_turn(text, speaker="Maria", time=TIME)
    assert [m.text for m in changes.added] == [
        "Maria adopted a dog the week before 8 May 2023, his name is Buddy.", "Maria moved to Lisbon in March."]
    call = backend.calls[0]
    assert call["schema"]["properties"]["keep"]["items"]["enum"] == [1, 2, 3]
    assert "1. I adopted a dog last week" in call["messages"][-1]["content"]
    assert call["params"].temperature == 0.0 and call["params"].max_tokens == 16 + 4 * 3


def test_an_invalid_choice_is_retried_once_then_raises(bank):
    from core.errors import ModelOutputError

    backend = FakeBackend(['{"keep": [7]}', '{"keep": ["1"]}'])
    manager = MemoryManager(bank, backend, config=ManagerConfig(extraction="extractive"))
    with pytest.raises(ModelOutputError):
        manager.process_turn("I moved to Lisbon in March.", speaker="Maria", time=TIME)
    assert len(backend.calls) == 2 and bank.list() == []


def test_auto_picks_extractive_for_a_small_model_free_otherwise(bank):
    assert MemoryManager(bank, sized(FakeBackend(), 134_515_008)).extraction == "extractive"
    assert MemoryManager(bank, sized(FakeBackend(), 7_000_000_000)).extraction == "free"
    assert MemoryManager(bank, FakeBackend()).extraction == "free"  # unknown size: the paper's
    small = sized(FakeBackend(), 134_515_008)
    assert MemoryManager(bank, small, config=ManagerConfig(extraction="free")).extraction == "free"
    with pytest.raises(InvalidInputError):
        ManagerConfig(extraction="creative")
    with pytest.raises(InvalidInputError):
        resolve_extraction("", 1)


# --------------------------------------------------------------------- prompt examples

EXAMPLE_FACTS = [f for _, _, _, fs in prompts.FACT_EXAMPLES for f in fs]
UNRELATED = ["Haha ok.", "Sure, sounds good!", "I went to work today.", "Hi John! How are you?",
             "Thanks, see you later!", "I went to work today and it was long."]


def example_only_terms(turns) -> set[str]:
    """Casefolded words of the prompt examples (their turns and facts) that no ingested turn says."""
    words = lambda t: {w.casefold() for w in re.findall(r"[A-Za-z]+", t)}  # noqa: E731
    said = set().union(*(words(t) for t in turns)) | {"maria", "the", "a", "is", "who", "has", "on", "in"}
    examples = set().union(*(words(f) | words(t) for _, _, t, fs in prompts.FACT_EXAMPLES for f in fs))
    return {w for w in examples - said if len(w) > 2 and not w.isdigit()}


def leaking_backend():
    """Answers every call with the prompt's few-shot content: the example facts as written and
    moved onto the current speaker; every candidate chosen; decisions that ADD and UPDATE to them."""
    moved = [re.sub(r"^(John|Kate)\b", "Maria", f) for f in EXAMPLE_FACTS]

    def reply(messages, schema):
        k = kind(schema)
        if k == "facts":
            return facts(*(EXAMPLE_FACTS + moved)[:prompts.FACT_MAX_ITEMS])
        if k == "keep":
            return json.dumps({"keep": list(schema["properties"]["keep"]["items"]["enum"])})
        items = [{"text": f, "event": "ADD"} for f in EXAMPLE_FACTS + moved]
        items.append({"id": "0", "text": moved[2], "event": "UPDATE"})
        return ops(*items[:prompts.MANAGER_MAX_ITEMS])

    return FakeBackend(default=reply)


@pytest.mark.parametrize("mode", ["free", "extractive"])
def test_prompt_examples_never_enter_the_bank(bank, mode):
    seed(bank, "Maria works at a bakery.", speaker="Maria")  # something for decisions to update
    config = ManagerConfig(extraction=mode, decide_when_empty=True, related_min_score=-1.0)
    manager = MemoryManager(bank, leaking_backend(), config=config)
    rejected = 0
    for i, text in enumerate(UNRELATED):
        manager.process_turn(text, speaker="Maria", time=TIME, turn=f"t:{i}")
        rejected += len(manager.last_rejected)
    terms = example_only_terms(UNRELATED)
    assert {"kate", "anna", "nurse", "hiking", "buddy", "boston", "puppy", "sister"} <= terms
    leaked = [(m.text, sorted(terms & {w.casefold() for w in re.findall(r"[A-Za-z]+", m.text)}))
              for m in bank.list(status=None)]
    assert [x for x in leaked if x[1]] == []
    assert rejected > 0  # the examples were proposed, and refused
    assert len(bank.list()) >= 1  # the seeded memory; in extractive mode also "Maria went to work ..."


def test_prompt_examples_leak_without_the_gate(bank):
    """The same script with the gate off does write them: the test above can fail."""
    manager = MemoryManager(bank, leaking_backend(), config=ManagerConfig(gate=False, extraction="free"))
    manager.process_turn("Haha ok.", speaker="Maria", time=TIME)
    assert any("Anna" in m.text for m in bank.list())


# --------------------------------------------------------------------- the embedded model

@pytest.fixture(scope="module")
def embedded_backend():
    pytest.importorskip("llama_cpp")
    from core.config import ModelSpec
    from core.llm.runtime import load_backend

    backend = load_backend(ModelSpec(n_ctx=2048))
    yield backend
    backend.close()


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["free", "extractive"])
def test_prompt_examples_never_enter_the_bank_with_the_embedded_model(make_bank, real_embedder, embedded_backend,
                                                                      tmp_path, mode):
    """The real SmolLM2-135M and all-MiniLM-L6-v2, the gate on (its cosine included)."""
    bank = make_bank(tmp_path / f"{mode}.sqlite3", real_embedder)
    manager = MemoryManager(bank, embedded_backend, config=ManagerConfig(extraction=mode))
    assert manager.extraction == mode and manager.gate_embedder is real_embedder
    for i, text in enumerate(UNRELATED):
        manager.process_turn(text, speaker="Maria", time=TIME, turn=f"t:{i}")
    terms = example_only_terms(UNRELATED)
    leaked = [m.text for m in bank.list(status=None)
              if terms & {w.casefold() for w in re.findall(r"[A-Za-z]+", m.text)}]
    assert leaked == []


def test_first_person_model_texts_are_written_about_the_speaker(make_bank):
    """A free-form fact or a decision text in the first person is rewritten about the speaker
    before the gate; "I'm Sam" never becomes the memory "Sam is Sam."."""
    from core.agents import extractive
    from core.agents.manager import ManagerConfig, MemoryManager
    from core.fakes import FakeBackend, router

    bank = make_bank()
    backend = FakeBackend(default=router(facts=["I live in Lisbon.", "Sam is Sam."]))
    manager = MemoryManager(bank, backend, config=ManagerConfig(extraction="free"))
    changes = manager.process_turn("Hi, I'm Sam and I live in Lisbon.", speaker="Sam", turn="t:1")
    assert [m.text for m in changes.added] == ["Sam lives in Lisbon."]
    assert extractive.extract_facts("I'm Sam.", "Sam", None, extractive.keep_all) == []

"""The Memory Manager with the scripted FakeBackend over a real SQLite + sqlite-vec bank.

Covers the issue's "Bad input" cases for the manager: output that is not JSON, an unknown
event, an invented id, an UPDATE with empty text, 50 DELETEs for 3 shown memories, a DELETE of
a memory that was not shown, a 100 KB message. Nothing may change except the valid ops.
"""

from __future__ import annotations

import json
import logging

import pytest

from core.errors import Cancelled, ModelOutputError
from core.fakes import FakeBackend, HashEmbedder
from core.agents.manager import ManagerConfig, MemoryManager, parse_manager_output
from core.types import CancelToken, Memory

TIME = "1:56 pm on 8 May, 2023"


def facts(*items: str) -> str:
    return json.dumps({"facts": list(items)})


def ops(*items: dict) -> str:
    return json.dumps({"memory": list(items)})


def turn(bank, text, *script, speaker="John", **kw):
    """One `process_turn` of `text` by a manager whose backend replays `script` (one reply per
    model call); returns the changes."""
    return MemoryManager(bank, FakeBackend(list(script))).process_turn(text, speaker=speaker, **kw)


@pytest.fixture
def warnings(caplog):
    """The manager's log at WARNING and above, for this test."""
    caplog.set_level(logging.WARNING, logger="core.agents.manager")
    return caplog


def active_texts(bank, speaker=None):
    return sorted(m.text for m in bank.list(speaker=speaker))


def seed(bank, *texts, speaker="John"):
    return [bank.add(t, speaker=speaker, observed_at=TIME, source="seed", actor="user").memory for t in texts]


def test_new_facts_are_added_without_a_decision_call_on_an_empty_bank(bank):
    backend = FakeBackend([facts("John adopted a dog named Buddy.", "John lives in Boston.")])
    changes = MemoryManager(bank, backend).process_turn(
        "I adopted Buddy! We live in Boston.", speaker="John", time=TIME, turn="t:1", source="t:1")
    assert sorted(m.text for m in changes.added) == ["John adopted a dog named Buddy.", "John lives in Boston."]
    assert len(backend.calls) == 1
    assert backend.calls[0]["schema"]["properties"]["facts"]["maxItems"] == 10
    for m in bank.list():
        assert m.speaker == "John" and m.observed_at == TIME and m.source == "t:1"
    events = bank.history()
    assert {e.event for e in events} == {"ADD"} and {e.turn for e in events} == {"t:1"}
    assert {e.actor for e in events} == {"manager"}


def test_extraction_sees_only_the_turn_text(bank):
    seed(bank, "John owns a red bicycle")
    backend = FakeBackend([facts()])
    MemoryManager(bank, backend).process_turn("Hello there!", speaker="John", time=TIME)
    sent = json.dumps(backend.calls[0]["messages"])
    assert "Hello there!" in sent and "red bicycle" not in sent
    assert TIME in backend.calls[0]["messages"][-1]["content"]


def test_no_facts_means_no_change_and_no_decision_call(bank):
    seed(bank, "John owns a red bicycle")
    backend = FakeBackend([facts()])
    changes = MemoryManager(bank, backend).process_turn("hi", speaker="John")
    assert not changes and len(backend.calls) == 1
    assert MemoryManager(bank, backend).process_turn("   ", speaker="John") == changes


def test_exact_duplicate_is_skipped_without_a_model_call(bank):
    seed(bank, "John has a cat named Tom")
    backend = FakeBackend([facts("john has a cat named  Tom")])
    changes = MemoryManager(bank, backend).process_turn("My cat Tom!", speaker="John", turn="t:2")
    assert not changes and changes.noops == 1
    assert len(backend.calls) == 1  # extraction only
    assert active_texts(bank) == ["John has a cat named Tom"]
    assert bank.history()[0].event == "NOOP"


def test_update_consolidates_under_an_alias_never_a_real_id(bank):
    for i in range(6):
        seed(bank, f"Alice collects stamp number {i}", speaker="Alice")  # real ids 1..6, other speaker
    buddy = seed(bank, "John adopted a dog named Buddy")[0]
    assert buddy.id == 7
    backend = FakeBackend([
        facts("John adopted a dog named Scout"),
        ops({"id": "0", "text": "John adopted two dogs, Buddy and Scout", "event": "UPDATE",
             "old_memory": "John adopted a dog named Buddy"}),
    ])
    changes = MemoryManager(bank, backend).process_turn("We adopted Scout too, so we have two dogs now",
                                                      speaker="John", turn="t:3")
    assert [m.id for m in changes.updated] == [buddy.id]
    assert bank.get(buddy.id).text == "John adopted two dogs, Buddy and Scout"
    decision = backend.calls[1]["messages"][-1]["content"]
    assert '"id": "0", "text": "John adopted a dog named Buddy"' in decision
    assert '"id": "7"' not in decision and "stamp" not in decision  # speaker's own memories only
    assert backend.calls[1]["schema"]["properties"]["memory"]["items"]["properties"]["id"]["enum"] == ["0", "1"]
    ev = bank.history(buddy.id)[0]
    assert ev.event == "UPDATE" and ev.old_text == "John adopted a dog named Buddy" and ev.turn == "t:3"


def test_delete_is_soft_and_add_of_the_new_fact_applies(bank):
    pizza = seed(bank, "John likes pizza")[0]
    changes = turn(bank, "I no longer like pizza.", facts("John no longer likes pizza"),
                   ops({"id": "0", "text": "John likes pizza", "event": "DELETE"},
                       {"id": "1", "text": "John no longer likes pizza", "event": "ADD"}))
    assert [m.id for m in changes.deleted] == [pizza.id]
    assert bank.get(pizza.id).status == "deleted"
    assert active_texts(bank) == ["John no longer likes pizza"]


# --------------------------------------------------------------------- bad manager output

def test_output_that_is_not_json_is_retried_once_then_raises(bank, caplog):
    seed(bank, "John likes tea")
    before = bank.history()
    backend = FakeBackend([facts("John likes green tea"), "ADD it please", "still not json {"])
    with caplog.at_level(logging.WARNING, logger="core.agents.manager"), pytest.raises(ModelOutputError) as err:
        MemoryManager(bank, backend).process_turn("green tea!", speaker="John")
    assert len(backend.calls) == 3
    assert backend.calls[2]["params"].temperature > 0  # the retry samples, greedy would repeat itself
    assert "still not json" in err.value.raw
    assert "unparseable" in caplog.text
    assert active_texts(bank) == ["John likes tea"] and bank.history() == before


def test_extraction_failure_is_an_error_never_silently_no_facts(bank):
    backend = FakeBackend(["<html>", RuntimeError("llama exploded")])
    with pytest.raises(ModelOutputError):
        MemoryManager(bank, backend).process_turn("I have a cat", speaker="John")
    assert len(backend.calls) == 2 and bank.list() == []


def test_a_single_bad_output_is_recovered_by_the_retry(bank):
    backend = FakeBackend(["not json", facts("John has a cat")])
    changes = MemoryManager(bank, backend).process_turn("I have a cat", speaker="John")
    assert [m.text for m in changes.added] == ["John has a cat"]


def test_unknown_event_is_dropped_and_the_valid_ops_apply(bank, warnings):
    seed(bank, "John plays tennis")
    changes = turn(bank, "tennis sundays, bike",
                   facts("John plays tennis on Sundays", "John has a bike"),
                   ops({"id": "0", "text": "John plays tennis on Sundays", "event": "MERGE"},
                       {"id": "1", "text": "John has a bike", "event": "ADD"}))
    # the fact of the dropped op is kept (core.agents.updates: no fact vanishes)
    assert [m.text for m in changes.added] == ["John has a bike", "John plays tennis on Sundays"]
    assert not changes.updated and "unknown event" in warnings.text
    assert active_texts(bank) == ["John has a bike", "John plays tennis", "John plays tennis on Sundays"]


def test_invented_id_is_dropped_and_logged(bank, warnings):
    tennis = seed(bank, "John plays tennis")[0]
    changes = turn(bank, "squash", facts("John plays squash"),
                   ops({"id": "17", "text": "John plays squash", "event": "UPDATE"},
                       {"id": "abc", "text": "", "event": "DELETE"}))
    assert [m.text for m in changes.added] == ["John plays squash"]  # kept, not lost with the bad ops
    assert not changes.updated and not changes.deleted
    assert bank.get(tennis.id).text == "John plays tennis" and bank.get(tennis.id).status == "active"
    assert "was not shown" in warnings.text


def test_update_with_empty_text_is_dropped(bank):
    tennis = seed(bank, "John plays tennis")[0]
    changes = turn(bank, "tennis", facts("John plays tennis well"), ops({"id": "0", "text": "   ", "event": "UPDATE"}))
    assert not changes and bank.get(tennis.id).text == "John plays tennis"


def test_fifty_deletes_for_three_shown_memories(bank):
    shown = seed(bank, "John plays tennis", "John plays golf", "John plays chess")
    others = seed(bank, "Mary plays tennis", "Mary plays golf", speaker="Mary")
    changes = turn(bank, "I quit all sports", facts("John plays no sports at all"),
                   ops(*[{"id": str(i % 60), "text": "x", "event": "DELETE"} for i in range(50)]))
    assert sorted(m.id for m in changes.deleted) == sorted(m.id for m in shown)
    assert all(bank.get(m.id).status == "active" for m in others)
    assert len([e for e in bank.history() if e.event == "DELETE"]) == 3


def test_delete_of_a_memory_that_was_not_shown_is_refused(bank, warnings):
    seed(bank, "John plays tennis")
    secret = seed(bank, "Mary hates spiders", speaker="Mary")[0]
    assert secret.id == 2
    # "2" is the unshown memory's real id, and also no alias of this call
    changes = turn(bank, "I play tennis every day", facts("John plays tennis every day"),
                   ops({"id": "2", "text": "Mary hates spiders", "event": "DELETE"},
                       {"id": "0", "text": "John plays tennis every day", "event": "UPDATE"}))
    assert bank.get(secret.id).status == "active"
    assert [m.text for m in changes.updated] == ["John plays tennis every day"] and not changes.deleted
    assert "not shown" in warnings.text


def test_a_hundred_kilobyte_message_is_scanned_in_bounded_chunks(bank):
    text = ("I walked my dog Rex in the park today and it was lovely. " * 1800)[:100_000]
    backend = FakeBackend(default=facts("John walked his dog Rex in the park."))
    changes = MemoryManager(bank, backend).process_turn(text, speaker="John", time=TIME)
    config = ManagerConfig()
    assert len(backend.calls) <= config.max_turn_chars // (config.chunk_chars // 2) + 1
    assert all(len(c["messages"][-1]["content"]) < config.chunk_chars + 200 for c in backend.calls)
    assert [m.text for m in changes.added] == ["John walked his dog Rex in the park."]


def test_cancel_raises_and_writes_nothing(bank):
    token = CancelToken()
    token.cancel()
    backend = FakeBackend([facts("John has a cat")])
    with pytest.raises(Cancelled):
        MemoryManager(bank, backend).process_turn("cat", speaker="John", cancel=token)
    assert bank.list() == []


def test_a_shown_memory_deleted_meanwhile_drops_only_its_op(bank):
    tennis = seed(bank, "John plays tennis")[0]

    def decide(messages, schema):
        bank.delete(tennis.id, actor="user")  # the user deletes it while the model thinks
        return ops({"id": "0", "text": "John plays tennis daily", "event": "UPDATE"},
                   {"id": "1", "text": "John plays the piano", "event": "ADD"})

    backend = FakeBackend([facts("John plays tennis daily", "John plays the piano"), decide])
    changes = MemoryManager(bank, backend).process_turn("tennis and piano", speaker="John")
    assert [m.text for m in changes.added] == ["John plays the piano"] and not changes.updated
    assert bank.get(tennis.id).status == "deleted"


# --------------------------------------------------------------------- pure parsing

def test_parse_manager_output_is_pure_and_strict_about_ids():
    a, b = Memory(11, "Ann has a cat"), Memory(12, "Ann lives in Oslo")
    alias = {"0": a, "1": b}
    raw = ops(
        {"id": "0", "text": "Ann has two cats", "event": "UPDATE"},
        {"id": "0", "text": "", "event": "DELETE"},  # second op on the same memory
        {"id": "1", "text": "Ann lives in Oslo", "event": "UPDATE"},  # same text -> NOOP
        {"id": "2", "text": "Ann likes jazz", "event": "ADD"},
        {"id": "3", "text": "ann likes jazz.", "event": "ADD"},  # repeated ADD
        {"id": "4", "text": "Ann has a cat", "event": "ADD"},  # ADD of a shown memory -> NOOP
        {"id": "5", "text": "x", "event": "delete"},  # lower-case event, unknown id
        {"id": 0, "text": "x", "event": 3},
        "junk",
    )
    out = parse_manager_output(raw, alias, speaker="Ann", observed_at=TIME, source="s")
    assert [(o.event, o.memory_id, o.text) for o in out] == [
        ("UPDATE", 11, "Ann has two cats"),
        ("NOOP", 12, "Ann lives in Oslo"),
        ("ADD", None, "Ann likes jazz"),
        ("NOOP", None, "Ann has a cat"),
    ]
    assert out[0].old_text == "Ann has a cat" and out[2].speaker == "Ann" and out[2].observed_at == TIME
    with pytest.raises(ModelOutputError):
        parse_manager_output("nope", alias)


# --------------------------------------------------------------------- looping small models

def test_a_looping_extraction_is_cut_short_and_kept_distinct(bank):
    loop = '{"facts": ["John has a dog named Rex.", "Rex is brown.", ' + '"Rex is brown.", ' * 40 + '"x"]}'
    backend = FakeBackend([loop], chunk=3)
    pieces: list[str] = []
    original = backend._stream

    def counting(text, cancel):
        for p in original(text, cancel):
            pieces.append(p)
            yield p

    backend._stream = counting
    changes = MemoryManager(bank, backend).process_turn("Rex!", speaker="John")
    assert sorted(m.text for m in changes.added) == ["John has a dog named Rex.", "Rex is brown."]
    assert len("".join(pieces)) < 120  # stopped at the first repeated item, not after 40


def test_a_phrase_loop_inside_one_item_is_cut_and_dropped(bank):
    loop = '{"facts": ["John has a dog.", "Rex is a dog who' + " is a dog who" * 60 + '"]}'
    backend = FakeBackend([loop], chunk=5)
    changes = MemoryManager(bank, backend).process_turn("I have a dog, Rex!", speaker="John")
    assert [m.text for m in changes.added] == ["John has a dog."]


def test_unrelated_memories_are_not_shown_and_the_fact_is_added_directly(bank):
    seed(bank, "Skiing in snowy winter mountains")
    backend = FakeBackend([facts("John adopted a dog named Rex")])
    changes = MemoryManager(bank, backend).process_turn("I adopted a dog named Rex!", speaker="John")
    assert [m.text for m in changes.added] == ["John adopted a dog named Rex"]
    assert len(backend.calls) == 1  # no decision: nothing related enough to show
    shown_all = MemoryManager(bank, FakeBackend([facts("John adopted a cat named Tom"), ops()]),
                              config=ManagerConfig(related_min_score=-1.0))
    shown_all.process_turn("I adopted a cat named Tom!", speaker="John")
    assert len(shown_all.backend.calls) == 2  # with no threshold (Mem0) the model is asked


def test_decisions_can_run_on_a_second_instance(bank):
    seed(bank, "John plays tennis")
    extract = FakeBackend([facts("John plays tennis on Sundays")])
    decide = FakeBackend([ops({"id": "0", "text": "John plays tennis on Sundays", "event": "UPDATE"})])
    config = ManagerConfig()
    changes = MemoryManager(bank, extract, decide_backend=decide, config=config,
                            params=config.extract_params).process_turn("I play tennis on Sundays", speaker="John")
    assert [m.text for m in changes.updated] == ["John plays tennis on Sundays"]
    assert len(extract.calls) == 1 and len(decide.calls) == 1
    assert "facts" in extract.calls[0]["schema"]["properties"] and "memory" in decide.calls[0]["schema"]["properties"]
    assert config == ManagerConfig()  # the params override did not mutate the caller's config


def test_only_facts_with_related_memories_reach_the_decision_call(bank):
    seed(bank, "John plays tennis every Sunday")
    backend = FakeBackend([facts("John plays tennis every Sunday morning", "Snowy winter mountains are far"),
                           ops()])
    changes = MemoryManager(bank, backend, config=ManagerConfig(related_min_score=0.3)).process_turn(
        "I play tennis every Sunday morning. Snowy winter mountains are far.", speaker="John")
    assert [m.text for m in changes.added] == ["Snowy winter mountains are far"]  # unrelated: ADDed directly
    decision = backend.calls[1]["messages"][-1]["content"]
    assert "John plays tennis every Sunday morning" in decision and "Snowy winter" not in decision
    assert backend.calls[1]["schema"]["properties"]["memory"]  # one decision call, for the related fact


def test_the_relatedness_cut_off_follows_the_embedder(bank, tmp_path):
    from core.embeddings import SentenceTransformerEmbedder

    assert MemoryManager(bank, FakeBackend()).related_min_score == HashEmbedder.related_score == 0.1
    assert SentenceTransformerEmbedder.related_score == 0.6
    assert MemoryManager(bank, FakeBackend(), config=ManagerConfig(related_min_score=0.8)).related_min_score == 0.8

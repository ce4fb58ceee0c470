"""The update rules (core.agents.updates): the near-duplicate threshold measured on pairs with
the real embedder, the slot/retraction/correction rules, and the ops `plan_turn` returns with
scripted models over the real bank (pure: the ops, not the bank's supersede support)."""

from __future__ import annotations

import dataclasses

import json

import numpy as np
import pytest

from core.agents import updates
from core.agents.manager import ManagerConfig, MemoryManager
from core.fakes import FakeBackend, decision_inputs, router
from core.types import Memory, MemoryOp

TIME = "1:56 pm on 8 May, 2023"

# the same fact in other words: a near-duplicate
SAME = [("Maria lives in Lisbon.", "Maria's home is Lisbon."),
        ("Maria lives in Lisbon.", "Maria is living in Lisbon."),
        ("John works as a nurse.", "John is a nurse by profession."),
        ("John has a dog named Rex.", "John owns a dog called Rex."),
        ("Sam's favourite band is Muse.", "Sam's favorite band is Muse."),
        ("Anna plays the guitar.", "Anna plays guitar."),
        ("Tom enjoys hiking.", "Tom likes to go hiking."),
        ("Maria moved to Berlin.", "Maria relocated to Berlin."),
        ("Lee works at Google.", "Lee is employed at Google."),
        ("Sam has a cat named Luna.", "Sam's cat is called Luna."),
        ("Maria lives in Berlin.", "Maria moved to Berlin."),
        ("Priya loves pizza.", "Priya really likes pizza."),
        ("Ben has two kids.", "Ben has 2 children."),
        ("Kim's birthday is on 3 June.", "Kim was born on 3 June.")]
# another fact (an update, a second pet, a third party, a retraction): never a duplicate
OTHER = [("Maria moved to Berlin.", "Maria lives in Lisbon."),
         ("Maria lives in Berlin.", "Maria lives in Lisbon."),
         ("John works as a teacher.", "John works as a nurse."),
         ("Lee works at Meta.", "Lee works at Google."),
         ("Sam's favourite band is Coldplay.", "Sam's favourite band is Muse."),
         ("John has a cat named Tom.", "John has a dog named Rex."),
         ("John adopted a second dog named Max.", "John has a dog named Rex."),
         ("Anna started learning the piano.", "Anna plays the guitar."),
         ("Maria's sister lives in Paris.", "Maria lives in Lisbon."),
         ("Maria no longer lives in Lisbon.", "Maria lives in Lisbon."),
         ("Tom sold his car.", "Tom owns a red car."),
         ("Tom no longer plays tennis.", "Tom plays tennis."),
         ("Sam's dog is named Max.", "Sam's dog is named Rex."),
         ("Kim's birthday is on 4 June.", "Kim's birthday is on 3 June."),
         ("Ben has three kids.", "Ben has two kids."),
         ("Maria moved from Lisbon to Berlin.", "Maria lives in Lisbon."),
         ("John quit his job at the bank.", "John works at a bank.")]


def _cos(embedder, pairs):
    vecs = embedder.embed([t for pair in pairs for t in pair])
    return [float(vecs[2 * i] @ vecs[2 * i + 1]) for i in range(len(pairs))]


def test_near_duplicate_threshold_separates_the_pairs_with_the_real_embedder(real_embedder):
    same, other = _cos(real_embedder, SAME), _cos(real_embedder, OTHER)
    kept_same = [updates.same_fact(a, b, c) for (a, b), c in zip(SAME, same)]
    kept_other = [updates.same_fact(a, b, c) for (a, b), c in zip(OTHER, other)]
    guarded = [c for (a, b), c in zip(OTHER, other)
               if updates.names_numbers(a) <= updates.names_numbers(b)
               and updates.is_negation(a) == updates.is_negation(b)]
    print(f"same fact: cosine {min(same):.3f}-{max(same):.3f}; other facts: {min(other):.3f}-{max(other):.3f}, "
          f"past the name/number/negation guards at most {max(guarded):.3f}; threshold {updates.DUPLICATE_COSINE}")
    assert all(kept_same) and not any(kept_other)
    assert max(guarded) < updates.DUPLICATE_COSINE - 0.05 < updates.DUPLICATE_COSINE + 0.03 < min(same)
    assert max(other) >= updates.DUPLICATE_COSINE  # the cosine alone would not do


@pytest.mark.parametrize("new, old, rule", [
    ("Maria moved to Berlin the week before 8 May 2023.", "Maria lives in Lisbon.", "slot"),
    ("Maria moved from Lisbon to Berlin.", "Maria lives in Lisbon.", "slot"),
    ("Maria started a new job as a teacher.", "Maria works as a nurse.", "slot"),
    ("Maria works at Meta now.", "Maria works at Google.", "slot"),
    ("Maria's favourite band is Coldplay now.", "Maria's favourite band is Muse.", "slot"),
    ("Maria has three kids.", "Maria has 2 kids.", "slot"),
    ("Maria sold Maria's car on 7 May 2023.", "Maria owns a red car.", "retraction"),
    ("Maria doesn't play tennis any more.", "Maria plays tennis every Sunday.", "retraction"),
    ("Maria quit Maria's job at the bank.", "Maria works at a bank.", "retraction"),
    ("Maria is no longer a vegetarian.", "Maria is a vegetarian.", "retraction"),
    ("Maria's dog is called Max.", "Maria's dog is called Rex.", "correction"),
    # not a replacement
    ("Maria adopted a second dog named Max.", "Maria has a dog named Rex.", None),
    ("Maria started learning the piano.", "Maria plays the guitar.", None),
    ("Maria's brother moved to Berlin.", "Maria lives in Lisbon.", None),
    ("Maria's sister's favourite colour is red.", "Maria's favourite colour is blue.", None),
    ("Maria's favourite food is sushi.", "Maria's favourite colour is blue.", None),
    ("Maria works at St Mary's hospital.", "Maria works as a nurse.", None),
    ("Maria lives in New York City.", "Maria lives in New York.", None),
    ("Maria doesn't eat meat.", "Maria is a vegetarian.", None),
    ("Maria no longer lives in Lisbon.", "Maria lives in Porto.", None),
    ("Maria has a dog named Max.", "Maria has a dog named Rex.", None),  # no correction said
])
def test_rules(new, old, rule):
    turn = "Actually, his name is Max." if rule == "correction" else new
    assert updates.superseded_by_rule(new, Memory(1, old, speaker="Maria"), speaker="Maria", turn_text=turn) == rule


def test_rules_need_the_same_speaker_and_an_active_memory():
    old = Memory(1, "John lives in Lisbon.", speaker="John")
    assert updates.superseded_by_rule("John moved to Berlin.", old, speaker="John") == "slot"
    assert updates.superseded_by_rule("John moved to Berlin.", old, speaker="Maria") is None
    gone = Memory(1, "John lives in Lisbon.", speaker="John", status="superseded")
    assert updates.superseded_by_rule("John moved to Berlin.", gone, speaker="John") is None


def _embed_exact(texts):
    """An embedder under which only identical texts are close (so no paraphrase counts)."""
    rows = np.zeros((len(texts), 64), dtype=np.float32)
    for i, t in enumerate(texts):
        rows[i, hash(t) % 64] = 1.0
    return rows


def test_reconcile_keeps_dropped_facts_and_supersedes_once():
    lisbon = Memory(1, "Maria lives in Lisbon.", speaker="Maria")
    rex = Memory(2, "Maria has a dog named Rex.", speaker="Maria")
    prov = {"speaker": "Maria", "observed_at": TIME, "source": "t:2"}
    ops = [MemoryOp("NOOP", text="Maria moved to Berlin.", memory_id=1, **prov)]
    done = updates.reconcile(ops, ["Maria moved to Berlin.", "Maria got a cat.", "Maria has a dog named Rex."],
                             [lisbon, rex], embed=_embed_exact, speaker="Maria", provenance=prov)
    assert [(o.event, o.text, o.supersedes) for o in done.ops] == [
        ("ADD", "Maria moved to Berlin.", 1), ("ADD", "Maria got a cat.", None)]
    assert all(o.observed_at == TIME and o.source == "t:2" for o in done.ops)
    assert done.superseded == [("Maria moved to Berlin.", 1, "slot")]
    # a memory the model UPDATEs is left to the model; ruled=False supersedes nothing
    upd = [MemoryOp("UPDATE", text="Maria lives in Berlin.", memory_id=1, old_text=lisbon.text)]
    again = updates.reconcile(upd + [MemoryOp("ADD", text="Maria moved to Berlin.")], [], [lisbon],
                              embed=_embed_exact, speaker="Maria", provenance=prov)
    assert [o.supersedes for o in again.ops] == [None, None]
    off = updates.reconcile([], ["Maria moved to Berlin."], [lisbon], embed=_embed_exact, speaker="Maria",
                            provenance=prov, ruled=False)
    assert [(o.event, o.supersedes) for o in off.ops] == [("ADD", None)]


def _none(messages):
    shown, facts = decision_inputs(messages)
    return json.dumps({"memory": [{"id": "0", "text": f, "event": "NONE"} for f in facts]})


def _plan(bank, facts, decide=_none, text="x", config=None, speaker="Maria"):
    """The scripted facts are not said in `text`: the grounding gate is off here (the update
    rules are under test; the gate has its own tests)."""
    backend = FakeBackend(default=router(facts=facts, decide=decide))
    config = dataclasses.replace(config or ManagerConfig(), gate=False)
    return MemoryManager(bank, backend, config=config).plan_turn(text, speaker=speaker, time=TIME, source="t:2")


def test_plan_turn_keeps_a_fact_the_model_answered_none_for(make_bank, real_embedder):
    bank = make_bank(embedder=real_embedder)
    rex = bank.add("Maria has a dog named Rex.", speaker="Maria").memory
    ops = _plan(bank, ["Maria adopted a second dog named Max.", "Maria owns a dog called Rex."])
    assert [(o.event, o.text, o.supersedes) for o in ops if o.event == "ADD"] == [
        ("ADD", "Maria adopted a second dog named Max.", None)]
    assert [(o.event, o.memory_id) for o in ops if o.event == "NOOP"] == [("NOOP", rex.id)]  # the paraphrase
    assert all(o.speaker == "Maria" and o.observed_at == TIME and o.source == "t:2" for o in ops)
    off = _plan(bank, ["Maria adopted a second dog named Max."], config=ManagerConfig(updates=False))
    assert [o.event for o in off] == ["NOOP"]  # today's behaviour: the fact is lost


def test_plan_turn_supersedes_a_move_a_model_add_and_an_unrelated_slot(make_bank, real_embedder):
    bank = make_bank(embedder=real_embedder)
    lisbon = bank.add("Maria lives in Lisbon.", speaker="Maria").memory
    nurse = bank.add("Maria works as a nurse.", speaker="Maria").memory
    john = bank.add("John lives in Lisbon.", speaker="John").memory
    ops = _plan(bank, ["Maria moved to Berlin.", "Maria started a new job as a teacher."])
    assert {(o.text, o.supersedes) for o in ops if o.event == "ADD"} == {
        ("Maria moved to Berlin.", lisbon.id), ("Maria started a new job as a teacher.", nurse.id)}
    assert john.id not in {o.supersedes for o in ops}

    def add_all(messages):
        shown, facts = decision_inputs(messages)
        return json.dumps({"memory": [{"id": str(len(shown) + i), "text": f, "event": "ADD"}
                                      for i, f in enumerate(facts)]})
    ops = _plan(bank, ["Maria moved to Porto."], decide=add_all)
    assert [(o.event, o.supersedes) for o in ops] == [("ADD", lisbon.id)]
    no_rule = _plan(bank, ["Maria moved to Porto."], config=ManagerConfig(supersede=False))
    assert [(o.event, o.supersedes) for o in no_rule] == [("NOOP", None), ("ADD", None)]  # the model's NONE


def test_plan_turn_a_correction_needs_the_turn_to_say_so(make_bank, real_embedder):
    bank = make_bank(embedder=real_embedder)
    rex = bank.add("Maria's dog is called Rex.", speaker="Maria").memory
    said = _plan(bank, ["Maria's dog is called Max."], text="Actually, his name is Max.")
    assert [(o.event, o.supersedes) for o in said] == [("ADD", rex.id)]
    plain = _plan(bank, ["Maria's dog is called Max."], text="My dog is called Max.")
    assert [(o.event, o.memory_id, o.supersedes) for o in plain] == [("NOOP", rex.id, None), ("ADD", None, None)]


def test_plan_turn_keeps_a_fact_the_duplicate_check_would_take_for_another(make_bank, real_embedder):
    """"three kids" and "two kids" score above the manager's 0.95 duplicate cosine: the
    number decides."""
    bank = make_bank(embedder=real_embedder)
    two = bank.add("Maria has two kids.", speaker="Maria").memory
    vecs = real_embedder.embed(["Maria has three kids.", two.text])
    assert float(vecs[0] @ vecs[1]) >= ManagerConfig().duplicate_threshold
    off = _plan(bank, ["Maria has three kids."], config=ManagerConfig(updates=False))
    assert [(o.event, o.memory_id) for o in off] == [("NOOP", two.id)]  # today: taken for the old one
    ops = _plan(bank, ["Maria has three kids."])
    assert [(o.event, o.text, o.supersedes) for o in ops] == [("ADD", "Maria has three kids.", two.id)]


def test_an_add_whose_superseded_memory_vanished_is_still_applied(make_bank, real_embedder):
    """The bank refuses an op on a memory deleted meanwhile (here: the UPDATE of a memory
    the user deleted); the retry keeps the kept ADD and drops its link to a gone memory."""
    bank = make_bank(embedder=real_embedder)
    lisbon = bank.add("Maria lives in Lisbon.", speaker="Maria").memory
    manager = MemoryManager(bank, FakeBackend(default=router(facts=["Maria moved to Berlin."])))
    plan = manager.plan_turn

    def plan_then_delete(*args, **kw):
        ops = plan(*args, **kw)
        assert [o.supersedes for o in ops if o.event == "ADD"] == [lisbon.id]
        bank.delete(lisbon.id)
        return ops + [MemoryOp("UPDATE", text="Maria lived in Lisbon.", memory_id=lisbon.id)]

    manager.plan_turn = plan_then_delete
    changes = manager.process_turn("I moved to Berlin.", speaker="Maria", time=TIME)
    assert [m.text for m in changes.added] == ["Maria moved to Berlin."]


def test_plan_turn_adds_one_of_two_paraphrases_in_one_turn(make_bank, real_embedder):
    bank = make_bank(embedder=real_embedder)
    ops = _plan(bank, ["Maria works as a nurse.", "Maria is a nurse by profession.", "Maria has a cat."])
    assert [(o.event, o.text) for o in ops] == [
        ("ADD", "Maria works as a nurse."), ("NOOP", "Maria is a nurse by profession."), ("ADD", "Maria has a cat.")]
    off = _plan(bank, ["Maria works as a nurse.", "Maria is a nurse by profession."],
                config=ManagerConfig(updates=False))
    assert [o.event for o in off] == ["ADD", "ADD"]


# --------------------------------------------------------------------------- session 6 rules

@pytest.mark.parametrize("new,old,turn,rule", [
    # "we" (the extractive rewrite: "Maria and others") includes the speaker
    ("Maria and others moved to Berlin.", "Maria lives in Lisbon.", "We moved to Berlin.", "slot"),
    ("Maria moved back to Lisbon in July.", "Maria and others moved to Berlin.", "I moved back.", "slot"),
    # a leading "Now" and a leading resolved date are read past
    ("Now Maria works at Meta.", "Maria works at Google.", "Now I work at Meta.", "slot"),
    ("Two weeks before 20 June 2023 Maria moved to Paris.", "Maria lives in Lisbon.", "Two weeks ago I moved", "slot"),
    ("On 7 May 2023 Maria moved to Oslo.", "Maria lives in Lisbon.", "Yesterday I moved to Oslo.", "slot"),
    # corrections that do not repeat the subject
    ("Actually, his name is Max.", "Maria's dog is called Rex.", "Actually, his name is Max.", "correction"),
    ("Sorry, it's actually on 4 June.", "Maria's birthday is on 3 June.", "Sorry, it's actually on 4 June.",
     "correction"),
    # ... need the turn to correct, a swap of the same kind, and a short pronoun-led text
    ("His name is Max.", "Maria's dog is called Rex.", "His name is Max.", None),
    ("Actually, his name is Max.", "Maria's birthday is on 3 June.", "Actually, his name is Max.", None),
    ("Actually, it's on 4 June.", "Maria's dog is called Rex.", "Actually, it's on 4 June.", None),
    ("Actually, it was a long and very tiring trip to Rome with Ann.", "Maria's dog is called Rex.",
     "Actually, it was a long and very tiring trip to Rome with Ann.", None),
    # a third party's "and others" is not the speaker
    ("Maria's brother and others moved to Berlin.", "Maria lives in Lisbon.", "My brother moved.", None),
])
def test_session_6_rules(new, old, turn, rule):
    assert updates.superseded_by_rule(new, Memory(1, old, speaker="Maria"), speaker="Maria", turn_text=turn) == rule


def test_session_6_rules_can_be_switched_off(monkeypatch):
    old = Memory(1, "Maria lives in Lisbon.", speaker="Maria")
    monkeypatch.setattr(updates, "WE_INCLUDES_SPEAKER", False)
    assert updates.superseded_by_rule("Maria and others moved to Berlin.", old, speaker="Maria") is None
    monkeypatch.setattr(updates, "LEADING_NOW", False)
    assert updates.superseded_by_rule("Now Maria works at Meta.", Memory(1, "Maria works at Google.", speaker="Maria"),
                                      speaker="Maria") is None
    monkeypatch.setattr(updates, "LEADING_TIME", False)
    assert updates.superseded_by_rule("On 7 May 2023 Maria moved to Oslo.", old, speaker="Maria") is None
    monkeypatch.setattr(updates, "PRONOUN_CORRECTIONS", False)
    dog = Memory(1, "Maria's dog is called Rex.", speaker="Maria")
    assert updates.superseded_by_rule("Actually, his name is Max.", dog, speaker="Maria",
                                      turn_text="Actually, his name is Max.") is None
    assert not updates.wants_candidates("His name is Max.", "Maria")
    monkeypatch.setattr(updates, "ORDINAL_CHILDREN", False)
    assert updates.slot_of("Maria and others just had Maria's third child.", "Maria") is None


def test_an_ordinal_child_fills_the_children_slot_and_repeats_a_stated_count():
    slot = updates.slot_of("Maria and others just had Maria's third child.", "Maria")
    assert (slot.subject, slot.attribute, slot.value, slot.derived) == ("maria", "children", "3", True)
    old = Memory(1, "Maria has two kids.", speaker="Maria")
    facts = ["Maria and others just had Maria's third child.", "Maria has three kids now."]
    done = updates.reconcile([], facts, [old], embed=_embed_exact, speaker="Maria", provenance={"speaker": "Maria"},
                             turn_text="We just had our third child, so I have three kids now.", candidates=[old])
    adds = [op for op in done.ops if op.event == "ADD"]
    assert [op.text for op in adds] == ["Maria has three kids now."] and adds[0].supersedes == 1
    assert done.repeats == [facts[0]]
    # alone, the event supersedes the old count itself
    done = updates.reconcile([], facts[:1], [old], embed=_embed_exact, speaker="Maria", provenance={},
                             turn_text="We just had our third child!", candidates=[old])
    assert [(op.event, op.supersedes) for op in done.ops] == [("ADD", 1)]

"""The scenario set: short multi-turn cases with the bank expected after each turn.

Shared by the fast rule tests (tests/core/agents/test_scenarios.py: scripted models, the real
bank) and the benchmark with the real embedded model (benchmarks/scenarios.py). Each `Step` is
one turn (speaker, time, text), the facts a good extractor gives for it (`facts`, used only
by scripted runs) and an `Expect`ation of the bank after it, written robustly as keyword
sets: a keyword set matches a memory when every keyword occurs in its lower-cased text.

`check(memories, expect, superseded_ids)` lists what does not hold; `superseded_ids` are
memories counted as superseded though the bank shows them otherwise (a bank without
supersede support, where the runner emulates it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import AbstractSet, Sequence

from core.types import Memory

T1 = "1:56 pm on 8 May, 2023"
T2 = "10:04 am on 20 June, 2023"
T3 = "6:30 pm on 2 August, 2023"
Keys = tuple[str, ...]


@dataclass(frozen=True)
class Expect:
    """active: each keyword set matches an active memory; absent: none matches an active
    memory; superseded: each matches a superseded one; count: the number of active
    memories (None: any)."""

    active: tuple[Keys, ...] = ()
    absent: tuple[Keys, ...] = ()
    superseded: tuple[Keys, ...] = ()
    count: int | None = None


@dataclass(frozen=True)
class Step:
    speaker: str
    time: str
    text: str
    facts: tuple[str, ...] = ()
    expect: Expect = field(default_factory=Expect)


@dataclass(frozen=True)
class Scenario:
    name: str
    kind: str
    steps: tuple[Step, ...]

    @property
    def supersedes(self) -> bool:
        """Whether any step expects a superseded memory."""
        return any(s.expect.superseded for s in self.steps)


def _m(text: str, keys: Keys) -> bool:
    low = text.lower()
    return all(k.lower() in low for k in keys)


def check(memories: Sequence[Memory], expect: Expect, superseded_ids: AbstractSet[int] = frozenset()) -> list[str]:
    """What of `expect` does not hold for `memories` (every status); [] when all holds."""
    active = [m for m in memories if m.status == "active" and m.id not in superseded_ids]
    gone = [m for m in memories if m.status == "superseded" or m.id in superseded_ids]
    bad = [f"no active memory with {list(k)}" for k in expect.active if not any(_m(m.text, k) for m in active)]
    bad += [f"active memory with {list(k)}: {[m.text for m in active if _m(m.text, k)]}"
            for k in expect.absent if any(_m(m.text, k) for m in active)]
    bad += [f"no superseded memory with {list(k)}" for k in expect.superseded if not any(_m(m.text, k) for m in gone)]
    if expect.count is not None and len(active) != expect.count:
        bad.append(f"{len(active)} active memories, expected {expect.count}: {[m.text for m in active]}")
    return bad


def S(name: str, kind: str, *steps: Step) -> Scenario:
    return Scenario(name, kind, steps)


def M(text: str, *facts: str, speaker: str = "Maria", time: str = T1, active=(), absent=(), superseded=(),
      count=None) -> Step:
    return Step(speaker, time, text, tuple(facts), Expect(tuple(active), tuple(absent), tuple(superseded), count))


LISBON = M("Hi! I live in Lisbon.", "Maria lives in Lisbon.", active=[("maria", "lisbon")], count=1)

SCENARIOS: tuple[Scenario, ...] = (
    S("move", "move", LISBON,
      M("I moved to Berlin last week.", "Maria moved to Berlin the week before 20 June 2023.", time=T2,
        active=[("berlin",)], absent=[("lives in lisbon",)], superseded=[("lives in lisbon",)], count=1)),
    S("move from to", "move", LISBON,
      M("I moved from Lisbon to Berlin.", "Maria moved from Lisbon to Berlin.", time=T2,
        active=[("to berlin",)], absent=[("lives in lisbon",)], superseded=[("lives in lisbon",)], count=1)),
    S("move and back", "move", LISBON,
      M("We moved to Berlin.", "Maria moved to Berlin.", time=T2, superseded=[("lives in lisbon",)], count=1),
      M("I moved back to Lisbon in July.", "Maria moved back to Lisbon in July 2023.", time=T3,
        active=[("back to lisbon",)], absent=[("to berlin",)], superseded=[("to berlin",)], count=1)),
    S("move plus a new fact", "move", LISBON,
      M("I moved to Berlin and I got a cat.", "Maria moved to Berlin.", "Maria got a cat.", time=T2,
        active=[("berlin",), ("cat",)], absent=[("lives in lisbon",)], superseded=[("lives in lisbon",)], count=2)),
    S("home paraphrase", "paraphrase", LISBON,
      M("My home is Lisbon.", "Maria's home is Lisbon.", time=T2, active=[("lisbon",)], count=1)),
    S("living paraphrase", "paraphrase", LISBON,
      M("Yes, I'm living in Lisbon.", "Maria is living in Lisbon.", time=T2, count=1)),
    S("dog paraphrase", "paraphrase",
      M("I have a dog named Rex.", "Maria has a dog named Rex.", count=1),
      M("I own a dog called Rex.", "Maria owns a dog called Rex.", time=T2, active=[("rex",)], count=1)),
    S("exact repeat", "paraphrase", LISBON,
      M("I live in Lisbon.", "Maria lives in Lisbon.", time=T2, count=1)),
    S("job title", "job", M("I work as a nurse.", "Maria works as a nurse.", count=1),
      M("I started a new job as a teacher.", "Maria started a new job as a teacher.", time=T2,
        active=[("teacher",)], absent=[("nurse",)], superseded=[("nurse",)], count=1)),
    S("employer", "job", M("I work at Google.", "Maria works at Google.", count=1),
      M("Now I work at Meta.", "Maria works at Meta now.", time=T2,
        active=[("meta",)], absent=[("google",)], superseded=[("google",)], count=1)),
    S("title and employer", "job", M("I work as a nurse.", "Maria works as a nurse.", count=1),
      M("I work at St Mary's hospital.", "Maria works at St Mary's hospital.", time=T2,
        active=[("nurse",), ("hospital",)], count=2)),
    S("quit job", "job", M("I work at a bank.", "Maria works at a bank.", count=1),
      M("I quit my job at the bank.", "Maria quit Maria's job at the bank.", time=T2,
        active=[("quit",)], absent=[("works at a bank",)], superseded=[("works at a bank",)], count=1)),
    S("favourite band", "preference",
      M("My favourite band is Muse.", "Maria's favourite band is Muse.", count=1),
      M("My favourite band is Coldplay now.", "Maria's favourite band is Coldplay now.", time=T2,
        active=[("coldplay",)], absent=[("muse",)], superseded=[("muse",)], count=1)),
    S("two favourites", "preference",
      M("My favourite colour is blue.", "Maria's favourite colour is blue.", count=1),
      M("My favourite food is sushi.", "Maria's favourite food is sushi.", time=T2,
        active=[("blue",), ("sushi",)], count=2)),
    S("a second love", "preference", M("I love sushi.", "Maria loves sushi.", count=1),
      M("I also love pizza.", "Maria also loves pizza.", time=T2, active=[("sushi",), ("pizza",)], count=2)),
    S("second pet", "second pet", M("I have a dog named Rex.", "Maria has a dog named Rex.", count=1),
      M("I adopted a second dog named Max.", "Maria adopted a second dog named Max.", time=T2,
        active=[("rex",), ("max",)], count=2)),
    S("a cat too", "second pet", M("I have a dog named Rex.", "Maria has a dog named Rex.", count=1),
      M("We also have a cat called Luna.", "Maria has a cat called Luna.", time=T2,
        active=[("rex",), ("luna",)], count=2)),
    S("second hobby", "second hobby", M("I play the guitar.", "Maria plays the guitar.", count=1),
      M("I started learning the piano.", "Maria started learning the piano.", time=T2,
        active=[("guitar",), ("piano",)], count=2)),
    S("a fact about the dog", "new fact", M("I have a dog named Rex.", "Maria has a dog named Rex.", count=1),
      M("Rex loves the beach.", "Maria's dog Rex loves the beach.", time=T2,
        active=[("has a dog named rex",), ("beach",)], count=2)),
    S("brother moved", "third party", LISBON,
      M("My brother moved to Berlin.", "Maria's brother moved to Berlin.", time=T2,
        active=[("lives in lisbon",), ("brother", "berlin")], count=2)),
    S("sister's favourite", "third party",
      M("My favourite colour is blue.", "Maria's favourite colour is blue.", count=1),
      M("My sister's favourite colour is red.", "Maria's sister's favourite colour is red.", time=T2,
        active=[("blue",), ("sister", "red")], count=2)),
    S("sister moves", "third party",
      M("My sister lives in Lisbon.", "Maria's sister lives in Lisbon.", count=1),
      M("I moved to Porto.", "Maria moved to Porto.", time=T2, active=[("sister", "lisbon"), ("porto",)], count=2)),
    S("dog's name", "correction", M("My dog is called Rex.", "Maria's dog is called Rex.", count=1),
      M("Actually, his name is Max.", "Maria's dog is called Max.", time=T2,
        active=[("max",)], absent=[("rex",)], superseded=[("rex",)], count=1)),
    S("city", "correction", M("I live in Porto.", "Maria lives in Porto.", count=1),
      M("Sorry, I meant I live in Lisbon.", "Maria lives in Lisbon.", time=T2,
        active=[("lisbon",)], absent=[("porto",)], superseded=[("porto",)], count=1)),
    S("birthday", "correction", M("My birthday is on 3 June.", "Maria's birthday is on 3 June.", count=1),
      M("Sorry, it's actually on 4 June.", "Maria's birthday is on 4 June.", time=T2,
        active=[("4 june",)], absent=[("3 june",)], superseded=[("3 june",)], count=1)),
    S("sold the car", "retraction", M("I own a red car.", "Maria owns a red car.", count=1),
      M("I sold my car yesterday.", "Maria sold Maria's car on 19 June 2023.", time=T2,
        active=[("sold",)], absent=[("owns a red car",)], superseded=[("red car",)], count=1)),
    S("no more tennis", "retraction",
      M("I play tennis every Sunday.", "Maria plays tennis every Sunday.", count=1),
      M("I don't play tennis any more.", "Maria doesn't play tennis any more.", time=T2,
        absent=[("plays tennis every sunday",)], superseded=[("sunday",)], count=1)),
    S("no longer vegetarian", "retraction", M("I'm a vegetarian.", "Maria is a vegetarian.", count=1),
      M("I'm no longer a vegetarian.", "Maria is no longer a vegetarian.", time=T2,
        active=[("no longer",)], superseded=[("is a vegetarian",)], count=1)),
    S("vegetarian in other words", "paraphrase", M("I'm a vegetarian.", "Maria is a vegetarian.", count=1),
      M("I don't eat meat.", "Maria doesn't eat meat.", time=T2, active=[("is a vegetarian",)])),
    S("kids", "update", M("I have two kids.", "Maria has two kids.", count=1),
      M("We just had our third child, so I have three kids now.", "Maria has three kids now.", time=T2,
        active=[("three kids",)], absent=[("two kids",)], superseded=[("two kids",)], count=1)),
    S("small talk", "small talk", LISBON,
      M("Haha ok.", time=T2, count=1), M("Sure, sounds good!", time=T2, count=1)),
    S("greeting only", "small talk", M("Hi John! How are you?", count=0)),
    S("a question", "question", LISBON,
      M("Where do I live?", time=T2, absent=[("not sure",)], count=1)),
    S("a question that states", "question",
      M("Should I take my dog Rex to the vet?", "Maria has a dog named Rex.", active=[("dog", "rex")], count=1)),
    S("a request", "request", M("Please book a table for two at 7.", count=0),
      M("Can you remind me to call my mom tomorrow?", time=T2, count=0)),
    S("relative date", "relative date",
      M("I adopted a puppy last week.", "Maria adopted a puppy the week before 8 May 2023.",
        active=[("puppy", "8 may 2023")], count=1)),
    S("relative date move", "relative date", LISBON,
      M("Two weeks ago I moved to Paris.", "Maria moved to Paris two weeks before 20 June 2023.", time=T2,
        active=[("paris",)], superseded=[("lives in lisbon",)], count=1)),
    S("two speakers", "two speakers", LISBON,
      M("I live in Berlin.", "John lives in Berlin.", speaker="John", time=T2,
        active=[("maria", "lisbon"), ("john", "berlin")], count=2),
      M("I just moved to Paris.", "John just moved to Paris.", speaker="John", time=T3,
        active=[("maria", "lisbon"), ("john", "paris")], absent=[("john", "berlin")],
        superseded=[("john", "berlin")], count=2)),
    S("two speakers same job", "two speakers", M("I work as a nurse.", "Maria works as a nurse.", count=1),
      M("I work as a teacher.", "John works as a teacher.", speaker="John", time=T2,
        active=[("maria", "nurse"), ("john", "teacher")], count=2)),
)


def run_scenario(scenario: Scenario, bank, manager_for, *, emulate: bool = True,
                 emulated: set[int] | None = None) -> list[str]:
    """Run each step through `manager_for(step).process_turn` on `bank` and check the bank
    after it; returns the failures ("step N: ...", [] when the scenario holds).

    `emulate`: an ADD's `supersedes` that the bank left active (a bank without supersede
    support) is emulated by deleting the old memory and counting it as superseded (its id
    added to `emulated`, when given)."""
    emulated = set() if emulated is None else emulated
    failures: list[str] = []
    for n, step in enumerate(scenario.steps, start=1):
        manager = manager_for(step)
        planned: list = []
        plan = manager.plan_turn

        def capture(*args, _plan=plan, _planned=planned, **kw):
            ops = _plan(*args, **kw)
            _planned.extend(ops)
            return ops

        manager.plan_turn = capture
        manager.process_turn(step.text, speaker=step.speaker, time=step.time, turn=f"{scenario.name}/{n}")
        if emulate:
            for op in planned:
                if op.supersedes is not None and bank.get(op.supersedes).status == "active":
                    bank.delete(op.supersedes, actor="manager")
                    emulated.add(op.supersedes)
        failures += [f"step {n}: {b}" for b in check(bank.list(status=None), step.expect, emulated)]
    return failures

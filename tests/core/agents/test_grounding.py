"""core/agents/grounding.py: the grounding gate (no model), and benchmarks/grounding.py's data functions."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

from core.agents.grounding import DEFAULT_CONFIG, GateConfig, Source, Verdict, check_fact, is_statement, support_text
from core.agents.grounding_text import parse_time, stem
from core.agents.prompts import FACT_EXAMPLES
from core.fakes import HashEmbedder

SAM_SAID = "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex."
JUNE_5 = "3:00 pm on 5 June, 2023"
MAY_8 = "1:56 pm on 8 May, 2023"
SMALL_TALK = ("Haha ok.", "Sure, sounds good!", SAM_SAID)
EXAMPLE_FACTS = [(who, f) for _, who, _, facts in FACT_EXAMPLES for f in facts]


def ok(fact: str, text: str, speaker: str = "Sam", time: str | None = JUNE_5, **kw) -> bool:
    return check_fact(fact, Source(text, speaker, time, **kw)).ok


# --------------------------------------------------------------------------- invented memories

def test_an_invented_pet_is_rejected_with_the_name_as_the_reason():
    v = check_fact("Sam has a cat named Luna.", Source(SAM_SAID, "Sam", JUNE_5))
    assert not v.ok and v.reason == "not in what was said: 'Luna'" and v.missing == ("Luna",)


def test_what_was_said_is_accepted():
    assert ok("Sam lives in Lisbon.", SAM_SAID)
    assert ok("Sam has a dog named Rex.", SAM_SAID)
    assert ok("Sam's dog is called Rex.", SAM_SAID)


@pytest.mark.parametrize("turn", SMALL_TALK)
@pytest.mark.parametrize("example_speaker,fact", EXAMPLE_FACTS)
def test_prompt_examples_leaking_into_unrelated_turns_are_rejected(turn, example_speaker, fact):
    for speaker in ("Sam", example_speaker):  # also when the user happens to share the example's name
        v = check_fact(fact, Source(turn, speaker, JUNE_5))
        assert not v.ok and v.reason, (fact, turn, speaker)


def test_sentence_start_capitals_months_weekdays_and_i_are_not_names():
    assert ok("Yesterday Sam went hiking.", "I went hiking yesterday!")
    assert ok("Sam said I love Lisbon.", "I love Lisbon.")
    assert ok("Sam went hiking on Saturday.", "I went hiking last Saturday.")


def test_known_names_and_acronyms():
    said = "Thanks for listening! I went to a LGBTQ support group yesterday."
    assert ok("Caroline went to an LGBTQ+ support group.", said, speaker="Caroline")
    assert ok("Caroline told Melanie she went to a support group.", said, speaker="Caroline", names=("Melanie",))
    assert not ok("Caroline told Melanie she went to a support group.", said, speaker="Caroline")


# --------------------------------------------------------------------------- paraphrase, moves, updates

def test_a_move_supports_where_someone_lives_now_and_the_move_itself():
    said = "I moved from Lisbon to Berlin"
    assert ok("Maria lives in Berlin.", said, speaker="Maria")
    assert ok("Maria moved from Lisbon to Berlin.", said, speaker="Maria")
    v = check_fact("Maria lives in Paris.", Source(said, "Maria", JUNE_5))
    assert not v.ok and "'Paris'" in v.reason


def test_an_update_rests_on_the_old_memory_plus_the_new_turn():
    turn = "I moved to Berlin last month."
    fact = "Maria moved from Lisbon to Berlin in May 2023."
    assert ok(fact, turn, speaker="Maria", memory="Maria lives in Lisbon.")
    v = check_fact(fact, Source(turn, "Maria", JUNE_5))  # without the memory, Lisbon comes from nowhere
    assert not v.ok and v.missing == ("Lisbon",)


def test_light_normalisation():
    assert [stem(w) for w in ("runs", "running", "ran")] == ["run"] * 3
    assert stem("children") == stem("kids") and stem("mom") == stem("mother")
    assert ok("Melanie's kids love nature.", "The 2 younger children love nature.", speaker="Melanie")
    assert ok("Sam went on a road trip.", "That roadtrip this past weekend was insane!")


def test_too_little_support_is_rejected():
    v = check_fact("Sam plays the violin in an orchestra.", Source("I love Lisbon in the spring.", "Sam", JUNE_5))
    assert not v.ok and v.reason.startswith("too little of it was said") and v.checks_ok


# --------------------------------------------------------------------------- numbers and dates

def test_numbers_must_have_been_said_in_digits_or_words():
    assert ok("Sam has 2 cats.", "I have two cats.")
    assert ok("Sam is 25.", "I'm twenty-five!")
    assert ok("Sam's bowl was made for Sam's 18th birthday.", "A friend made the bowl for my eighteenth birthday.")
    v = check_fact("Sam has 3 cats.", Source("I have two cats.", "Sam", JUNE_5))
    assert not v.ok and v.missing == ("3",)


def test_relative_dates_resolved_against_the_turn_time_are_accepted():
    assert ok("John adopted a puppy named Buddy on 4 June, 2023.", "Yesterday I adopted a puppy named Buddy.",
              speaker="John")
    assert ok("John moved to Boston in 2022.", "We moved to Boston last year.", speaker="John")
    assert ok("Caroline went to a support group in the week before 8 May, 2023.",
              "I went to a support group last week.", speaker="Caroline", time=MAY_8)
    assert ok("Caroline started transitioning in 2020.", "I started transitioning three years ago.",
              speaker="Caroline", time=MAY_8)
    assert ok("Sam went hiking on 3 June, 2023.", "I went hiking last Saturday.")  # 5 June 2023 was a Monday
    assert ok("Sam goes camping in July 2023.", "We're going camping next month!")


def test_invented_dates_are_rejected():
    v = check_fact("John moved to Boston in 2019.", Source("We moved to Boston last year.", "John", JUNE_5))
    assert not v.ok and v.reason == "not in what was said: '2019'"
    assert not ok("John adopted a puppy on 3 June, 2023.", "Yesterday I adopted a puppy.", speaker="John")
    assert not ok("Sam goes camping in August 2023.", "We're going camping next month!")
    assert not ok("Sam went hiking on Sunday.", "I went hiking last Saturday.")
    assert not ok("John moved to Boston in 2022.", "We moved to Boston last year.", speaker="John", time=None)


def test_turn_times_parse_in_the_formats_the_app_stores():
    assert str(parse_time(MAY_8)) == str(parse_time("2023-05-08T13:56:00")) == "2023-05-08"
    assert parse_time("May 8, 2023").day == 8
    assert parse_time("31 February, 2023") is None and parse_time(None) is None and parse_time("soon") is None


# --------------------------------------------------------------------------- questions and requests

@pytest.mark.parametrize("text,expected", [
    ("Where do I live?", False), ("where do I live", False), ("What's my dog's name", False),
    ("Should I take my dog Rex to the vet?", False), ("Tell me a joke", False), ("Please remind me at 5", False),
    ("I live in Lisbon.", True), ("When I was young I lived in Porto.", True),
    ("Remember that my sister is Anna", True), ("Nature sure refreshes us, huh?", True),
    ("Hi! Where do I live?", True), ("", False), ("   ", False),
])
def test_is_statement(text, expected):
    assert is_statement(text) is expected


def test_a_question_gives_no_memory():
    for fact in ("Sam lives in Lisbon.", "Sam lives somewhere.", "Sam asked where Sam lives.",
                 "Sam wants to know where Sam lives."):
        v = check_fact(fact, Source("Where do I live?", "Sam", JUNE_5))
        assert not v.ok, fact
    assert check_fact("Sam lives somewhere.", Source("Where do I live?", "Sam", JUNE_5)).reason == \
        "a question, not a statement"


def test_a_question_still_gives_what_it_presupposes():
    said = "Should I take my dog Rex to the vet?"
    assert ok("Sam has a dog named Rex.", said)
    v = check_fact("Sam takes Rex to the vet.", Source(said, "Sam", JUNE_5))
    assert not v.ok and v.reason == "a question, not a statement"
    assert support_text(Source(said, "Sam")) == "dog Rex"


def test_a_fact_phrased_as_a_question_is_rejected():
    v = check_fact("Does Sam have a dog?", Source("I have a dog.", "Sam", JUNE_5))
    assert not v.ok and v.reason == "a question, not a statement"


# --------------------------------------------------------------------------- odd input

@pytest.mark.parametrize("fact,text", [
    ("", "I love dogs."), ("   ", "I love dogs."), ("!!!", "I love dogs."), ("Sam loves dogs.", ""),
    ("Sam loves dogs.", "\x00\x00\x00"), ("Sam\x00 loves dogs.", "I love\x00 dogs."),
    ("Sam loves 🐶 dogs.", "I love dogs 🐶🐶!"), ("🐶", "🐶"), ("Sam loves dogs.", "a\x00" * 500_000),
    ("x" * 1_000_000, "I love dogs."), ("Sam loves dogs.", "I love dogs. " * 80_000),
    ("Sam is 1,000,000.5 years old on 99 Smarch, 99999.", "Number 0000 1e9 ١٢٣ ½ Ⅻ"),
    ("Sam's 's '' ’s", "’’ ' s"), (None, None), (12, 34),
])
def test_odd_text_gives_a_clean_verdict(fact, text):
    v = check_fact(fact, Source(text, "Sam", JUNE_5))
    assert isinstance(v, Verdict) and isinstance(v.ok, bool) and 0.0 <= v.support <= 1.0
    assert v.ok or (isinstance(v.reason, str) and "\n" not in v.reason and len(v.reason) < 200)


def test_odd_sources_and_times():
    assert ok("Sam loves dogs.", "I love\x00 dogs 🐶!", time="not a time")
    assert ok("Sam loves dogs.", "I love dogs.", speaker=None, time=None)
    assert not check_fact("Sam loves dogs.", Source("I love dogs.", "Sam", memory="")).reason
    assert check_fact("Sam loves dogs.", Source("", "Sam")).reason == "nothing was said"
    big = "I love dogs. " * 80_000  # past SOURCE_MAX_CHARS: what is read still supports the fact
    assert ok("Sam loves dogs.", big)


# --------------------------------------------------------------------------- the cosine rule

class CountingEmbedder(HashEmbedder):
    def __init__(self) -> None:
        super().__init__()
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return super().embed(texts)


def test_the_embedder_joins_the_support_rule():
    src = Source("I went hiking in the mountains with my sister.", "Sam", JUNE_5)
    fact = "Sam enjoys long hiking trips in the mountains with family."  # partial word support
    plain = check_fact(fact, src)
    assert plain.cosine is None and 0.2 <= plain.support < 1.0
    emb = CountingEmbedder()
    lenient = GateConfig(min_support=1.0, min_support_with_cosine=0.2, cosine_weight=1.0, min_score=0.0)
    strict = GateConfig(min_support=0.0, min_support_with_cosine=0.2, cosine_weight=1.0, min_score=2.5)
    v = check_fact(fact, src, embedder=emb, config=lenient)
    assert v.ok and v.cosine is not None and -1.0 <= v.cosine <= 1.0
    assert emb.calls == [[fact, support_text(src)]]
    s = check_fact(fact, src, embedder=emb, config=strict)
    assert not s.ok and "cosine" in s.reason


def test_the_embedder_is_not_asked_when_an_exact_check_already_failed():
    emb = CountingEmbedder()
    assert not check_fact("Sam has a cat named Luna.", Source(SAM_SAID, "Sam", JUNE_5), embedder=emb).ok
    assert not check_fact("Where is Sam?", Source(SAM_SAID, "Sam", JUNE_5), embedder=emb).ok
    assert emb.calls == []


def test_default_config_is_the_calibrated_one():
    assert DEFAULT_CONFIG == GateConfig()
    assert 0.0 < DEFAULT_CONFIG.min_support_with_cosine <= DEFAULT_CONFIG.min_support <= 1.0


# --------------------------------------------------------------------------- benchmarks/grounding.py

def _bench():
    path = Path(__file__).resolve().parents[3] / "benchmarks" / "grounding.py"
    spec = importlib.util.spec_from_file_location("bench_grounding", path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses look their module up while the class is made
    spec.loader.exec_module(mod)
    return mod


def _locomo_like(sample_id: str) -> list[dict]:
    conv = {
        "speaker_a": "Ann", "speaker_b": "Bob",
        "session_1_date_time": "1:56 pm on 8 May, 2023",
        "session_1": [
            {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob! I adopted a cat named Mo yesterday."},
            {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice! I'm training for a marathon.",
             "blip_caption": "a photo of running shoes"},
            {"speaker": "Ann", "dia_id": "D1:3", "text": "Good luck! I play the cello in a band."},
        ],
        "session_2_date_time": "2:00 pm on 9 May, 2023",
        "session_2": [
            {"speaker": "Ann", "dia_id": "D2:1", "text": "Mo knocked my cello over, haha."},
            {"speaker": "Bob", "dia_id": "D2:2", "text": "Ouch. The marathon is in June."},
        ],
    }
    obs = {
        "session_1_observation": {
            "Ann": [["Ann adopted a cat named Mo.", "D1:1"], ["Ann plays the cello in a band.", ["D1:3"]]],
            "Bob": [["Bob is training for a marathon.", "D1:2"], ["Bob was never here.", "D9:9"]],
        },
        "session_2_observation": {
            "Ann": [["Mo knocked over Ann's cello.", "D2:1, D1:3"]],
            "Bob": [["Bob's marathon is in June.", "D2:2"]],
        },
    }
    return [{"sample_id": sample_id, "conversation": conv, "observation": obs, "qa": []}]


def test_benchmark_reads_gold_facts_and_builds_pairs(tmp_path):
    bench = _bench()
    (tmp_path / "train.json").write_text(json.dumps(_locomo_like("toy-1")))
    sample, facts = bench.load(tmp_path / "train.json")
    assert [(f.speaker, f.dia_ids) for f in facts] == [
        ("Ann", ("D1:1",)), ("Ann", ("D1:3",)), ("Bob", ("D1:2",)), ("Bob", ("D9:9",)),
        ("Ann", ("D2:1", "D1:3")), ("Bob", ("D2:2",))]
    pairs = bench.pairs(sample, facts)
    pos = [p for p in pairs if p.positive]
    assert len(pos) == 5  # the fact citing a missing turn is skipped
    assert pos[0].source == Source("Hi Bob! I adopted a cat named Mo yesterday.", "Ann", "1:56 pm on 8 May, 2023",
                                   names=("Bob",))
    assert "[shares an image: a photo of running shoes]" in pos[2].source.text  # Turn.full_text
    assert pos[3].source.text.startswith("Mo knocked") and "cello in a band" in pos[3].source.text
    neg = [p for p in pairs if not p.positive and p.fact == "Ann adopted a cat named Mo."]
    assert sorted(p.source.text[:4] for p in neg) == ["Good", "Mo k"]  # every other turn of Ann
    assert bench.baseline_support("Ann adopted a cat named Mo.", pos[0].source) == 1.0


def test_benchmark_runs_end_to_end_on_a_fixture(tmp_path, capsys):
    bench = _bench()
    for split in ("train", "val"):
        (tmp_path / f"{split}.json").write_text(json.dumps(_locomo_like(f"toy-{split}")))
    assert bench.main(["--data", str(tmp_path), "--no-embedder", "--json", "--min-reject", "0.5"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["train"]["sample"] == "toy-train" and report["val"]["positives"] == 5
    assert {"baseline", "gate"} <= set(report["val"]) and "gate+embedder" not in report["val"]
    assert report["leaks_all_as_expected"] is True


# --------------------------------------------------------------------------- a greeted name (session 6)

GREETED = "Hi John! How are you?"


@pytest.mark.parametrize("embedder", [None, "real"], ids=["lexical", "minilm"])
def test_a_name_said_only_in_a_greeting_supports_no_relation(embedder, request):
    emb = request.getfixturevalue("real_embedder") if embedder else None
    v = check_fact("Sam has a brother named John who is a doctor.", Source(GREETED, "Sam", JUNE_5), embedder=emb)
    assert not v.ok and v.reason == "only greeted, not talked about: 'John'"
    for turn in ("Thanks, John! See you.", "Hey John, good morning!", "Hello Jon and Mel!"):
        assert not check_fact("Sam's friend John is a doctor.", Source(turn, "Sam", JUNE_5), embedder=emb).ok


def test_a_greeting_still_lets_the_rest_of_the_turn_and_known_names_through(real_embedder):
    said = Source("Hey John, I adopted a dog last week, his name is Buddy.", "Sam", JUNE_5)
    assert check_fact("Sam adopted a dog named Buddy.", said, embedder=real_embedder).ok
    # the other participant is a known name: a fact may name them (LoCoMo gold facts do)
    said = Source("Hi John! I ran a marathon with my brother.", "Sam", JUNE_5, names=("John",))
    assert check_fact("Sam ran a marathon with Sam's brother.", said, embedder=real_embedder).ok
    # a name said as content, not as an address, supports as before
    assert check_fact("Sam has a brother named John.", Source("Hi! My brother John is a doctor.", "Sam", JUNE_5),
                      embedder=real_embedder).ok


def test_address_is_only_a_greeting_with_a_name():
    from core.agents.grounding_text import address

    assert address("Hi John!") == (("John",), "")
    assert address("Congrats, Mel, that is huge!") == (("Mel",), "that is huge!")
    for kept in ("Hi, I'm Sam.", "Hi! I live in Lisbon.", "Wow, Paris!", "Lisbon is great!", "Hi I moved."):
        assert address(kept) == ((), kept)


def test_a_fact_that_quotes_the_greeting_is_not_refused_for_the_greeted_name():
    src = Source(text="Hi Bob! I adopted a dog named Rex yesterday.", speaker="Ann")
    assert check_fact("Ann said: Hi Bob! I adopted a dog named Rex yesterday.", src).ok
    greeted = Source(text=GREETED, speaker="Sam")
    # the greeting quoted, then a claim about the greeted name: still refused
    v = check_fact("Sam said: Hi John! John is a doctor.", greeted)
    assert not v.ok and v.reason == "only greeted, not talked about: 'John'"

"""Extractive facts: candidates from the turn's own words, a chooser, a deterministic rewrite."""

from __future__ import annotations

import re

import pytest

from core.agents import extractive
from core.agents.extractive import (FIRST_NUMBER, MAX_CANDIDATE_CHARS, MAX_CANDIDATES, candidates,
                                    choice_messages, choice_schema, extract_facts, keep_all,
                                    model_chooser, parse_choice, rewrite, third_person_verb)
from core.agents.reldates import MONTHS
from core.errors import ModelOutputError

TIME = "1:56 pm on 8 May, 2023"
PLAIN_TURNS = [  # (turn, the names every fact must keep)
    ("I adopted a dog from the shelter last week, his name is Buddy", ["Buddy"]),
    ("I moved to Lisbon in March", ["Lisbon"]),
    ("I got a beagle named Scout", ["Scout"]),
    ("I started learning the guitar", ["guitar"]),
]
SMALL_TALK = ["Haha ok.", "Sure, sounds good!", "Hi John!", "How are you?", "Thanks so much!",
              "That's so cool! Talk soon.", "Hey there, how's it going?", "Me too lol", "I love it!"]
DATE_WORDS = {"on", "in", "the", "week", "before", "after", "of", "weekend", "night", "morning"} | {
    m.lower() for m in MONTHS}


def _words(text: str) -> list[str]:
    return re.findall(r"[^\W_]+(?:'[^\W_]+)*", text.lower())


def _explained(word: str, turn_words: set[str], speaker: str) -> bool:
    """A fact's word is the turn's own, the speaker's name, an inflection or a date word."""
    if word in turn_words or word in DATE_WORDS or word.isdigit():
        return True
    if word in {speaker.lower(), f"{speaker.lower()}'s", "has", "is", "does", "doesn't"}:
        return True
    return (word.removesuffix("s") in turn_words or word.removesuffix("es") in turn_words
            or (word.endswith("ies") and word[:-3] + "y" in turn_words))


@pytest.mark.parametrize("turn,names", PLAIN_TURNS)
def test_keep_all_facts_keep_the_names_and_invent_no_word(turn, names):
    facts = extract_facts(turn, "Maria", TIME, keep_all)
    assert facts
    turn_words = set(_words(turn))
    for fact in facts:
        assert "Maria" in fact and all(name in fact for name in names), fact
        assert not re.search(r"\b(?:I|me|my)\b", fact), fact
        strange = [w for w in _words(fact) if not _explained(w, turn_words, "Maria")]
        assert not strange, (fact, strange)


def test_the_adoption_keeps_buddy_and_the_resolved_week():
    assert extract_facts(PLAIN_TURNS[0][0], "Maria", TIME, keep_all) == [
        "Maria adopted a dog from the shelter the week before 8 May 2023, his name is Buddy."]


@pytest.mark.parametrize("turn", SMALL_TALK)
def test_small_talk_gives_no_candidates(turn):
    assert candidates(turn) == []
    assert extract_facts(turn, "Sam", TIME, lambda c: pytest.fail("chooser called")) == []


def test_sentences_and_clauses_split_at_safe_joints_only():
    turn = ("Hey Jon, I went hiking yesterday and I loved it! My sister and I love painting, "
            "but I prefer music; my wife works at a bank. How was your week?")
    assert candidates(turn) == ["I went hiking yesterday", "My sister and I love painting",
                                "I prefer music", "my wife works at a bank"]


def test_a_named_pet_in_a_question_is_the_only_thing_kept_from_it():
    assert candidates("Should I take my dog Rex to the vet?") == ["I have a dog named Rex"]
    assert candidates("Should I take the dog to the vet?") == []
    assert extract_facts("Should I take my dog Rex to the vet?", "Sam", TIME, keep_all) == [
        "Sam has a dog named Rex."]


@pytest.mark.parametrize("text", [
    "", " ", None, 42, b"I like tea", "\x00" * 100, "I like \x00tea\x07.", "\ud800\udfff lone \udc00",
    "🎉" * 10_000, "I got a 🐶 named Scout 🎉🎉", "?!.,;" * 20_000, "a" * 1_000_000,
    "I like tea. " * 100_000, "I went there and I " * 5_000, "Hi " * 100_000 + "!",
    "ok\n" * 50_000, "Dr. Mr. St. e.g. i.e. " * 1_000, "x and my " * 3_000, "x; my " * 4_000,
])
def test_odd_input_never_raises_and_stays_bounded(text):
    cands = candidates(text)
    assert len(cands) <= MAX_CANDIDATES
    assert all(0 < len(c) <= MAX_CANDIDATE_CHARS for c in cands)
    for c in cands:
        assert "\x00" not in c and not re.search(r"[\ud800-\udfff]", c)
        assert rewrite(c, "Sam", TIME)
    assert isinstance(rewrite(text, "Sam", TIME), str)
    assert isinstance(rewrite(text, text, text), str)


def test_relative_dates_in_a_long_text_resolve_in_linear_time():
    from core.agents.reldates import parse_turn_time, resolve_relative_dates

    out = resolve_relative_dates("since yesterday " * 10_000, parse_turn_time(TIME))
    assert out.startswith("since 7 May 2023 since 7 May 2023")


def test_emoji_and_controls_are_removed_from_candidates():
    assert candidates("I got a 🐶 named\x00 Scout 🎉🎉") == ["I got a named Scout"]


@pytest.mark.parametrize("phrase,resolved", [
    ("yesterday", "on 7 May 2023"),
    ("last week", "the week before 8 May 2023"),
    ("last year", "in 2022"),
    ("next month", "in June 2023"),
    ("two days ago", "on 6 May 2023"),
    ("this weekend", "on the weekend of 13 May 2023"),
    ("tomorrow", "on 9 May 2023"),
    ("last Friday", "on 5 May 2023"),
    ("last night", "on the night of 7 May 2023"),
    ("a few weeks ago", "a few weeks before 8 May 2023"),
])
def test_relative_dates_resolved_against_the_turn_time(phrase, resolved):
    assert rewrite(f"I went to Oslo {phrase}", "Sam", TIME) == f"Sam went to Oslo {resolved}."


@pytest.mark.parametrize("time", [None, "", "sometime", "31 February, 2023"])
def test_an_unknown_time_leaves_relative_phrases(time):
    assert rewrite("I went to Oslo yesterday", "Sam", time) == "Sam went to Oslo yesterday."


def test_iso_times_work_too():
    assert rewrite("I start next month", "Sam", "2024-03-01T10:00:00") == "Sam starts in April 2024."


@pytest.mark.parametrize("said,fact", [
    ("I love hiking", "Sam loves hiking."),
    ("I have two cats", "Sam has two cats."),
    ("I'm a nurse", "Sam is a nurse."),
    ("I am not sure about Oslo", "Sam is not sure about Oslo."),
    ("I was a teacher", "Sam was a teacher."),
    ("I can swim", "Sam can swim."),
    ("I don't eat meat", "Sam doesn't eat meat."),
    ("I've been to Rome", "Sam has been to Rome."),
    ("I'll visit Rome", "Sam will visit Rome."),
    ("I'd love a dog", "Sam would love a dog."),
    ("I really enjoy my job", "Sam really enjoys Sam's job."),
    ("I watch films and I study French", "Sam watches films and Sam studies French."),
    ("My wife and I love Rome", "Sam's wife and Sam love Rome."),
    ("I taught myself to code", "Sam taught themselves to code."),
    ("That car is mine", "That car is Sam's."),
    ("We moved to Rome with our kids", "Sam and others moved to Rome with Sam's kids."),
    ("Hey Jon, I got a job", "Sam got a job."),
    ("You helped me a lot", "You helped Sam a lot."),
    ("i love pizza", "Sam loves pizza."),
])
def test_rewrite_to_the_third_person(said, fact):
    assert rewrite(said, "Sam") == fact


def test_speaker_names_are_not_rewritten_again():
    assert rewrite("I like my tea", "Mine") == "Mine likes Mine's tea."
    assert rewrite("I like tea", "") == "The user likes tea."


def test_third_person_verb_leaves_past_and_modals():
    assert [third_person_verb(w) for w in ("fix", "try", "need", "agreed", "went", "must")] == [
        "fixes", "tries", "needs", "agreed", "went", "must"]


# --------------------------------------------------------------------------- the choice step

def test_choice_messages_keep_a_fixed_system_prompt_and_number_the_candidates():
    a = choice_messages(["I got a beagle named Scout", "I moved to Lisbon"], "Sam", TIME)
    b = choice_messages(["I like tea"], "Ann", None)
    assert a[0] == b[0] and a[0]["role"] == "system"
    assert not re.search(r"Scout|Lisbon|Sam|Ann", a[0]["content"])
    assert a[1]["content"].splitlines()[-2:] == [
        f"{FIRST_NUMBER}. I got a beagle named Scout", f"{FIRST_NUMBER + 1}. I moved to Lisbon"]


def test_choice_schema_is_bounded_and_builds_a_grammar():
    from core.llm.native import unbounded_paths

    schema = choice_schema(3)
    keep = schema["properties"]["keep"]
    assert keep["maxItems"] == 3 and keep["items"]["enum"] == [FIRST_NUMBER + i for i in range(3)]
    assert unbounded_paths(schema) == []
    pytest.importorskip("llama_cpp")
    from core.llm.native import json_schema_grammar

    assert json_schema_grammar(schema) is not None
    with pytest.raises(ValueError):
        choice_schema(0)


def test_parse_choice_maps_the_numbers_to_indices():
    f = FIRST_NUMBER
    assert parse_choice(f'{{"keep": [{f + 2}, {f}]}}', 3) == [2, 0]
    assert parse_choice('{"keep": []}', 3) == []


@pytest.mark.parametrize("raw", [
    '{"keep": [1.0]}', '{"keep": ["1"]}', '{"keep": [true]}', '{"keep": [null]}', '{"keep": [[1]]}',
    f'{{"keep": [{FIRST_NUMBER - 1}]}}', f'{{"keep": [{FIRST_NUMBER + 3}]}}', '{"keep": [-1]}',
    f'{{"keep": [{FIRST_NUMBER}, {FIRST_NUMBER}]}}', '{"keep": 1}', '{"keep": null}',
    '{"keep": "1, 2"}', f'[{FIRST_NUMBER}]', f'{{"keep": [{FIRST_NUMBER}], "why": "x"}}', '{}',
    "not json", "", '{"keep": [1', None, 1,
])
def test_parse_choice_refuses_anything_else(raw):
    with pytest.raises(ModelOutputError):
        parse_choice(raw, 3)


@pytest.mark.parametrize("bad", [[0, 0], [5], [-1], ["0"], [True], None, (0,)])
def test_extract_facts_checks_the_chooser_like_a_model(bad):
    with pytest.raises(ModelOutputError):
        extract_facts("I got a beagle named Scout. I moved to Lisbon.", "Sam", TIME, lambda c: bad)


def test_extract_facts_keeps_text_order_and_only_the_chosen():
    turn = "I got a beagle named Scout. Sounds fun! I moved to Lisbon. I started learning the guitar."
    assert extract_facts(turn, "Sam", TIME, lambda c: [2, 0]) == [
        "Sam got a beagle named Scout.", "Sam started learning the guitar."]
    assert extract_facts(turn, "Sam", TIME, lambda c: []) == []


@pytest.mark.slow
def test_the_embedded_model_returns_valid_choices():
    pytest.importorskip("llama_cpp")
    from core.config import ModelSpec
    from core.llm.runtime import load_backend
    from core.types import GenParams

    backend = load_backend(ModelSpec())
    try:
        for turn, _names in PLAIN_TURNS:
            cands = candidates(turn)
            raw = "".join(backend.complete(choice_messages(cands, "Maria", TIME),
                                           params=GenParams(temperature=0.0, max_tokens=64),
                                           schema=choice_schema(len(cands))))
            keep = parse_choice(raw, len(cands))  # raises unless valid indices
            assert all(0 <= k < len(cands) for k in keep), raw
            facts = extract_facts(turn, "Maria", TIME, model_chooser(backend, "Maria", TIME))
            assert set(facts) <= set(extract_facts(turn, "Maria", TIME, keep_all))
    finally:
        backend.close()


# --------------------------------------------------------------------------- the filler filter (session 6)

@pytest.mark.parametrize("text,reason", [
    ("Your passion and commitment are awesome", "listener"),
    ("You're doing amazing", "listener"),
    ("Being yourself is great", "listener"),
    ("Thanks so much, Mel", "reply"),
    ("Sounds great, Caroline", "reply"),
    ("Glad you had a great time", "reply"),
    ("I totally agree, Melanie", "reply"),
    ("Nice spot", "evaluation"),
    ("That bowl is awesome, Mel", "evaluation"),
    ("The pride event was awesome", "evaluation"),
    ("Long time no talk", "evaluation"),
    ("Do you like it", "question"),
    ("Check out the crowd", "question"),
    # kept: first person, names, numbers, a plain opening word, many content words
    ("I'm so proud of you for spreading awareness", None),
    ("I totally get it, I had a mentor too when I was learning how to dance", None),
    ("Rex loves the beach", None),
    ("Luna and Oliver", None),
    ("5 years already", None),
    ("The trip to Paris was great", None),
    ("Family moments make life awesome", None),
    ("Surrounding ourselves with things that bring us joy is important", None),
])
def test_filler_reasons(text, reason):
    assert extractive.filler(text) == reason


def test_the_filter_drops_filler_from_candidates_and_can_be_switched_off(monkeypatch):
    turn = "Thanks, Mel! Your passion and commitment are awesome. Nice spot! I started a pottery class."
    assert candidates(turn) == ["I started a pottery class"]
    monkeypatch.setattr(extractive, "FILTER_FILLER", False)
    assert candidates(turn) == ["Your passion and commitment are awesome", "Nice spot", "I started a pottery class"]


def test_the_filter_keeps_every_scenario_statement():
    """Every scenario turn a good extractor takes facts from keeps all its candidates."""
    from tests.core.agents.scenarios import SCENARIOS

    turns = [step.text for s in SCENARIOS for step in s.steps if step.facts] + [t for t, _ in PLAIN_TURNS]
    for text in turns:
        cands = candidates(text)
        assert cands and all(extractive.filler(c) is None for c in cands), text


def test_the_locomo_measure_on_a_fixture(tmp_path, capsys):
    import importlib.util
    import json
    from pathlib import Path

    spec = importlib.util.spec_from_file_location("bench_extractive", Path(__file__).resolve().parents[3]
                                                  / "benchmarks" / "extractive.py")
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    conv = {"speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": TIME, "session_1": [
        {"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob! I adopted a cat named Mo. Your shoes are great."},
        {"speaker": "Bob", "dia_id": "D1:2", "text": "Thanks so much, Ann! Nice spot. I run marathons."}]}
    obs = {"session_1_observation": {"Ann": [["Ann adopted a cat named Mo.", "D1:1"]],
                                     "Bob": [["Bob runs marathons.", "D1:2"]]}}
    for split in ("train", "val"):
        (tmp_path / f"{split}.json").write_text(json.dumps([{"sample_id": split, "conversation": conv,
                                                             "observation": obs, "qa": []}]))
    assert bench.main(["--locomo", "--data", str(tmp_path), "--json"]) == 0
    report = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    val = report["val"]
    assert val["before"]["candidates"] == 5 and val["after"]["candidates"] == 2
    assert val["before"]["matching"] == val["after"]["matching"] == 2 and val["after"]["gold_covered"] == 2
    assert val["dropped"] == {"listener": 1, "reply": 1, "evaluation": 1} and val["matching_lost"] == {}

"""The Memory Manager's SFT pairs from LoCoMo gold facts (training/data/sft_manager.py) on a small
LoCoMo-shaped fixture: the exact app prompts, the gold choice of candidates, and completions
that the app's own parsers read back to the target."""

from __future__ import annotations

import json

import pytest

from core.agents import extractive, prompts
from core.errors import InvalidInputError
from tests.training.locomo_fixtures import T1, T2, locomo_sample, with_observation, write_locomo
from training.data.gold_facts import facts_by_turn, gold_facts, load_gold
from training.data.sft_manager import build_pairs, choice_completion, extraction_stats

SAMPLE = with_observation(locomo_sample("conv-x", [
    (T1, [{"speaker": "Ann", "dia_id": "D1:1", "text": "Hi Bob! I adopted a dog named Rex yesterday. How are you?"},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "Nice! I moved to Oslo in 2022 and I started a bakery."},
          {"speaker": "Ann", "dia_id": "D1:3", "text": "Haha ok."},
          {"speaker": "Bob", "dia_id": "D1:4", "text": "I play jazz piano on weekends."}]),
    (T2, [{"speaker": "Ann", "dia_id": "D2:1", "text": "Rex loves the beach. It is sunny today."}]),
], []), {
    1: {"Ann": [["Ann adopted a dog named Rex on 7 May, 2023.", "D1:1"]],
        "Bob": [["Bob moved to Oslo in 2022.", ["D1:2"]], ["Bob runs a small bakery he started.", "D1:2"],
                ["Bob was never here.", "D9:9"]]},
    2: {"Ann": [["Rex  loves the beach.", "D2:1, D1:1"]]},
})


@pytest.fixture
def data(tmp_path):
    return write_locomo(tmp_path, SAMPLE)


def test_gold_facts_are_read_per_cited_turn(data):
    facts = gold_facts(SAMPLE)
    assert [f.dia_ids for f in facts] == [("D1:1",), ("D1:2",), ("D1:2",), ("D9:9",), ("D2:1", "D1:1")]
    by_turn = facts_by_turn(facts)
    assert by_turn["D1:1"] == ["Ann adopted a dog named Rex on 7 May, 2023.", "Rex loves the beach."]
    [(sample, gold)] = load_gold(data)
    assert sample.sample_id == "conv-x" and gold == by_turn
    with pytest.raises(InvalidInputError, match="no sample named"):
        load_gold(data, ["conv-none"])


def test_extractive_pairs_choose_the_candidates_that_carry_gold_facts(data):
    pairs = build_pairs(data)
    by_id = {p["id"]: p for p in pairs}
    assert list(by_id) == ["conv-x/D1:1", "conv-x/D1:2", "conv-x/D1:4", "conv-x/D2:1"]  # "Haha ok." makes no call
    expected = {"conv-x/D1:1": [0], "conv-x/D1:2": [0, 1], "conv-x/D1:4": [], "conv-x/D2:1": [0]}
    texts = {t["dia_id"]: t for s in ("session_1", "session_2") for t in SAMPLE["conversation"][s]}
    for pid, pair in by_id.items():
        turn = texts[pid.split("/")[1]]
        when = T2 if pid.endswith("D2:1") else T1
        cands = extractive.candidates(turn["text"])
        assert pair["messages"] == extractive.choice_messages(cands, turn["speaker"], when)  # the app's prompt
        assert extractive.parse_choice(pair["completion"], len(cands)) == expected[pid]  # the app's parser
    assert by_id["conv-x/D1:4"]["completion"] == '{"keep": []}'
    assert by_id["conv-x/D1:2"]["completion"] == '{"keep": [1, 2]}'
    assert choice_completion([2, 0]) == '{"keep": [1, 3]}'


def test_stats_count_turns_candidates_and_choices(data):
    # 5 candidates: "It is sunny today." is filler (extractive.FILTER_FILLER), never offered
    assert extraction_stats(data) == {"turns": 5, "turns_with_gold": 3, "gold_links": 5, "candidates": 5,
                                      "chosen": 4, "pairs": 4, "pairs_with_choice": 3}
    assert extraction_stats(data, max_sessions=1)["turns"] == 4


def test_free_pairs_round_trip_through_the_extractors_parser(data):
    pairs = build_pairs(data, mode="free")
    assert len(pairs) == 5  # every turn is one extraction call in free mode
    for pair in pairs:
        assert pair["messages"][:-1] == prompts.extraction_messages("x", "Ann", T1)[:-1]
        assert pair["messages"][-1]["content"].startswith("Time: ")
        target = json.loads(pair["completion"])["facts"]
        assert prompts.parse_facts(pair["completion"]) == target
    by_id = {p["id"]: json.loads(p["completion"])["facts"] for p in pairs}
    assert by_id["conv-x/D1:1"] == ["Ann adopted a dog named Rex on 7 May, 2023.", "Rex loves the beach."]
    assert by_id["conv-x/D1:3"] == [] and by_id["conv-x/D2:1"] == ["Rex loves the beach."]


def test_bad_arguments_are_user_errors(data):
    with pytest.raises(InvalidInputError, match="extraction mode"):
        build_pairs(data, mode="chatty")
    with pytest.raises(InvalidInputError, match="left to GRPO"):
        build_pairs(data, include_decisions=True)


# a conversation where most turns carry no gold fact (as in LoCoMo: 234 of 320 train pairs empty)
CHATTY = with_observation(locomo_sample("conv-y", [
    (T1, [{"speaker": "Ann", "dia_id": f"D1:{i + 1}", "text": text} for i, text in enumerate((
        "I adopted a dog named Rex yesterday.", "I play chess on Sundays.", "My sister lives in Rome.",
        "I bought a red bike last week.", "I moved to Oslo in 2022.", "I work as a nurse at night.",
        "I like green tea in the morning.", "I started a bakery."))]),
], []), {1: {"Ann": [["Ann adopted a dog named Rex.", "D1:1"], ["Ann moved to Oslo in 2022.", "D1:5"],
                     ["Ann started a bakery.", "D1:8"]]}})


def _empties(pairs):
    return [p["id"] for p in pairs if p["completion"] == '{"keep": []}']


def test_balance_keeps_the_empty_share_with_a_seeded_sample_in_turn_order(tmp_path):
    from training.data.sft_manager import balance_empty, is_empty_choice

    pairs = build_pairs(write_locomo(tmp_path, CHATTY))
    assert len(pairs) == 8 and len(_empties(pairs)) == 5 and sum(map(is_empty_choice, pairs)) == 5
    kept, counts = balance_empty(pairs, 0.4, seed=1)
    # 3 non-empty pairs: 2 empty ones make 2/5 = 0.4, 3 would be 0.5
    assert counts == {"max_empty_share": 0.4, "seed": 1, "pairs_in": 8, "empty_in": 5, "empty_kept": 2,
                      "pairs_kept": 5, "empty_share": 0.4}
    assert [p for p in kept if not is_empty_choice(p)] == [p for p in pairs if not is_empty_choice(p)]
    order = [p["id"] for p in pairs]
    assert [p["id"] for p in kept] == [i for i in order if i in {p["id"] for p in kept}]  # turn order kept
    assert balance_empty(pairs, 0.4, seed=1)[0] == kept  # deterministic with the seed
    samples = {tuple(_empties(balance_empty(pairs, 0.4, seed=s)[0])) for s in range(12)}
    assert len(samples) > 1 and all(len(s) == 2 for s in samples)  # the seed picks which ones
    assert balance_empty(pairs, 1.0)[0] == pairs
    assert _empties(balance_empty(pairs, 0.0)[0]) == [] and balance_empty(pairs, 0.0)[1]["pairs_kept"] == 3
    assert balance_empty(pairs, 0.9)[1]["empty_kept"] == 5  # never more than there are
    assert balance_empty([p for p in pairs if is_empty_choice(p)], 0.5)[0] == []  # no non-empty pair: none kept
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(InvalidInputError, match="max_empty_share"):
            balance_empty(pairs, bad)


def test_free_mode_empty_targets_are_empty_too(tmp_path):
    from training.data.sft_manager import is_empty_choice

    pairs = build_pairs(write_locomo(tmp_path, CHATTY), mode="free")
    assert sum(map(is_empty_choice, pairs)) == 5
    assert not is_empty_choice({"completion": "not json"}) and not is_empty_choice({"completion": '{"keep": [1]}'})


def test_threshold_is_the_match_rule(data):
    loose, strict = build_pairs(data), build_pairs(data, threshold=0.8)
    by_id = {p["id"]: p["completion"] for p in loose}
    strict_by_id = {p["id"]: p["completion"] for p in strict}
    # "Bob started a bakery." matches "Bob runs a small bakery he started." at F1 0.73 only
    assert by_id["conv-x/D1:2"] == '{"keep": [1, 2]}' and strict_by_id["conv-x/D1:2"] == '{"keep": [1]}'
    assert extraction_stats(data, threshold=0.8)["chosen"] < extraction_stats(data)["chosen"]

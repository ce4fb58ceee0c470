"""Scorer values on hand-made pairs: Mem0's token-set F1, nltk BLEU-1 (method1), exact match.

Expected values are computed by hand here (not by calling the functions a second way)."""

from __future__ import annotations

import math

import pytest

from training.eval.metrics import bleu1, bleu_tokenize, exact_match, f1_score, normalise, score_answer, simple_tokenize


@pytest.mark.parametrize("pred, gold, expected", [
    ("7 May 2023", "7 May 2023", 1.0),
    ("7 May, 2023.", "7 May 2023", 1.0),               # , and . become spaces
    ("2022", 2022, 1.0),                                # integer gold answer
    ("In 2022", 2022, 2 * 0.5 * 1.0 / 1.5),            # P=1/2, R=1
    ("", "beach", 0.0),                                 # empty prediction
    ("beach", "", 0.0),
    ("", "", 0.0),
    (None, "beach", 0.0),
    ("beach beach beach", "beach", 1.0),                # sets: a repeated word counts once
    ("the beach", "at the beach", 2 * 1.0 * (2 / 3) / (1 + 2 / 3)),
    ("mountains", "beach", 0.0),
    ("Beach!", "beach?", 1.0),                          # lower-case, ! ? removed
    ("dog's toy", "dog", 0.0),                          # apostrophes are not split (Mem0's tokenizer)
])
def test_f1_hand_made_pairs(pred, gold, expected):
    assert f1_score(pred, gold) == pytest.approx(expected)


def test_f1_tokenizer_is_mem0s():
    assert simple_tokenize("Yes, he did! Really? Ok.") == ["yes", "he", "did", "really", "ok"]
    assert simple_tokenize("a-b c:d") == ["a-b", "c:d"]  # only . , ! ? are separators


@pytest.mark.parametrize("pred, gold, expected", [
    ("beach", "beach", 1.0),
    ("at the beach", "beach", 1 / 3),                   # 1 of 3 unigrams matches, no brevity penalty
    ("beach", "at the beach", math.exp(1 - 3 / 1)),     # precision 1, brevity penalty exp(1 - r/c)
    ("2022", 2022, 1.0),                                # integer gold answer
    ("", "beach", 0.0),                                 # empty prediction
    ("beach", "", 0.0),
    ("Beach.", "beach", 0.5),                           # '.' is a token for BLEU: 1 of 2 matches
    ("beach beach", "beach", 0.5),                      # clipped counts: the second 'beach' is not credited
])
def test_bleu1_hand_made_pairs(pred, gold, expected):
    assert bleu1(pred, gold) == pytest.approx(expected, abs=1e-9)


def test_bleu1_no_overlap_is_zero_and_partial_overlap_is_not_smoothed_away():
    # nltk returns 0 outright when no unigram matches (before any smoothing)
    assert bleu1("mountains", "beach") == 0.0
    # with weights (1,0,0,0) the zero 2-4-gram counts must not drag BLEU-1 down
    assert bleu1("went to the beach", "the beach") == pytest.approx(0.5)


def test_bleu_tokenizer_needs_no_downloaded_data_and_matches_treebank():
    assert bleu_tokenize("He didn't go to Paris, did he?") == ["he", "did", "n't", "go", "to", "paris", ",",
                                                               "did", "he", "?"]


@pytest.mark.parametrize("pred, gold, expected", [
    ("The Beach!", "beach", 1.0),
    ("an apple", "Apple.", 1.0),
    ("2022", 2022, 1.0),
    (" 2022 ", "2022", 1.0),
    ("2023", 2022, 0.0),
    ("", "beach", 0.0),
    ("", "", 0.0),                                      # no gold: never a match
    ("dogs", "dog", 0.0),
    ("theatre", "the atre", 0.0),                       # articles removed as words only
])
def test_exact_match_hand_made_pairs(pred, gold, expected):
    assert exact_match(pred, gold) == expected


def test_normalise():
    assert normalise("  The  U.S.A., a   country! ") == "usa country"
    assert normalise(None) == ""


def test_score_answer_bundles_all_three():
    s = score_answer("at the beach", "beach")
    assert s == {"f1": pytest.approx(2 * (1 / 3) / (4 / 3)), "bleu1": pytest.approx(1 / 3), "em": 0.0}

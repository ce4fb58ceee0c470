"""Answer scores: token-set F1, BLEU-1, exact match. Pure functions, no state, any thread.

The LoCoMo evaluation (training/eval/runner.py) and the RL rewards import these same functions,
so what training optimises is exactly what the report measures.

- `f1_score`: Mem0's / Memory-R1's evaluation code: lower-case, `. , ! ?` -> space, split on
  whitespace, F1 over the *sets* of tokens (a repeated word counts once).
- `bleu1`: nltk `sentence_bleu(weights=(1, 0, 0, 0), smoothing_function=method1)` on lower-cased
  tokens. Departure: Mem0 tokenises with `nltk.word_tokenize`, which needs the downloadable
  `punkt` data; we use its word tokenizer, `NLTKWordTokenizer`, directly (no data). The two give
  the same tokens on single-sentence answers; on several sentences `word_tokenize` also splits a
  period that ends an inner sentence.
- `exact_match`: SQuAD-style normalisation (lower-case, strip punctuation and the articles
  a/an/the, squeeze whitespace) then equality: the paper's RL reward.

Gold answers may be integers in the LoCoMo files (`"answer": 2022`): every function accepts
any value and scores `str(value)`; `None` scores as an empty string.

>>> round(f1_score("He adopted a dog.", "adopted dog"), 3)
0.667
>>> bleu1("beach", "beach")
1.0
>>> exact_match("The Beach!", "beach")
1.0
"""

from __future__ import annotations

import math
import re
import string
from functools import lru_cache
from typing import Any

__all__ = [
    "normalise", "simple_tokenize", "f1_score", "bleu_tokenize", "bleu1", "exact_match",
    "score_answer", "mean",
]

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans("", "", string.punctuation + "‘’“”")


def _text(value: Any) -> str:
    """Any gold/prediction value as text: None -> "", 2022 -> "2022".

    >>> _text(None), _text(2022), _text(" x ")
    ('', '2022', ' x ')
    """
    return "" if value is None else str(value)


def normalise(value: Any) -> str:
    """Lower-case, drop punctuation and the articles a/an/the, squeeze whitespace.

    >>> normalise("The Eiffel Tower, in Paris!")
    'eiffel tower in paris'
    >>> normalise(7)
    '7'
    >>> normalise("  An   apple's core ")
    'apples core'
    """
    text = _text(value).lower().translate(_PUNCT)
    text = _ARTICLES.sub(" ", text)
    return " ".join(text.split())


def simple_tokenize(value: Any) -> list[str]:
    """Mem0's F1 tokenizer: lower-case, `. , ! ?` -> space, split on whitespace.

    >>> simple_tokenize("Yes, in May 2023!")
    ['yes', 'in', 'may', '2023']
    >>> simple_tokenize(2022)
    ['2022']
    """
    text = _text(value).lower()
    for ch in ".,!?":
        text = text.replace(ch, " ")
    return text.split()


def f1_score(prediction: Any, gold: Any) -> float:
    """F1 over the sets of `simple_tokenize` tokens; 0.0 when either side has no token.

    >>> f1_score("7 May 2023", "7 May 2023")
    1.0
    >>> f1_score("", "beach")
    0.0
    >>> f1_score("2022", 2022)
    1.0
    >>> round(f1_score("the beach the beach", "at the beach"), 3)
    0.8
    >>> f1_score("mountains", "beach")
    0.0
    """
    pred = set(simple_tokenize(prediction))
    ref = set(simple_tokenize(gold))
    common = pred & ref
    if not pred or not ref or not common:
        return 0.0
    precision = len(common) / len(pred)
    recall = len(common) / len(ref)
    return 2 * precision * recall / (precision + recall)


@lru_cache(maxsize=1)
def _word_tokenizer():
    from nltk.tokenize import NLTKWordTokenizer

    return NLTKWordTokenizer()


@lru_cache(maxsize=1)
def _bleu_parts():
    from nltk.translate.bleu_score import SmoothingFunction, sentence_bleu

    return sentence_bleu, SmoothingFunction().method1


def bleu_tokenize(value: Any) -> list[str]:
    """nltk's Treebank-style word tokens of the lower-cased text (no downloadable data).

    >>> bleu_tokenize("Mel's dog, Buddy.")
    ['mel', "'s", 'dog', ',', 'buddy', '.']
    """
    return _word_tokenizer().tokenize(_text(value).lower())


def bleu1(prediction: Any, gold: Any) -> float:
    """Sentence BLEU-1 (clipped unigram precision x brevity penalty), smoothing method1.

    0.0 when either side has no token (nltk would also give 0 or fail there).

    >>> bleu1("at the beach", "beach") == 1 / 3
    True
    >>> round(bleu1("beach", "the beach"), 4)  # brevity penalty exp(1 - 2/1)
    0.3679
    >>> bleu1("", "beach"), bleu1("beach", "")
    (0.0, 0.0)
    >>> bleu1(2022, "2022")
    1.0
    """
    pred = bleu_tokenize(prediction)
    ref = bleu_tokenize(gold)
    if not pred or not ref:
        return 0.0
    sentence_bleu, smooth = _bleu_parts()
    score = float(sentence_bleu([ref], pred, weights=(1, 0, 0, 0), smoothing_function=smooth))
    return 0.0 if math.isnan(score) else score


def exact_match(prediction: Any, gold: Any) -> float:
    """1.0 when `normalise(prediction) == normalise(gold)` and gold is not empty, else 0.0.

    >>> exact_match("2022", 2022)
    1.0
    >>> exact_match("A dog.", "dog")
    1.0
    >>> exact_match("", "")
    0.0
    >>> exact_match("dogs", "dog")
    0.0
    """
    gold_n = normalise(gold)
    return 1.0 if gold_n and normalise(prediction) == gold_n else 0.0


def score_answer(prediction: Any, gold: Any) -> dict[str, float]:
    """All three scores of one answer.

    >>> score_answer("Buddy", "Buddy")
    {'f1': 1.0, 'bleu1': 1.0, 'em': 1.0}
    """
    return {"f1": f1_score(prediction, gold), "bleu1": bleu1(prediction, gold),
            "em": exact_match(prediction, gold)}


def mean(values) -> float:
    """Plain mean; 0.0 for no value (an empty category scores 0, it is also reported as n=0).

    >>> mean([1.0, 0.0, 0.5]), mean([])
    (0.5, 0.0)
    """
    values = list(values)
    return float(sum(values) / len(values)) if values else 0.0

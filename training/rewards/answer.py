"""Answer Agent rewards (method.md §2): pure functions, TRL's reward-function signature.

TRL calls each reward as `f(prompts=..., completions=..., answer=[...], **other_columns)` and
wants one float per completion. A completion is a string (plain prompts) or a list with one
assistant message (chat prompts); both are accepted.

The answer is parsed with `core.agents.prompts.parse_answer`, the parser the app itself uses (the
text after `**Answer:**`, tolerant of a missing marker), and scored with `training.eval.metrics`,
the functions the evaluation reports: what training optimises is what is measured.

- `em_reward`: the paper's reward, exact match after normalisation (lower-case, no
  punctuation or articles). Gold answers may be integers.
- `f1_reward`, `format_reward`: optional extra terms (weights 0 by default: the paper uses EM
  only; see `TrainConfig.reward_f1_weight`).

>>> em_reward(completions=["**Memories selected as relevant:**\\n- x\\n**Answer:** The beach."],
...           answer=["beach"])
[1.0]
>>> em_reward(completions=[[{"role": "assistant", "content": "**Answer:** 2022"}]], answer=[2022])
[1.0]
>>> em_reward(completions=["**Answer:** at the beach", ""], answer=["beach", "beach"])
[0.0, 0.0]
>>> [round(r, 3) for r in f1_reward(completions=["**Answer:** at the beach"], answer=["beach"])]
[0.5]
>>> format_reward(completions=["**Answer:** x", "x"])
[1.0, 0.0]
"""

from __future__ import annotations

from typing import Any, Callable, Sequence

from core.agents.prompts import parse_answer

from training.eval.metrics import exact_match, f1_score

RewardFunc = Callable[..., list[float]]


def completion_text(completion: Any) -> str:
    """The generated text of one completion: a string, or the last message's content.

    >>> completion_text([{"role": "assistant", "content": "hi"}]), completion_text("x"), completion_text(None)
    ('hi', 'x', '')
    """
    if completion is None:
        return ""
    if isinstance(completion, str):
        return completion
    if isinstance(completion, dict):
        return str(completion.get("content", ""))
    if isinstance(completion, (list, tuple)) and completion:
        return completion_text(completion[-1])
    return ""


def answer_of(text: str) -> str:
    """The final answer of one generation, whitespace squeezed (the app's parse).

    >>> answer_of("- 1 May, 2023: Jo has a cat.\\n**Answer:**  a   cat\\n")
    'a cat'
    >>> answer_of("")
    ''
    """
    return " ".join(parse_answer(text or "").answer.split())


def _golds(answer: Sequence[Any] | None, n: int) -> list[Any]:
    if answer is None:
        raise ValueError("the training data has no 'answer' column")
    golds = list(answer)
    if len(golds) != n:
        raise ValueError(f"{n} completions but {len(golds)} gold answers")
    return golds


def em_reward(completions: Sequence[Any], answer: Sequence[Any] | None = None, **_: Any) -> list[float]:
    """1.0 when the parsed answer equals the gold answer after normalisation, else 0.0."""
    golds = _golds(answer, len(completions))
    return [exact_match(answer_of(completion_text(c)), g) for c, g in zip(completions, golds)]


def f1_reward(completions: Sequence[Any], answer: Sequence[Any] | None = None, **_: Any) -> list[float]:
    """Token-set F1 of the parsed answer against the gold answer (the evaluation's F1)."""
    golds = _golds(answer, len(completions))
    return [f1_score(answer_of(completion_text(c)), g) for c, g in zip(completions, golds)]


def format_reward(completions: Sequence[Any], **_: Any) -> list[float]:
    """1.0 when the generation contains the `**Answer:**` marker (the app's strict parse)."""
    return [1.0 if parse_answer(completion_text(c)).has_marker else 0.0 for c in completions]


def reward_functions(f1_weight: float = 0.0, format_weight: float = 0.0) -> tuple[list[RewardFunc], list[float]]:
    """The reward functions and their weights for `GRPOConfig.reward_weights`: EM always
    (weight 1), F1 and format only when their weight is non-zero.

    >>> funcs, weights = reward_functions()
    >>> [f.__name__ for f in funcs], weights
    (['em_reward'], [1.0])
    >>> [f.__name__ for f in reward_functions(0.5, 0.1)[0]]
    ['em_reward', 'f1_reward', 'format_reward']
    """
    funcs: list[RewardFunc] = [em_reward]
    weights = [1.0]
    if f1_weight:
        funcs.append(f1_reward)
        weights.append(float(f1_weight))
    if format_weight:
        funcs.append(format_reward)
        weights.append(float(format_weight))
    return funcs, weights

"""The stream guards (core/agents/guards.py) fed piece by piece, as the agents feed them.

The agents' own tests (test_manager.py, test_answer.py) cover the guards end to end through
the FakeBackend; these check the state machines directly.
"""

from __future__ import annotations

import json

from core.agents.guards import AnswerGuard, RepetitionGuard, answer_stop


def test_repetition_guard_repairs_manager_output_too():
    guard = RepetitionGuard()
    item = '{"id": "0", "text": "a", "event": "NONE"}'
    stopped = [guard.feed(p) for p in ['{"memory": [', item, ", ", item, ", "]]
    assert stopped == [False, False, False, True, True]
    assert json.loads(guard.repaired()) == {"memory": [json.loads(item)]}


def test_repetition_guard_keeps_an_update_whose_old_memory_repeats_its_text():
    """Regression: old_memory repeating >= 32 chars of the new text is not a loop."""
    raw = ('{"memory": [{"id": "0", "text": "John adopted a dog named Buddy in May 2023 and a cat named Tom",'
           ' "event": "UPDATE", "old_memory": "John adopted a dog named Buddy in May 2023"}]}')
    guard = RepetitionGuard()
    stopped = any(guard.feed(raw[i:i + 3]) for i in range(0, len(raw), 3))
    assert not stopped


def test_repetition_guard_still_stops_a_looping_value():
    raw = '{"memory": [{"id": "0", "text": "' + "Gina: " * 40
    guard = RepetitionGuard()
    assert any(guard.feed(raw[i:i + 4]) for i in range(0, len(raw), 4))


def test_answer_guard_checks_at_line_ends_and_every_few_pieces():
    guard = AnswerGuard(max_lines=10)
    stops = [guard.feed(line) for line in ["- Ann has a cat\n", "- Ann loves Tom\n", "- Ann loves Tom\n"]]
    assert stops == [False, False, True]
    assert guard.found == ("repeated line", len("- Ann has a cat\n- Ann loves Tom\n"))
    looping = AnswerGuard(max_lines=10, every=8)
    assert not any(looping.feed("Gina: ") for _ in range(7))  # not checked before the 8th piece
    assert looping.feed("Gina: ") and looping.found[0] == "loop"


def test_answer_stop_keeps_lines_after_the_marker():
    assert answer_stop("- a\n- a\n**Answer:** x", max_lines=5) is None

"""The memory panel's search by meaning with the real embedder (all-MiniLM-L6-v2): the floor
keeps related memories and drops unrelated ones (real widgets offscreen, real bank)."""

from __future__ import annotations

import pytest

pytestmark = pytest.mark.slow

MEMORIES = ("Alex is allergic to peanuts", "Alex plays the cello", "Sam has a dog named Rex",
            "Sam works as a nurse at the city hospital", "Sam moved to Porto last year",
            "Alex visited Portugal in May 2023", "Sam drinks coffee every morning")


@pytest.fixture
def bank(make_bank, real_embedder):
    return make_bank(embedder=real_embedder)


@pytest.mark.parametrize("query, expected", [
    ("allergy", ["Alex is allergic to peanuts"]),  # by meaning only: 0.50, the others <= 0.15
    ("pet", ["Sam has a dog named Rex"]),  # 0.36
    ("Porto", ["Sam moved to Porto last year", "Alex visited Portugal in May 2023"]),  # its word, then 0.38
])
def test_search_by_meaning_with_the_real_embedder(qtbot, make_window, answer_backend, manager_backend, bank,
                                                  query, expected):
    for text in MEMORIES:
        bank.add(text, speaker=text.split()[0])
    window = make_window(answer_backend, manager_backend)
    panel = window.memory
    assert panel.vector_floor == 0.30
    with qtbot.waitSignal(panel.loaded, timeout=30_000):
        panel.search.setText(query)
    assert [m.text for m in panel.model.memories()] == expected

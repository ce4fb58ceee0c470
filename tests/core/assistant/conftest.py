"""Fixtures of the assistant tests."""

from __future__ import annotations

import pytest


@pytest.fixture
def make_assistant(bank):
    """`make_assistant(answer, manager=None, **kw)` -> an `Assistant` on the test's bank for the
    user "Ann", closed at teardown."""
    from core.assistant.pipeline import Assistant

    made = []

    def make(answer, manager=None, **kw):
        assistant = Assistant(bank, answer, manager, user_name="Ann", **kw)
        made.append(assistant)
        return assistant

    yield make
    for assistant in made:
        assistant.close()

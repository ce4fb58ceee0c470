"""Malformed LoCoMo files: each wrong shape is one InvalidInputError naming the field."""

from __future__ import annotations

import json

import pytest

from core.errors import InvalidInputError
from core.locomo import load_locomo, parse_sample

GOOD_CONV = {"speaker_a": "A", "speaker_b": "B", "session_1_date_time": "1 May 2023",
             "session_1": [{"speaker": "A", "dia_id": "D1:1", "text": "hi"}]}


@pytest.mark.parametrize("raw, field", [
    ("a whole conversation as a string", "sample must be an object, not text"),
    ({"conversation": "Caroline: hi"}, "sample.conversation must be an object, not text"),
    ({"conversation": {**GOOD_CONV, "session_1": "hi"}}, "sample.conversation.session_1 must be a list"),
    ({"conversation": {**GOOD_CONV, "session_1": ["hi"]}}, "sample.conversation.session_1[0] must be an object"),
    ({"conversation": {**GOOD_CONV, "session_1": [{"text": "hi"}]}}, "session_1[0].speaker is missing"),
    ({"conversation": {k: v for k, v in GOOD_CONV.items() if k != "speaker_b"}}, "conversation.speaker_b is missing"),
    ({"conversation": GOOD_CONV, "qa": {"question": "x"}}, "sample.qa must be a list"),
    ({"conversation": GOOD_CONV, "qa": [{"question": "x", "category": "many"}]}, "qa[0].category must be a number"),
    ({"conversation": GOOD_CONV, "qa": [{"question": ["x"], "category": 1}]}, "qa[0].question must be text"),
])
def test_a_malformed_sample_names_its_field(raw, field):
    with pytest.raises(InvalidInputError) as err:
        parse_sample(raw)
    assert field in str(err.value) and "indices" not in str(err.value)


def test_the_file_and_sample_number_are_named(tmp_path):
    path = tmp_path / "bad.json"
    path.write_text(json.dumps([{"conversation": GOOD_CONV}, {"conversation": ["x"]}]))
    with pytest.raises(InvalidInputError, match=r"bad\.json: Not a LoCoMo sample: sample 1\.conversation must be an"):
        load_locomo(path)


def test_a_good_sample_still_parses():
    s = parse_sample({"conversation": GOOD_CONV, "qa": [{"question": "q", "answer": 7, "category": "2",
                                                          "evidence": ["D1:1"]}]})
    assert [(t.speaker, t.dia_id, t.text, t.time) for t in s.turns] == [("A", "D1:1", "hi", "1 May 2023")]
    assert (s.qa[0].answer, s.qa[0].category, s.qa[0].sessions) == ("7", 2, {1})

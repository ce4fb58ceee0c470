"""The manager's training states go through the grounding gate as the app does
(`MemoryManager.screen`): a fact the turn does not support never reaches a state's facts, its
decision call or the snapshot bank."""

from __future__ import annotations

import json
import re

from core.agents import prompts
from core.fakes import FakeBackend
from core.locomo import parse_sample

TIME = "1:00 pm on 1 May, 2023"
CONV = [  # (speaker, text, facts the fake extractor returns)
    ("Ann", "I adopted a dog named Rex.", ["Ann adopted a dog named Rex."]),
    ("Bob", "Haha ok.", ["Bob has a sister named Anna who is a nurse."]),  # the prompt's example
    ("Ann", "Rex loves the beach.", ["Ann's dog Rex loves the beach.", "Ann has a cat named Luna."]),
]
QA = [{"question": "Who is Anna?", "answer": "a nurse", "evidence": ["D1:2"], "category": 4},
      {"question": "What does Rex love?", "answer": "the beach", "evidence": ["D1:3"], "category": 1}]


def sample():
    return parse_sample({"sample_id": "g-1", "qa": QA, "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": TIME,
        "session_1": [{"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t, _) in enumerate(CONV)]}})


def script(messages, schema):
    user = messages[-1]["content"]
    if messages[0]["content"] == prompts.FACT_EXTRACTION_SYSTEM:
        text = re.search(r"Message: (.*)", user).group(1).strip()
        return json.dumps({"facts": next(f for _, t, f in CONV if t == text)})
    shown = json.loads(re.search(r"Existing memories:\n(.*)\n", user).group(1))
    facts = json.loads(re.search(r"New facts:\n(.*)", user).group(1))
    return json.dumps({"memory": [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in shown]
                      + [{"id": str(len(shown) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]})


def test_states_see_only_the_facts_the_gate_accepts(tmp_path, hash_embedder):
    from training.data.manager import build_states

    backend = FakeBackend(default=script)
    made, _ = build_states(sample(), tmp_path / "states", hash_embedder, lambda: backend)
    by_dia = {s.dia_id: s for s in made}
    s2, s3 = by_dia["D1:2"], by_dia["D1:3"]
    assert s2.kind == "no-facts" and s2.facts == [] and s2.app_ops["ADD"] == 0
    assert s3.facts == ["Ann's dog Rex loves the beach."] and s3.kind == "decision"
    assert s3.decision_facts == ["Ann's dog Rex loves the beach."]
    assert [m["text"] for m in s3.snapshot] == ["Ann adopted a dog named Rex."]  # no Anna
    decisions = [c for c in backend.calls if c["messages"][0]["content"] == prompts.MANAGER_SYSTEM]
    assert len(decisions) == 1 and "Luna" not in json.dumps(decisions[0]["messages"])

"""What `MemoryManager.process_turn` hands the bank: the gate's REJECT ops with the other ops,
in one `bank.apply` call, with the turn as its `SourceTurn`."""

from __future__ import annotations

import json


from core.agents.manager import MemoryManager
from core.fakes import FakeBackend
from core.types import REJECT, MemoryChanges, SourceTurn

TIME = "1:56 pm on 8 May, 2023"
SAM = "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex."
SCRIPT = json.dumps({"facts": ["Sam has a cat named Luna.", "Sam lives in Lisbon."]})



class RecordingBank:
    """The real bank, with an `apply` that takes `source=` (as the provenance bank does) and
    records what it was given; the REJECT ops are left out of the real write."""

    def __init__(self, bank) -> None:
        self.bank, self.embedder, self.calls = bank, bank.embedder, []

    def __getattr__(self, name):
        return getattr(self.bank, name)

    def apply(self, ops, *, actor="manager", turn=None, done_message_id=None, source=None) -> MemoryChanges:
        self.calls.append({"ops": list(ops), "actor": actor, "turn": turn, "source": source})
        return self.bank.apply([op for op in ops if op.event != REJECT], actor=actor, turn=turn,
                               done_message_id=done_message_id)


def test_the_reject_ops_and_the_source_turn_go_to_one_apply(bank):
    recording = RecordingBank(bank)
    manager = MemoryManager(recording, FakeBackend([SCRIPT]))
    changes = manager.process_turn(SAM, speaker="Sam", time=TIME, turn="ingest:f/1", source="ingest:f/1")
    assert [m.text for m in changes.added] == ["Sam lives in Lisbon."]
    (call,) = recording.calls
    assert [(op.event, op.text) for op in call["ops"]] == [(REJECT, "Sam has a cat named Luna."),
                                                           ("ADD", "Sam lives in Lisbon.")]
    assert call["ops"][0].reason == "not in what was said: 'Luna'"
    assert call["source"] == SourceTurn(SAM, "Sam", TIME, message_id=None, ref="ingest:f/1")


def test_a_turn_with_only_rejected_facts_is_still_applied_and_a_given_source_kept(bank):
    recording = RecordingBank(bank)
    manager = MemoryManager(recording, FakeBackend([json.dumps({"facts": ["Kate loves hiking."]})]))
    given = SourceTurn("Haha ok.", "Sam", TIME, message_id=None, ref="locomo:conv-26/D1:2")
    manager.process_turn("Haha ok.", speaker="Sam", time=TIME, turn="t", source_turn=given)
    (call,) = recording.calls
    assert [op.event for op in call["ops"]] == [REJECT] and call["source"] is given
    assert bank.list() == []


def test_without_source_support_the_rejects_stay_out_of_the_write(bank):
    manager = MemoryManager(bank, FakeBackend([SCRIPT]))
    changes = manager.process_turn(SAM, speaker="Sam", time=TIME, turn="t:1")
    assert [m.text for m in changes.added] == ["Sam lives in Lisbon."]
    assert [op.text for op in manager.last_rejected] == ["Sam has a cat named Luna."]


def test_a_rejected_fact_is_a_reject_event_with_its_reason(bank):
    manager = MemoryManager(bank, FakeBackend([SCRIPT]))
    manager.process_turn(SAM, speaker="Sam", time=TIME, turn="t:1", source="t:1")
    rejects = [e for e in bank.history(limit=100) if e.event == REJECT]
    assert [(e.turn, e.reason) for e in rejects] == [("t:1", "not in what was said: 'Luna'")]
    assert [m.text for m in bank.list()] == ["Sam lives in Lisbon."]


def test_a_turn_with_only_rejected_facts_leaves_an_event(bank):
    manager = MemoryManager(bank, FakeBackend([json.dumps({"facts": ["Kate loves hiking."]})]))
    changes = manager.process_turn("Haha ok.", speaker="Sam", time=TIME, turn="t:2", source="t:2")
    assert changes.batch_id is not None and bank.list() == []
    assert [e.event for e in bank.history(limit=100)] == [REJECT]

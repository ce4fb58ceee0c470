"""Forgetting by asking (`core.assistant.forgetting`): the detector on a labelled set of
phrasings, matching over a real bank, the chat (scripted models through the Assistant) and
ingest (only the user's own turns may delete)."""

from __future__ import annotations

import json

import pytest

from core.assistant.forgetting import ForgetAwareManager, detect_forget, parse_choice
from core.assistant.ingest import IngestTurn, ingest_turns
from core.fakes import FakeBackend, router as route

from tests.core.assistant.forget_phrasings import NEGATIVES, POSITIVES

NO_FACTS = json.dumps({"facts": []})


def scores() -> tuple[float, float, list]:
    """(precision, recall, mistakes) of the detector on the labelled set; a positive counts as
    found only with the right kind."""
    tp = sum(1 for text, kind in POSITIVES if (r := detect_forget(text)) is not None and r.kind == kind)
    fp = sum(1 for text in NEGATIVES if detect_forget(text) is not None)
    found = sum(1 for text, _ in POSITIVES if detect_forget(text) is not None)
    mistakes = [(t, k, detect_forget(t)) for t, k in POSITIVES if (detect_forget(t) or None) is None
                or detect_forget(t).kind != k] + [(t, None, detect_forget(t)) for t in NEGATIVES if detect_forget(t)]
    return tp / max(1, found + fp), tp / len(POSITIVES), mistakes


def test_labelled_set_is_big_enough_and_the_detector_is_exact_on_it():
    assert len(POSITIVES) >= 25 and len(NEGATIVES) >= 25
    precision, recall, mistakes = scores()
    assert (precision, recall) == (1.0, 1.0), mistakes


@pytest.mark.parametrize("text,target,rest", [
    ("please forget what I said about my band", "my band", None),
    ("delete the memory that I live in Lisbon", "I live in Lisbon", None),
    ("remove everything about Rex", "Rex", None),
    ("that's not true any more, I sold the car", "I sold the car", "I sold the car"),
    ("Forget that I live in Lisbon. I moved to Berlin.", "I live in Lisbon", "I moved to Berlin."),
])
def test_targets_and_rests(text, target, rest):
    request = detect_forget(text)
    assert (request.target, request.rest) == (target, rest)


def test_parse_choice():
    assert parse_choice("1 and 3", 3) == [0, 2]
    assert parse_choice("both", 2) == [0, 1] and parse_choice("none", 2) == []
    assert parse_choice("4", 3) is None and parse_choice("I like 2 dogs", 3) is None


# --- chat -----------------------------------------------------------------------------------

@pytest.fixture
def backend():
    return FakeBackend(default=route("**Answer:** Nice!", facts=NO_FACTS))


def conv(bank):
    return bank.chats.create_conversation("t").id


def add(bank, text, speaker="Ann"):
    return bank.add(text, speaker=speaker).memory


def test_natural_forget_deletes_all_matches_in_one_undoable_batch_without_a_model(bank, make_assistant, backend):
    band = [add(bank, "Ann's favourite band is Muse"), add(bank, "Ann saw her favourite band live in 2019")]
    keep = add(bank, "Ann has a dog named Rex")
    other = add(bank, "Bob's favourite band is Muse", speaker="Bob")
    assistant = make_assistant(backend)
    cid = conv(bank)
    reply = assistant.reply(cid, "Please forget what I said about my favourite band")
    assert sorted(m.id for m in reply.changes.deleted) == sorted(m.id for m in band)
    assert reply.text.startswith("Forgot 2 memories:") and "Muse" in reply.text
    assert reply.command == "forget" and reply.changes.batch_id is not None
    assert bank.get(keep.id).status == "active" and bank.get(other.id).status == "active"
    assert assistant.wait_idle(5) and backend.calls == []  # no model: neither reply nor manager
    assert len(bank.list()) == 2  # no "Ann wants to forget ..." memory
    events = [e for e in bank.history() if e.event == "DELETE"]
    assert {e.actor for e in events} == {"user"} and {e.turn for e in events} == {f"chat:{cid}/{reply.user_message_id}"}
    bank.undo(batch=reply.changes.batch_id)
    assert all(bank.get(m.id).status == "active" for m in band)


def test_forget_that_removes_what_the_previous_turn_wrote(bank, make_assistant):
    backend = FakeBackend(default=route("**Answer:** Nice!", facts=json.dumps({"facts": ["Ann lives in Lisbon"]})))
    old = add(bank, "Ann has a dog named Rex")
    assistant = make_assistant(backend)
    cid = conv(bank)
    assistant.reply(cid, "I live in Lisbon")
    assert assistant.wait_idle(5)
    lisbon = [m for m in bank.list() if "Lisbon" in m.text]
    assert len(lisbon) == 1
    calls = len(backend.calls)
    reply = assistant.reply(cid, "don't remember that")
    assert [m.id for m in reply.changes.deleted] == [lisbon[0].id]
    assert bank.get(old.id).status == "active" and "Forgot 1 memory" in reply.text
    assert assistant.wait_idle(5) and len(backend.calls) == calls


def test_forget_that_before_the_manager_ran_skips_the_turn(bank, make_assistant, backend):
    assistant = make_assistant(backend)
    cid = conv(bank)
    msg = bank.chats.add_message(cid, "user", "I live in Lisbon", queue_for_manager=True, speaker="Ann")
    reply = assistant.reply(cid, "forget that")
    assert "won't remember" in reply.text and not bank.chats.is_pending(msg.id)
    assert assistant.resume_pending() == 0


def test_supersede_forgets_the_car_and_the_manager_gets_the_rest(bank, make_assistant):
    seen = []

    def facts(text):
        seen.append(text)
        return ["Ann sold the car"] if "sold" in text else []

    backend = FakeBackend(default=route("**Answer:** ok", facts=lambda t: facts(t)))
    car = add(bank, "Ann has a red car")
    keep = add(bank, "Bob has a red car", speaker="Bob")  # not the user's: never matched
    assistant = make_assistant(backend)
    cid = conv(bank)
    reply = assistant.reply(cid, "that's not true any more, I sold the car")
    assert [m.id for m in reply.changes.deleted] == [car.id] and bank.get(keep.id).status == "active"
    assert assistant.wait_idle(5)
    assert any("I sold the car" in t for t in seen) and not any("not true" in t for t in seen)
    assert "Ann sold the car" in [m.text for m in bank.list()]


def test_supersede_matching_nothing_is_an_ordinary_message(bank, make_assistant, backend):
    add(bank, "Ann has a red car")
    assistant = make_assistant(backend)
    reply = assistant.reply(conv(bank), "That's no longer true, I live in Oslo")
    assert reply.command is None and reply.text == "Nice!" and len(bank.list()) == 1


def test_unclear_asks_and_the_answer_picks(bank, make_assistant, backend):
    a = add(bank, "Ann's sister lives in Lisbon")
    b = add(bank, "Ann's brother works in Lisbon")
    assistant = make_assistant(backend)
    cid = conv(bank)
    reply = assistant.reply(cid, "forget about my sibling in Lisbon")
    assert not reply.changes and reply.text.startswith("Which should I forget?")
    assert "1. " in reply.text and "2. " in reply.text
    asked = bank.chats.get_message(reply.message_id).meta["ask"]
    assert set(asked) == {a.id, b.id}
    pick = assistant.reply(cid, "2")
    assert [m.id for m in pick.changes.deleted] == [asked[1]]
    assert assistant.wait_idle(5) and backend.calls == []


def test_nothing_found_says_so_and_changes_nothing(bank, make_assistant, backend):
    add(bank, "Ann has a dog named Rex")
    assistant = make_assistant(backend)
    reply = assistant.reply(conv(bank), "please forget what I said about my band")
    assert not reply.changes and "found nothing about \u201cmy band\u201d" in reply.text
    assert len(bank.list()) == 1


def test_a_question_about_forgetting_is_an_ordinary_message(bank, make_assistant, backend):
    add(bank, "Ann has a dog named Rex")
    assistant = make_assistant(backend)
    reply = assistant.reply(conv(bank), "I forgot my keys")
    assert reply.command is None and len(bank.list()) == 1


# --- ingest ---------------------------------------------------------------------------------

def _manager(bank, facts=NO_FACTS):
    from core.agents.manager import MemoryManager

    return MemoryManager(bank, FakeBackend(default=route("", facts=facts)))


def test_ingest_a_third_party_turn_deletes_nothing_the_users_own_turn_does(bank):
    rex = [add(bank, "Sam has a dog named Rex", "Sam"), add(bank, "Sam walks Rex every morning", "Sam")]
    other = add(bank, "Sam lives in Lisbon", "Sam")
    turns = [IngestTurn("Bob", "forget everything about Rex", None, "f:1"),
             IngestTurn("Sam", "Please forget everything about Rex", None, "f:2")]
    manager = ForgetAwareManager(_manager(bank), bank, "Sam")
    first = ingest_turns(manager, turns[:1])
    assert not first.changes.deleted and all(bank.get(m.id).status == "active" for m in rex)
    second = ingest_turns(manager, turns[1:])
    assert sorted(m.id for m in second.changes.deleted) == sorted(m.id for m in rex)
    assert bank.get(other.id).status == "active" and manager.forgotten == 2


def test_ingest_with_user_option_wraps_the_manager(bank):
    rex = add(bank, "Sam has a dog named Rex", "Sam")
    turns = [IngestTurn("Sam", "remove everything about Rex", None, "f:1")]
    assert not ingest_turns(_manager(bank), turns).changes.deleted  # no user named: nobody may delete
    report = ingest_turns(_manager(bank), turns, user="Sam")
    assert [m.id for m in report.changes.deleted] == [rex.id]


class _AlikeEmbedder:
    """Every text near the same vector: cosine ~1 for any pair (a worst case of a real
    embedder's inflated cosines between memories of one person)."""

    dim = 8
    name = "alike"
    related_score = 0.6
    chat_min_score = -1.0

    def embed(self, texts):
        import numpy as np

        out = np.ones((len(texts), self.dim), dtype=np.float32)
        for i, t in enumerate(texts):
            out[i, len(t) % self.dim] += 0.05
        return out / np.linalg.norm(out, axis=1, keepdims=True)


def test_a_close_cosine_without_the_targets_names_is_asked_not_acted_on(make_bank, tmp_path):
    from core.assistant.forgetting import plan_forget

    bank = make_bank(tmp_path / "alike.sqlite3", _AlikeEmbedder())
    lisbon = add(bank, "Ann lives in Lisbon")
    jazz = add(bank, "Ann likes jazz music")
    portugal = plan_forget(bank, detect_forget("forget that I live in Portugal"), user_name="Ann")
    assert portugal.clear == [] and lisbon.id in [m.id for m in portugal.ask]
    music = plan_forget(bank, detect_forget("forget my music taste"), user_name="Ann")
    assert jazz.id in [m.id for m in music.clear]  # no name in the target: the cosine decides

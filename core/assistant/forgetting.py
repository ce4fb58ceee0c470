"""Forgetting by asking: a user's own request to forget, in natural words, found without a model.

    request = detect_forget("please forget what I said about my band")
    plan = plan_forget(bank, request, user_name="Ann")      # which memories it means
    reply, changes = carry_out(bank, plan, turn="chat:3/17")  # soft delete, one batch

`detect_forget(text)` recognises the request (deterministic patterns; None for anything else:
"I forgot my keys", "don't forget to call mom", "can you remember my birthday?", "delete this
paragraph", "I want to forget that day", questions about forgetting). Three kinds:
- "target": "forget (about) X", "delete the memory that X", "remove everything about X",
  "stop remembering X", "please forget what I said about X" (X in the first person is
  rewritten to the memory's third person before matching);
- "previous": "forget that", "don't remember that", "forget what I just said" - the memories
  written for the user's previous turn (found through the event log's turn refs);
- "supersede": "that's not true any more, I sold the car" - the memories matching the rest
  are forgotten and the rest (`ForgetRequest.rest`) still goes to the Memory Manager.
A forget in the first sentence of a longer message leaves the other sentences as `rest`.

`plan_forget` matches a target over the user's own memories (hybrid `bank.search`, speaker =
the user): a memory is a clear match when it holds >= FORGET_MIN_OVERLAP of the target's
content words (the user's name and filler left out), or its cosine is >= FORGET_MIN_COSINE and
it holds every name and number of the target ("I live in Portugal" is not "Sam lives in
Lisbon"); a weak one when it shares a word, or its cosine reaches the embedder's
`related_score` and is within WEAK_BELOW_BEST of the best. Clear matches are acted on (at most
FORGET_MAX unless "everything"/"all" was said); weak ones only, or too many clear ones, make a
question ("Which should I forget? 1. ... 2. ..."), answered by a later message that
`parse_choice` reads ("1 and 3", "both", "all", "none"); no match
says so. `carry_out` soft-deletes (`bank.delete`: ONE batch, so `bank.undo(batch=...)` brings
all back; actor "user"; the turn that asked), never the irreversible `bank.forget`.

Only the user's own words may delete: the chat runs this on user messages only, ingest on
turns whose speaker is the user (`ForgetAwareManager`); a memory's text or a document never
passes through here.

Threads: the caller's; the bank serialises its writes. Raises what the bank raises.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from core.assistant.commands import third_person, words
from core.types import Memory, MemoryChanges

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

log = logging.getLogger(__name__)

FORGET_MAX = 5  # clear matches acted on without asking, unless "everything"/"all" was said
FORGET_ALL_MAX = 50
FORGET_MIN_COSINE = 0.75
FORGET_MIN_OVERLAP = 0.6
WEAK_BELOW_BEST = 0.05  # a weak candidate's cosine is at most this far below the best one's
ASK_MAX = 9
EVENT_SCAN = 2000  # latest events scanned for the previous turn's memories

_LEAD = (r"^\s*(?:(?:ok(?:ay)?|no|actually|hey|hmm+|oh|also|and|so|wait|sorry|never\s*mind|nvm|um+)[\s,.!:;-]+)*"
         r"(?P<ask>(?:please|pls|kindly|can you|could you|would you|will you|i want you to|i'd like you to|"
         r"i would like you to|i need you to)\s+)*(?:please\s+)?")
_VERBS = (r"forget|delete|remove|erase|wipe|drop|unlearn|stop remembering|quit remembering|no longer remember|"
          r"don'?t remember|do not remember|don'?t keep|do not keep|don'?t save|do not save|don'?t store|"
          r"do not store|scratch")
_NEEDS_MARKER = {"delete", "remove", "erase", "wipe", "drop", "scratch"}
_PREVIOUS_OBJ = (r"(?:that|this|that one|this one|what i (?:just )?(?:said|told you|wrote|mentioned|typed)|"
                 r"(?:that|this) memory|i (?:just |ever )?(?:said|told you|mentioned) (?:that|this|it)|"
                 r"my (?:last|previous) message|the last (?:thing|message)|that last (?:bit|part|message))")
_TAIL = r"(?:[\s,]+(?:please|too|as well|for me|thanks|thank you|from (?:your |the )?memory))*[\s.!?]*$"
_PREVIOUS = re.compile(_LEAD + rf"(?P<verb>{_VERBS})\s+{_PREVIOUS_OBJ}{_TAIL}", re.I)
_TARGET = re.compile(_LEAD + rf"(?P<verb>{_VERBS})\s+(?P<x>.+?)[\s.!?]*$", re.I | re.S)
_NO_LONGER = (r"(?:no longer (?:true|the case|right|correct|accurate)|"
              r"not (?:true|the case|right|correct|accurate) any\s*more|outdated|out of date|old news)")
_SUPERSEDE = re.compile(
    r"^\s*(?:(?:actually|no|well|oh|hmm+|update|correction)[\s,.!:;-]+)*"
    rf"(?:that(?:'s| is)|this is|it(?:'s| is))\s+{_NO_LONGER}\s*"
    r"(?:[,.;:!\u2013\u2014-]+\s*(?:because\s+|since\s+)?|\s+(?:because|since)\s+)(?P<rest>\S.*)$", re.I | re.S)
_SUPERSEDE_ALONE = re.compile(
    rf"^\s*(?:actually[\s,]+)?(?:that(?:'s| is)|this is|it(?:'s| is))\s+{_NO_LONGER}[\s.!]*$", re.I)
# what the target may start with, peeled off before matching; marks an explicit memory object
_OBJECT = re.compile(
    r"^(?:(?P<all>everything|anything|all(?: of it)?|whatever)\s+(?:(?:you know|you remember|you have|you've got|"
    r"you saved|you stored|i (?:said|told you|mentioned))\s+)?(?:about|of|on|regarding|concerning)\s+"
    r"|(?:the |my |any |all (?:the )?|those |these )?(?:memor(?:y|ies)|facts?|notes?|info(?:rmation)?|"
    r"things? you (?:know|remember))\s+(?:(?:you have|you've got|you keep|you saved|you stored|you made)\s+)?"
    r"(?:that says\s+|saying\s+|that\s+|about\s+|of\s+|on\s+|regarding\s+|where\s+|with\s+)?"
    r"|what (?:i|you) (?:said|told you|mentioned|wrote|know|remember|learned)\s+(?:about|regarding|of|on)\s+"
    r"|(?:about|that)\s+)", re.I)
_FROM_MEMORY = re.compile(r"\s+from (?:your |the )?memory\b.*$|\s+(?:please|for me|too|as well)$", re.I)
_NOT_A_TARGET = re.compile(
    r"^(?:(?:to|when|what|who|how|where|why|if|whether)\b(?!\s+i\b)|it(?:\s*,|\s+all)?$|it\b|that$|this$|me$|"
    r"them$|him$|her$|us$|you$|everything$|all$|anything$|something\b|about it|myself|yourself|things?\b|stuff\b|"
    r"the (?:whole )?"
    r"(?:thing|conversation|chat)$|(?:this|the|my|that) (?:paragraph|sentence|line|word|file|page|essay|email|"
    r"text|draft|message|chat|conversation)\b)", re.I)
_NOT_MEMORY = re.compile(r"\b(?:let'?s|let us|for (?:a while|now|a moment|a bit|tonight|today)|"
                         r"paragraph|sentence|essay|draft|document|file|folder|email|photo|picture|app)\b", re.I)
_SENTENCE = re.compile(r"(?<=[.!;])\s+(?=\S)")
_FILLER_WORDS = {"thing", "things", "stuff", "said", "told", "mentioned", "wrote", "everything", "anything",
           "memory", "memorie", "memories", "fact", "note", "know", "remember", "just", "please", "ever", "all"}
# verbs and adverbs of a superseding statement; its nouns say what it replaces
_CHANGE_LIST = {"sold", "bought", "moved", "got", "get", "have", "has", "had", "quit", "left", "changed",
                 "new", "now", "no", "longer", "anymore", "any", "more", "not", "don't", "doesn't", "do",
                 "does", "am", "is", "are", "was", "were", "work", "works", "live", "lives", "started",
                 "stopped", "gave", "away", "sell", "sells", "own", "owns", "which", "it", "we", "they"}
_FILLER = words(" ".join(_FILLER_WORDS))
_CHANGE_WORDS = words(" ".join(_CHANGE_LIST))
_CHOICE_ALL = re.compile(r"^\s*(?:all|both|all of them|both of them|every one|everything|yes,? all)\b[\s.!]*$", re.I)
_CHOICE_NONE = re.compile(r"^\s*(?:none|neither|nothing|no|cancel|never ?mind|keep (?:them|it|all))\b[\s.!]*$",
                          re.I)
_CHOICE_NUMS = re.compile(r"^\s*(?:(?:forget|delete|just|only|number|no\.|#)\s*)*\d+(?:\s*(?:,|and|&|\+|or)?\s*\d+)*"
                          r"[\s.!]*$", re.I)


@dataclass(frozen=True)
class ForgetRequest:
    """A detected request: `kind` "target" | "previous" | "supersede"; `target` the thing to
    forget as the user said it (None for "previous"); `everything` when "everything/all" was
    said; `rest` the part of the message that still goes to the Memory Manager (None: none)."""

    kind: str
    target: str | None = None
    everything: bool = False
    rest: str | None = None


@dataclass
class ForgetPlan:
    """What a request means over the bank: `clear` matches to delete at once, or `ask`
    candidates for a question, or neither (nothing found). `note` qualifies the reply;
    `previous_message_id` is the chat message a "previous" request refers to (set by the chat)."""

    request: ForgetRequest
    clear: list[Memory] = field(default_factory=list)
    ask: list[Memory] = field(default_factory=list)
    note: str = ""
    previous_message_id: int | None = None


def _clean_target(x: str) -> tuple[str, bool, bool] | None:
    """(target, everything, has_marker) from the words after the verb; None when no target."""
    x = x.strip().strip("\"'\u201c\u201d")
    marker = bool(_FROM_MEMORY.search(x))
    everything = False
    for _ in range(3):
        m = _OBJECT.match(x)
        if not m or m.end() == 0:
            break
        everything = everything or bool(m.group("all"))
        marker = marker or not x.lower().startswith(("about ", "that "))
        x = x[m.end():]
    x = _FROM_MEMORY.sub("", x).strip(" ,.;:!?\"'\u201c\u201d")
    if not x or _NOT_A_TARGET.match(x) or _NOT_MEMORY.search(x):
        return None
    return x, everything, marker


def detect_forget(text: str) -> ForgetRequest | None:
    """The forget request `text` makes (see the module docstring), or None.

    >>> detect_forget("please forget what I said about my band")
    ForgetRequest(kind='target', target='my band', everything=False, rest=None)
    >>> detect_forget("don't forget to call mom"), detect_forget("I forgot my keys")
    (None, None)
    """
    if not text or len(text) > 2000:
        return None
    text = text.strip()
    m = _SUPERSEDE.match(text)
    if m:
        rest = m.group("rest").strip()
        return ForgetRequest("supersede", rest, rest=rest)
    if _SUPERSEDE_ALONE.match(text):
        return ForgetRequest("supersede")
    parts = _SENTENCE.split(text, maxsplit=1)
    head, rest = parts[0], (parts[1].strip() if len(parts) > 1 else None) or None
    for candidate, remainder in ((head, rest), (text, None)) if rest else ((text, None),):
        request = _detect_one(candidate, remainder)
        if request is not None:
            return request
    return None


def _detect_one(text: str, rest: str | None) -> ForgetRequest | None:
    question = text.rstrip().endswith("?")
    m = _PREVIOUS.match(text)
    if m:
        if question and not m.group("ask"):
            return None
        return ForgetRequest("previous", rest=rest)
    m = _TARGET.match(text)
    if not m or (question and not m.group("ask")):
        return None
    verb = m.group("verb").lower()
    cleaned = _clean_target(m.group("x"))
    if cleaned is None:
        return None
    target, everything, marker = cleaned
    if verb in _NEEDS_MARKER and not marker:
        return None
    if verb.replace("'", "") in ("dont remember", "do not remember") and not marker \
            and not re.match(r"(?:my|that|anything|everything)\b", m.group("x").strip(), re.I):
        return None
    return ForgetRequest("target", target, everything, rest)


def manager_text(text: str) -> str | None:
    """What of a user message goes to the Memory Manager: all of it (no request), the rest of
    a mixed one, or None for a pure forget request."""
    request = detect_forget(text)
    return text if request is None else request.rest


def _names(target: str, user_name: str) -> set[str]:
    """The names (capitalised words after the first) and numbers of a target, as `words`."""
    tokens = re.findall(r"[\w']+", target)
    picked = [t for i, t in enumerate(tokens) if t.isdigit() or (i > 0 and t[:1].isupper() and t != "I")]
    return words(" ".join(picked)) - words(user_name)


def _content_words(text: str, user_name: str) -> set[str]:
    return words(text) - words(user_name) - _FILLER


def plan_forget(bank: MemoryBank, request: ForgetRequest, *, user_name: str,
                previous_turn: str | None = None) -> ForgetPlan:
    """Which memories `request` means (module docstring). `previous_turn`: the turn ref of the
    user's previous message, for a "previous" request."""
    plan = ForgetPlan(request)
    if request.kind == "previous":
        plan.clear = memories_of_turn(bank, previous_turn) if previous_turn else []
        return plan
    if request.target is None:
        return plan
    query = third_person(request.target, user_name)
    target_words = _content_words(query, user_name)
    if request.kind == "supersede":
        target_words -= _CHANGE_WORDS
    if not target_words:
        return plan
    cosines = {h.memory.id: h.score for h in bank.search(query, k=20, mode="vector", speaker=user_name)}
    related = float(getattr(bank.embedder, "related_score", 0.6))
    weak_cos = max(related, 0.5, max(cosines.values(), default=0.0) - WEAK_BELOW_BEST)
    names = _names(request.target, user_name)
    for hit in bank.search(query, k=20, mode="hybrid", speaker=user_name):
        mem = hit.memory
        if mem.status != "active":
            continue
        mem_words = _content_words(mem.text, user_name)
        overlap = len(target_words & mem_words) / len(target_words)
        cos = cosines.get(mem.id, -1.0)
        close = cos >= FORGET_MIN_COSINE and names <= mem_words  # a name or number it lacks: not the same
        if overlap >= FORGET_MIN_OVERLAP or close:
            plan.clear.append(mem)
        elif request.kind != "supersede" and (overlap > 0 or cos >= weak_cos):
            plan.ask.append(mem)
    limit = FORGET_ALL_MAX if request.everything else FORGET_MAX
    if len(plan.clear) > limit:
        plan.ask, plan.clear = plan.clear[:ASK_MAX], []
        plan.note = "many"
    elif plan.clear:
        plan.ask = []
    else:
        plan.ask = plan.ask[:ASK_MAX]
    return plan


def memories_of_turn(bank: MemoryBank, turn: str) -> list[Memory]:
    """The still-active memories added or changed by `turn` (its ADD/UPDATE/EDIT events not
    undone, among the latest EVENT_SCAN events), oldest first."""
    ids: list[int] = []
    for event in reversed(bank.history(limit=EVENT_SCAN)):
        if event.turn == turn and event.memory_id is not None and not event.undone \
                and event.event in ("ADD", "UPDATE", "EDIT") and event.memory_id not in ids:
            ids.append(event.memory_id)
    out = []
    for mid in ids:
        try:
            mem = bank.get(mid)
        except Exception:  # purged meanwhile
            continue
        if mem.status == "active":
            out.append(mem)
    return out


def _plural(n: int) -> str:
    return f"{n} memor{'y' if n == 1 else 'ies'}"


def forgot_text(memories: list[Memory]) -> str:
    """"Forgot 2 memories: - ... - ..." for the chat reply."""
    return f"Forgot {_plural(len(memories))}:\n" + "\n".join(f"- {m.text}" for m in memories)


def delete_memories(bank: MemoryBank, memories: list[Memory], *, turn: str | None) -> tuple[str, MemoryChanges]:
    """Soft-delete `memories` in ONE batch (actor "user"); the reply text and the changes."""
    if not memories:
        return "Nothing to forget.", MemoryChanges()
    changes = bank.delete([m.id for m in memories], actor="user", turn=turn)
    return forgot_text(memories), changes


def carry_out(bank: MemoryBank, plan: ForgetPlan, *, turn: str | None) -> tuple[str, MemoryChanges]:
    """Act on a plan: delete its clear matches, or the question / "found nothing" text (no
    change). Returns the reply text and the changes."""
    request = plan.request
    if plan.clear:
        text, changes = delete_memories(bank, plan.clear, turn=turn)
        if request.kind == "supersede":
            text += "\nI'll keep what you told me instead."
        return text, changes
    if plan.ask:
        lead = ("That matches many memories. " if plan.note == "many" else "")
        listing = "\n".join(f"{i}. {m.text}" for i, m in enumerate(plan.ask, 1))
        return (f"{lead}Which should I forget?\n{listing}\n"
                "(Answer with the numbers, \u201call\u201d or \u201cnone\u201d.)"), MemoryChanges()
    if request.kind == "previous":
        return "I have no memories from your previous message.", MemoryChanges()
    if request.kind == "supersede" and request.target is None:
        return ("What is no longer true? Tell me, for example "
                "\u201cforget that I live in Lisbon\u201d."), MemoryChanges()
    if request.kind == "supersede":
        return "I found nothing in your memory that this replaces; I'll remember it.", MemoryChanges()
    return f"I found nothing about \u201c{request.target}\u201d in your memory.", MemoryChanges()


def parse_choice(text: str, n: int) -> list[int] | None:
    """The 0-based picks an answer to "Which should I forget? 1. ... n." makes: [] for none,
    all for "all"/"both", the numbers given; None when `text` is no such answer (or a number is
    out of range)."""
    if _CHOICE_NONE.match(text):
        return []
    if _CHOICE_ALL.match(text):
        return list(range(n))
    if _CHOICE_NUMS.match(text):
        picks = sorted({int(d) for d in re.findall(r"\d+", text)})
        if picks and all(1 <= p <= n for p in picks):
            return [p - 1 for p in picks]
    return None


class ForgetAwareManager:
    """A Memory Manager wrapper for ingest: a turn whose speaker is `user_name` (case-folded)
    and that asks to forget is acted on when the match is clear (an unclear one is logged and
    nothing is deleted: there is nobody to ask); its `rest`, if any, goes to the manager. Every
    other turn - every turn of another speaker - goes to the manager unchanged, so a
    third-party turn never deletes through here. `forgotten` counts the memories deleted."""

    def __init__(self, manager, bank: MemoryBank, user_name: str) -> None:
        self.manager = manager
        self.bank = bank
        self.user_name = user_name
        self.forgotten = 0
        self.last_rejected: list = []  # the gate's refused facts of the last turn (as MemoryManager's)
        self._previous: str | None = None  # the user's previous turn id

    def process_turn(self, text: str, *, speaker: str | None, time: str | None = None,
                     turn: str | None = None, source: str | None = None, **kw) -> MemoryChanges:
        own = speaker is not None and speaker.strip().casefold() == self.user_name.strip().casefold()
        request = detect_forget(text) if own else None
        self.last_rejected = []
        if request is None:
            changes = self.manager.process_turn(text, speaker=speaker, time=time, turn=turn, source=source, **kw)
            self.last_rejected = list(getattr(self.manager, "last_rejected", ()))
        else:
            plan = plan_forget(self.bank, request, user_name=speaker or self.user_name,
                               previous_turn=self._previous)
            changes = MemoryChanges()
            if plan.clear:
                _, changes = delete_memories(self.bank, plan.clear, turn=turn)
                self.forgotten += len(changes.deleted)
            elif plan.ask:
                log.warning("turn %s asks to forget %r: unclear (%d candidates), nothing deleted",
                            turn, request.target, len(plan.ask))
            if request.rest:
                changes = changes.merge(self.manager.process_turn(request.rest, speaker=speaker, time=time,
                                                                  turn=turn, source=source, **kw))
                self.last_rejected = list(getattr(self.manager, "last_rejected", ()))
        if own:
            self._previous = turn
        return changes

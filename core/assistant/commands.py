"""The explicit memory commands of the chat: "remember (that) X" and "forget (about) X".

`parse_command` recognises them (a question such as "remember when we met?" is not one);
`remember` adds X, rewritten in the third person about the user (`third_person`), as a user
memory unless the bank already holds it; `forget` soft-deletes the user's active memories that
match X in one batch (`core.assistant.forgetting`, which also finds forget requests in natural
words), which one undo brings back. Both write with actor "user" and return the reply text and
what changed. No model is involved.

Threads: the caller's (the assistant's reply thread); the bank serialises its writes.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import re
from datetime import datetime

from core.agents.prompts import format_time
from core.types import MemoryChanges, MemoryOp

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

_REMEMBER = re.compile(r"^\s*(?:please\s+)?(?:remember|memori[sz]e)\s+(?:that\s+)?(?P<x>.+?)[\s.!]*$", re.I | re.S)
_FORGET = re.compile(r"^\s*(?:please\s+)?forget\s+(?:that\s+|about\s+)?(?P<x>.+?)[\s.!]*$", re.I | re.S)
_QUESTION_START = re.compile(r"^(when|what|who|how|where|why|if|whether|me|to)\b", re.I)
_VAGUE = {"it", "that", "this", "everything", "all", "me", "them", "about it", "it all"}
_MODALS = {"can", "could", "will", "would", "shall", "should", "may", "might", "must", "did", "used",
           "was", "had", "went", "got", "made", "saw", "bought", "met", "took", "left", "came", "found",
           "never", "always", "also", "really", "just", "still", "often", "usually", "sometimes"}
_STOP = {"the", "a", "an", "my", "me", "i", "of", "to", "in", "on", "and", "or", "is", "are", "was",
         "that", "about", "for", "with", "what", "which", "user", "s"}


def parse_command(text: str) -> tuple[str, str] | None:
    """("remember" | "forget", argument) for an explicit memory command, else None.

    >>> parse_command("Remember that my cat is called Tom."), parse_command("remember when we met?")
    (('remember', 'my cat is called Tom'), None)
    >>> parse_command("forget about my old job"), parse_command("forget it")
    (('forget', 'my old job'), None)
    """
    if text.rstrip().endswith("?") or len(text) > 2000:
        return None
    for name, pattern in (("remember", _REMEMBER), ("forget", _FORGET)):
        m = pattern.match(text)
        if m:
            arg = m.group("x").strip()
            if not arg or arg.lower() in _VAGUE or _QUESTION_START.match(arg):
                return None
            return name, arg
    return None


def _third_person_verb(word: str) -> str:
    low = word.lower()
    if low in _MODALS or low.endswith("ed"):
        return word
    irregular = {"am": "is", "have": "has", "do": "does", "go": "goes", "'m": "is", "'ve": "has"}
    if low in irregular:
        return irregular[low]
    if re.search(r"[^aeiou]y$", low):
        return word[:-1] + "ies"
    if re.search(r"(s|sh|ch|x|z|o)$", low):
        return word + "es"
    return word + "s"


def third_person(text: str, name: str) -> str:
    """A first-person statement rewritten about `name` (a small deterministic rewrite).

    >>> third_person("I love hiking and my dog loves it too", "Ann")
    "Ann loves hiking and Ann's dog loves it too"
    >>> third_person("I'm allergic to nuts", "Ann"), third_person("I moved to Oslo", "Ann")
    ('Ann is allergic to nuts', 'Ann moved to Oslo')
    """
    out = re.sub(r"\bI(?:'m| am)\b", f"{name} is", text)
    out = re.sub(r"\bI(?:'ve| have)\b", f"{name} has", out)
    out = re.sub(r"\bI\s+(\w+)", lambda m: f"{name} {_third_person_verb(m.group(1))}", out)
    out = re.sub(r"\bI\b", name, out)
    out = re.sub(r"\b[Mm]y\b", f"{name}'s", out)
    out = re.sub(r"\b(?:me|myself)\b", name, out)
    out = out[0].upper() + out[1:] if out else out
    return out


def words(text: str) -> set[str]:
    """The content words of `text`, lower-cased, plural/possessive "s" dropped, stop words out."""
    return {w.removesuffix("'s").rstrip("s") or w for w in re.findall(r"[\w']+", text.lower())} - _STOP


def remember(bank: MemoryBank, arg: str, *, user_name: str, turn: str) -> tuple[str, MemoryChanges]:
    """Add `arg` (in the third person about `user_name`) as the user's memory, unless a
    duplicate exists; returns the reply text and the changes."""
    fact = third_person(arg, user_name)
    dup = bank.find_duplicate(fact, speaker=user_name)
    if dup is not None:
        return f"I already remember that: {dup.text}", MemoryChanges()
    op = MemoryOp("ADD", text=fact, speaker=user_name, observed_at=format_time(datetime.now()), source=turn)
    changes = bank.apply([op], actor="user", turn=turn)
    return f"OK, I'll remember that: {fact}", changes


def forget(bank: MemoryBank, arg: str, *, user_name: str, turn: str) -> tuple[str, MemoryChanges]:
    """Soft-delete (one batch, undoable) the user's memories that clearly match `arg`, or ask
    which when unclear; returns the reply text and the changes (`forgetting.carry_out`)."""
    from core.assistant.forgetting import ForgetRequest, carry_out, plan_forget

    plan = plan_forget(bank, ForgetRequest("target", arg), user_name=user_name)
    return carry_out(bank, plan, turn=turn)

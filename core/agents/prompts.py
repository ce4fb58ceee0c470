"""Every prompt and output schema of the two agents, in one place (inference and training).

Pure, data-only functions: they take plain values and return chat messages (lists of
`{"role", "content"}` dicts), JSON schemas or parsed values. No model, bank or I/O here, so the
GRPO trainer builds exactly the prompts the app sends.

Layout rule: the fixed instruction text comes FIRST (the system message never changes between
calls) and the variable parts come last, so llama.cpp can reuse the KV cache of the shared
prefix from one call to the next.

The texts follow Mem0's fact-extraction, memory-update and LoCoMo answer prompts (Chhikara et
al., arXiv 2504.19413) plus Memory-R1's distillation rule (list the relevant memories, then
`**Answer:**`), rewritten shorter for small local models. `PROMPT_VERSION` changes whenever a
prompt or schema changes: evaluation caches key on it.

>>> parse_answer("**Memories selected as relevant:**\\n- 1 May, 2023: Jo has a cat.\\n**Answer:** a cat")
ParsedAnswer(answer='a cat', selected_lines=['1 May, 2023: Jo has a cat.'], has_marker=True)
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Iterable, Mapping, Sequence

from core.errors import ModelOutputError
from core.types import OP_EVENTS, OpEvent

# Also bumped when the manager's rules for what reaches the model change (core/agents/manager.py):
# banks built under another version differ. 2: related_min_score 0.6, unrelated facts ADDed.
PROMPT_VERSION = "mr1-prompts-2"

FACT_MAX_ITEMS = 10
FACT_MAX_CHARS = 300
MANAGER_MAX_ITEMS = 30
ANSWER_MARKER = "**Answer:**"
SELECTION_HEADER = "**Memories selected as relevant:**"
NO_MEMORIES = "(no memories)"

Message = dict  # {"role": ..., "content": ...}

# --------------------------------------------------------------------------- fact extraction

FACT_EXTRACTION_SYSTEM = """\
You extract the facts worth remembering from one message of a conversation.

Rules:
- Use only the message you are given.
- Write each fact as a short, self-contained sentence in the third person that starts with \
the speaker's name (never "I", "me" or "my").
- Keep names, places, numbers and dates exactly as said.
- Turn relative dates ("yesterday", "last week", "next month") into absolute dates using the \
time of the message.
- Remember personal details, family and friends, preferences, plans, events, activities, \
work, health, possessions and places.
- Skip greetings, small talk and questions.
- Write each fact once. If nothing is worth remembering, return an empty list.

Reply with JSON only: {"facts": ["...", "..."]}"""

# few-shot examples as chat turns (small models copy a demonstrated format far more reliably
# than one described in the system text); fixed, so they belong to the cached prefix
FACT_EXAMPLES: tuple[tuple[str, str, str, list[str]], ...] = (
    ("3:00 pm on 5 June, 2023", "John",
     "Yesterday I adopted a puppy named Buddy. We moved to Boston last year.",
     ["John adopted a puppy named Buddy on 4 June, 2023.", "John moved to Boston in 2022."]),
    ("3:10 pm on 5 June, 2023", "Kate", "Hi John! Good to see you, how are you?", []),
    ("3:12 pm on 5 June, 2023", "Kate", "I love hiking. My sister Anna is a nurse.",
     ["Kate loves hiking.", "Kate has a sister named Anna who is a nurse."]),
)


def facts_schema(max_items: int = FACT_MAX_ITEMS, max_chars: int = FACT_MAX_CHARS) -> dict:
    """JSON schema of the extractor's output, bounded so a small model cannot loop forever."""
    return {
        "type": "object",
        "properties": {
            "facts": {
                "type": "array",
                "items": {"type": "string", "minLength": 1, "maxLength": max_chars},
                "maxItems": max_items,
            }
        },
        "required": ["facts"],
        "additionalProperties": False,
    }


FACTS_SCHEMA = facts_schema()


def _turn_text(turn_text: str, speaker: str | None, time: str | None) -> str:
    return f"Time: {time or 'unknown'}\nSpeaker: {speaker or 'User'}\nMessage: {turn_text.strip()}"


def extraction_messages(turn_text: str, speaker: str | None, time: str | None) -> list[Message]:
    """The extractor's prompt for ONE turn: only the turn's own text, never injected memories.

    >>> m = extraction_messages("I love tea", "Ann", "1 May, 2023")
    >>> m[0]["role"], m[-1]["content"].splitlines()[1]
    ('system', 'Speaker: Ann')
    """
    msgs: list[Message] = [{"role": "system", "content": FACT_EXTRACTION_SYSTEM}]
    for when, who, said, facts in FACT_EXAMPLES:
        msgs.append({"role": "user", "content": _turn_text(said, who, when)})
        msgs.append({"role": "assistant", "content": json.dumps({"facts": facts})})
    msgs.append({"role": "user", "content": _turn_text(turn_text, speaker, time)})
    return msgs


def _extract_json_object(raw: str) -> object:
    """The first JSON value in `raw`, tolerating code fences and text around one object."""
    text = raw.strip()
    if text.startswith("```"):
        text = re.sub(r"^```[a-zA-Z]*\s*", "", text)
        text = re.sub(r"\s*```\s*$", "", text)
    try:
        return json.loads(text)
    except ValueError:
        pass
    start = text.find("{")
    if start < 0:
        raise ModelOutputError("model output has no JSON object", raw)
    try:
        value, _ = json.JSONDecoder().raw_decode(text[start:])
        return value
    except ValueError as exc:
        raise ModelOutputError(f"model output is not valid JSON: {exc}", raw) from exc


def is_degenerate(text: str, n: int = 3, times: int = 3) -> bool:
    """True when some run of `n` words occurs `times` or more: a small model's loop.

    >>> is_degenerate("Bo is a dog who is a dog who is a dog who is a dog"), is_degenerate("Bo is a dog")
    (True, False)
    """
    words = text.casefold().split()
    counts: dict[tuple, int] = {}
    for i in range(len(words) - n + 1):
        key = tuple(words[i:i + n])
        counts[key] = counts.get(key, 0) + 1
        if counts[key] >= times:
            return True
    return False


def parse_facts(raw: str, *, max_items: int = FACT_MAX_ITEMS, max_chars: int = FACT_MAX_CHARS) -> list[str]:
    """Facts from the extractor's raw output; raises ModelOutputError when it does not parse.

    Non-string items and degenerate (looping) facts are dropped, whitespace is collapsed,
    duplicates (case-insensitive) removed, and the bounds of the schema re-applied.

    >>> parse_facts('{"facts": ["Jo has a cat.", " jo has a cat. ", 3, ""]}')
    ['Jo has a cat.']
    >>> parse_facts('no json')
    Traceback (most recent call last):
    ...
    core.errors.ModelOutputError: model output has no JSON object
    """
    value = _extract_json_object(raw)
    if not isinstance(value, dict) or not isinstance(value.get("facts"), list):
        raise ModelOutputError('model output has no "facts" list', raw)
    out: list[str] = []
    seen: set[str] = set()
    for item in value["facts"]:
        if not isinstance(item, str):
            continue
        fact = " ".join(item.split())[:max_chars]
        key = fact.casefold()
        if fact and key not in seen and not is_degenerate(fact):
            seen.add(key)
            out.append(fact)
    return out[:max_items]


# --------------------------------------------------------------------------- memory manager

MANAGER_SYSTEM = """\
You manage a memory bank. Compare the new facts with the existing memories and decide one \
operation for each existing memory and each new fact:
- ADD: a new fact that is not in memory yet. Give it a new id (the next unused number).
- UPDATE: a new fact about the same thing as an existing memory that adds or changes \
information. Keep the memory's id, write the combined, richer text in "text" and the previous \
text in "old_memory". Merge, do not overwrite: "John adopted a dog named Buddy" + "John adopted \
a dog named Scout" gives "John adopted two dogs, Buddy and Scout".
- DELETE: a new fact contradicts an existing memory. Keep the memory's id. ADD the new fact too.
- NONE: the memory is already known or unrelated: no change.
Use only the ids of the existing memories for UPDATE, DELETE and NONE.

Reply with JSON only: {"memory": [{"id": "...", "text": "...", "event": "ADD|UPDATE|DELETE|NONE", \
"old_memory": "..."}]}"""

# one worked example as a chat turn (fixed: part of the cached prefix)
MANAGER_EXAMPLE = (
    ["John likes pizza", "John adopted a dog named Buddy", "John plays tennis"],
    ["John adopted a dog named Scout", "John no longer likes pizza", "John lives in Boston"],
    [{"id": "0", "text": "John likes pizza", "event": "DELETE"},
     {"id": "1", "text": "John adopted two dogs, Buddy and Scout", "event": "UPDATE",
      "old_memory": "John adopted a dog named Buddy"},
     {"id": "2", "text": "John plays tennis", "event": "NONE"},
     {"id": "3", "text": "John no longer likes pizza", "event": "ADD"},
     {"id": "4", "text": "John lives in Boston", "event": "ADD"}],
)

EVENTS = ("ADD", "UPDATE", "DELETE", "NONE")  # the model's words (prompt, schema), Mem0's
# The one place the model's words meet `MemoryOp.event` (core.types.OP_EVENTS): the prompt says
# NONE, as Mem0's and the paper's do; code, the bank and every count say NOOP.
_OP_OF_EVENT: dict[str, OpEvent] = dict(zip(EVENTS, OP_EVENTS))


def op_event(event: object) -> OpEvent | None:
    """The `MemoryOp.event` of an event the model wrote (case and spaces tolerated), None when
    it is no event of the schema.

    >>> op_event("NONE"), op_event(" update "), op_event("MERGE"), op_event(3)
    ('NOOP', 'UPDATE', None, None)
    """
    return _OP_OF_EVENT.get(str(event if event is not None else "").strip().upper())


def op_counts(counts: Mapping[str, Any]) -> dict[str, int]:
    """Per-event counts keyed by `MemoryOp.event`, every event present. Keys that are the
    model's words (files saved when counts were keyed "NONE") are read as their op; other
    keys are ignored, so a whole progress record can be passed.

    >>> op_counts({"ADD": 2, "NONE": 1, "dia_id": "D1:3"})
    {'ADD': 2, 'UPDATE': 0, 'DELETE': 0, 'NOOP': 1}
    """
    out: dict[str, int] = dict.fromkeys(OP_EVENTS, 0)
    for key, value in counts.items():
        event = key if key in out else op_event(key)
        if event is not None:
            out[event] += int(value or 0)
    return out


def manager_schema(n_shown: int, n_facts: int, *, max_chars: int = FACT_MAX_CHARS) -> dict:
    """The manager's output schema for one call: ids limited to the aliases it can use
    (shown memories, then one new id per fact), at most one item per memory and fact.

    >>> s = manager_schema(2, 1)
    >>> s["properties"]["memory"]["items"]["properties"]["id"]["enum"], s["properties"]["memory"]["maxItems"]
    (['0', '1', '2'], 3)
    """
    n = max(1, min(MANAGER_MAX_ITEMS, n_shown + n_facts))
    text = {"type": "string", "maxLength": max_chars}
    return {
        "type": "object",
        "properties": {
            "memory": {
                "type": "array",
                "maxItems": n,
                "items": {
                    "type": "object",
                    "properties": {
                        "id": {"type": "string", "enum": [str(i) for i in range(n)]},
                        "text": text,
                        "event": {"type": "string", "enum": list(EVENTS)},
                        "old_memory": text,
                    },
                    "required": ["id", "text", "event"],
                    "additionalProperties": False,
                },
            }
        },
        "required": ["memory"],
        "additionalProperties": False,
    }


def _manager_user(facts: Sequence[str], shown_memories: Sequence[str]) -> str:
    shown = [{"id": str(i), "text": t} for i, t in enumerate(shown_memories)]
    return (f"Existing memories:\n{json.dumps(shown, ensure_ascii=False)}\n"
            f"New facts:\n{json.dumps(list(facts), ensure_ascii=False)}")


def manager_messages(facts: Sequence[str], shown_memories: Sequence[str]) -> list[Message]:
    """The manager's prompt: shown memories get aliases "0", "1", ... in the order given.

    >>> manager_messages(["Jo has a cat"], ["Jo has a dog"])[-1]["content"].splitlines()[1]
    '[{"id": "0", "text": "Jo has a dog"}]'
    """
    ex_shown, ex_facts, ex_out = MANAGER_EXAMPLE
    return [{"role": "system", "content": MANAGER_SYSTEM},
            {"role": "user", "content": _manager_user(ex_facts, ex_shown)},
            {"role": "assistant", "content": json.dumps({"memory": ex_out})},
            {"role": "user", "content": _manager_user(facts, shown_memories)}]


def parse_manager_items(raw: str) -> list[dict]:
    """The raw `{"memory": [...]}` items (dicts only); raises ModelOutputError if it does not parse.

    >>> parse_manager_items('{"memory": [{"id": "0", "event": "NONE"}, 5]}')
    [{'id': '0', 'event': 'NONE'}]
    """
    value = _extract_json_object(raw)
    if not isinstance(value, dict) or not isinstance(value.get("memory"), list):
        raise ModelOutputError('model output has no "memory" list', raw)
    return [item for item in value["memory"] if isinstance(item, dict)]


# --------------------------------------------------------------------------- answer agent

ANSWER_SYSTEM = """\
You are an intelligent memory assistant. You answer a question using memories from past \
conversations between two people.

The memories are grouped by person. Each memory starts with the time of the conversation it \
comes from.

Instructions:
1. Read the memories of both people carefully.
2. Pay attention to the timestamps to work out when things happened.
3. If memories contradict each other, trust the most recent one.
4. Turn relative time references ("last year", "two months ago") into absolute dates, months \
or years, using the timestamp of the memory.
5. Do not confuse people mentioned in a memory with the person the memories belong to.
6. First list the memories that are relevant to the question, copied exactly, one per line \
starting with "- ". Then write "**Answer:**" and the answer in less than 5-6 words.

Format:
**Memories selected as relevant:**
- <memory>
**Answer:** <answer>"""

CHAT_SYSTEM_TEMPLATE = """\
You are {assistant}, a friendly personal assistant with a long-term memory of what {user} told \
you in earlier conversations. A message from {user} may come with memories that may be \
relevant; each memory starts with the time it was said.

Reply to {user} directly: do not repeat the memories, do not write headings or labels. Be \
natural, warm and concise; use the memories when they help; if memories contradict each \
other, trust the most recent one; never invent facts about {user}; if you do not know \
something about {user}, say so."""


def format_time(when: datetime) -> str:
    """A timestamp in LoCoMo's style, the style every memory line uses.

    >>> format_time(datetime(2023, 5, 8, 13, 56))
    '1:56 pm on 8 May, 2023'
    """
    hour = when.hour % 12 or 12
    half = "am" if when.hour < 12 else "pm"
    return f"{hour}:{when.minute:02d} {half} on {when.day} {when.strftime('%B')}, {when.year}"


def memory_block(memories_by_speaker: Mapping[str | None, Sequence[str]]) -> str:
    """`Memories for X:` sections of `- <line>` bullets, in the mapping's order.

    >>> print(memory_block({"Ann": ["1 May, 2023: Ann has a cat."], None: []}))
    Memories for Ann:
    - 1 May, 2023: Ann has a cat.
    """
    parts = []
    for speaker, lines in memories_by_speaker.items():
        if not lines and speaker is None:
            continue
        head = f"Memories for {speaker}:" if speaker else "Memories:"
        body = "\n".join(f"- {line}" for line in lines) or f"- {NO_MEMORIES}"
        parts.append(f"{head}\n{body}")
    return "\n\n".join(parts) or f"Memories:\n- {NO_MEMORIES}"


def answer_messages(question: str, memories_by_speaker: Mapping[str | None, Sequence[str]],
                    *, distill: bool = True, sources: bool = False) -> list[Message]:
    """The Answer Agent's prompt (method.md §1). `memories_by_speaker` maps a speaker (or None)
    to memory lines already formatted as `<timestamp>: <text>`.

    distill=False is the "no-distill" ablation: answer directly, no selection list.
    sources=True (our departure): the lines may carry a quote of their source turn
    (core/agents/evidence.py) and the system text says what the quotes are; sources=False is
    the paper's prompt, unchanged.
    """
    system = ANSWER_SYSTEM if distill else ANSWER_SYSTEM_NO_DISTILL
    if sources:
        system = system.replace(_ANSWER_TIME_SENTENCE, _ANSWER_TIME_SENTENCE + ANSWER_SOURCES_NOTE, 1)
    tail = ("List the relevant memories, then give the answer after **Answer:** in less than 5-6 words."
            if distill else "Give the answer after **Answer:** in less than 5-6 words.")
    user = f"{memory_block(memories_by_speaker)}\n\nQuestion: {question.strip()}\n{tail}"
    return [{"role": "system", "content": system}, {"role": "user", "content": user}]


ANSWER_SYSTEM_NO_DISTILL = ANSWER_SYSTEM.split("6. First list")[0] + (
    "6. Write \"**Answer:**\" and the answer in less than 5-6 words.\n\nFormat:\n**Answer:** <answer>")

# The answer prompt with source quotes (AnswerAgent(sources=True)): one sentence more, after
# the one on timestamps. Its version keys evaluation runs (training/eval/runner.py), not banks.
ANSWER_SOURCES_VERSION = "answer-sources-1"
_ANSWER_TIME_SENTENCE = "Each memory starts with the time of the conversation it comes from."
ANSWER_SOURCES_NOTE = (" Under a memory, (said #n: \"...\") quotes what was said in that conversation, word "
                       "for word: use it for details the memory leaves out; (said #n, quoted above) points to "
                       "a quote given earlier.")


def chat_system(user_name: str = "User", assistant_name: str = "Assistant", *, extra: str = "") -> str:
    """The chat's system text; the user's own system prompt (`extra`) comes after the fixed
    memory instructions, which always stay."""
    base = CHAT_SYSTEM_TEMPLATE.format(user=user_name, assistant=assistant_name)
    extra = (extra or "").strip()
    return f"{base}\n\n{extra}" if extra else base


def chat_user_turn(text: str, memories_by_speaker: Mapping[str | None, Sequence[str]], *,
                   user_name: str = "User", now: str | None = None, memory_off: bool = False,
                   earlier: bool = False) -> str:
    """One user turn of the chat prompt: its memory block (saying "(no memories)" when there
    are none, or, with `earlier`, that only memories shown in earlier turns apply), the time
    and the message. A pure function of its arguments, so the pipeline renders an
    earlier turn byte-identically on every later turn.

    >>> chat_user_turn("Hi", {"Ann": ["1 May, 2023: Ann has a cat."]}, user_name="Ann", now="noon")
    'Memories for Ann:\\n- 1 May, 2023: Ann has a cat.\\n\\nNow: noon\\nAnn: Hi'
    >>> chat_user_turn("Hi", {}, user_name="Ann")
    'Memories:\\n- (no memories)\\n\\nAnn: Hi'
    """
    if memory_off:
        memories = "Memories: (memory is off for this chat)\n\n"
    elif any(memories_by_speaker.values()):
        memories = memory_block({s: v for s, v in memories_by_speaker.items() if v}) + "\n\n"
    elif earlier:
        memories = "Memories: (only those shown earlier)\n\n"
    else:
        memories = memory_block({}) + "\n\n"
    when = f"Now: {now}\n" if now else ""
    return f"{memories}{when}{user_name}: {text.strip()}"


def chat_messages(text: str, memories_by_speaker: Mapping[str | None, Sequence[str]],
                  history: Iterable[tuple[str, str]] = (), *, user_name: str = "User",
                  assistant_name: str = "Assistant", now: str | None = None,
                  memory_off: bool = False, earlier: bool = False, system: str = "") -> list[Message]:
    """The chat prompt: fixed system text, then the recent chat (`(role, content)` pairs,
    oldest first, used verbatim: the caller renders earlier user turns with `chat_user_turn`
    so they stay byte-identical and their KV is reused), then the new turn (`chat_user_turn`).
    The reply is asked for directly: no memory list, no marker. `system`: the user's own
    system prompt, added to the fixed system text."""
    msgs: list[Message] = [{"role": "system", "content": chat_system(user_name, assistant_name, extra=system)}]
    for role, content in history:
        if role in ("user", "assistant") and content:
            msgs.append({"role": role, "content": content})
    msgs.append({"role": "user", "content": chat_user_turn(text, memories_by_speaker, user_name=user_name,
                                                           now=now, memory_off=memory_off, earlier=earlier)})
    return msgs


@dataclass(frozen=True)
class ParsedAnswer:
    answer: str
    selected_lines: list[str]
    has_marker: bool = True


_STRICT_MARKER = re.compile(r"\*\*\s*answer\s*:\s*\*\*|\*\*\s*answer\s*\*\*\s*:", re.IGNORECASE)
_HEADER = re.compile(r"\*{0,2}\s*memories selected as relevant\s*:?\s*\*{0,2}\s*:?", re.IGNORECASE)
_BULLET = re.compile(r"^\s*(?:[-*\u2022]|\d+[.)])\s+(.*\S)\s*$")


def find_answer_marker(text: str) -> tuple[int, int] | None:
    """(start, end) of the `**Answer:**` marker (last strict one; else an `Answer:` line start)."""
    hits = list(_STRICT_MARKER.finditer(text))
    if hits:
        return hits[-1].start(), hits[-1].end()
    loose = list(re.finditer(r"(?im)^\s*answer\s*:", text))
    if loose:
        return loose[-1].start(), loose[-1].end()
    return None


_ANSWER_PREFIX = re.compile(r"^(?:so,?\s+)?(?:the\s+)?(?:final\s+|short\s+)?answer(?:\s+is)?\s*[:\-]?\s*", re.I)


def _clean_answer(text: str, loose: bool) -> str:
    """Strip a wrapping `**bold**` and, for an answer found without the marker, a leading
    "The answer is:" (small models often write that instead of `**Answer:**`)."""
    text = text.strip()
    if loose:
        text = _ANSWER_PREFIX.sub("", text, count=1).strip()
    if text.startswith("**") and text.count("**") == 1:
        text = text[2:].strip()
    bold = re.fullmatch(r"\*\*([^*]+)\*\*\s*([.!]?)", text)
    text = (bold.group(1).strip() + bold.group(2)) if bold else text
    return " ".join(text.replace("**", "").split())  # inner bold would spoil token F1


def parse_answer(text: str) -> ParsedAnswer:
    """Split one generation into the selected memory lines and the final answer.

    Tolerant: without a marker the answer is the last line that is not a bullet or a header
    (has_marker=False), or, when there is neither a header nor a plain line, the last bullet;
    without a selection the list is empty.

    >>> parse_answer("**Answer:** Paris")
    ParsedAnswer(answer='Paris', selected_lines=[], has_marker=True)
    >>> parse_answer("- a memory\\nParis")
    ParsedAnswer(answer='Paris', selected_lines=['a memory'], has_marker=False)
    >>> parse_answer("The answer is: **Biscuit").answer, parse_answer("- **Lisbon**").answer
    ('Biscuit', 'Lisbon')
    >>> parse_answer("**Answer:** Her style is **Contemporary** dance").answer
    'Her style is Contemporary dance'
    """
    marker = find_answer_marker(text)
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if marker is not None:
        head, answer, has_marker = text[:marker[0]], text[marker[1]:], True
    else:
        head, has_marker = text, False
        rest = [ln for ln in lines if not _BULLET.match(ln) and not _HEADER.fullmatch(ln.strip())]
        bullets = [m for ln in lines if (m := _BULLET.match(ln))]
        if rest:
            answer = rest[-1]
        elif bullets and not any(_HEADER.fullmatch(ln.strip()) for ln in lines):
            answer = bullets[-1].group(1)
            head = "\n".join(m.string for m in bullets[:-1])
        else:
            answer = ""
    selected = []
    for line in head.splitlines():
        m = _BULLET.match(line)
        if m and m.group(1).strip().lower().strip(".") not in ("none", NO_MEMORIES.strip("()")):
            selected.append(m.group(1).strip())
    return ParsedAnswer(_clean_answer(answer, not has_marker), selected, has_marker)


# --------------------------------------------------------------------------- evaluation judge
# Used only by the LoCoMo evaluation's optional LLM judge (training/eval/systems.py). Follows
# the spirit of Mem0's LoCoMo judge (generous on wording and date formats), rewritten shorter.
# Not part of PROMPT_VERSION: it does not change what the agents do or what banks hold.

JUDGE_SYSTEM = """\
You grade an answer to a question about past conversations between two people. You get the \
question, the gold (correct) answer and a generated answer.

Label the generated answer CORRECT if it means the same as the gold answer or contains it: be \
generous with wording, length and date formats ("May 2023" and "7 May, 2023" can both match \
"May 2023"; a relative date that points to the same time counts). Label it WRONG if it \
contradicts the gold answer, misses its key information, or says it does not know.

Reply with JSON only: {"label": "CORRECT"} or {"label": "WRONG"}"""

JUDGE_SCHEMA = {
    "type": "object",
    "properties": {"label": {"type": "string", "enum": ["CORRECT", "WRONG"]}},
    "required": ["label"],
    "additionalProperties": False,
}


def judge_messages(question: str, gold, prediction: str) -> list[Message]:
    """The judge's prompt for one answer (gold answers can be integers).

    >>> judge_messages("When?", 2022, "in 2022")[1]["content"].splitlines()[1]
    'Gold answer: 2022'
    """
    user = (f"Question: {question.strip()}\n"
            f"Gold answer: {'' if gold is None else str(gold).strip()}\n"
            f"Generated answer: {(prediction or '').strip() or '(empty)'}\n"
            f"Output:")
    return [{"role": "system", "content": JUDGE_SYSTEM}, {"role": "user", "content": user}]


def parse_judge(raw: str) -> str:
    """"CORRECT" or "WRONG" from the judge's output; raises ModelOutputError when neither.

    >>> parse_judge('{"label": "correct"}'), parse_judge("The answer is WRONG.")
    ('CORRECT', 'WRONG')
    """
    try:
        value = _extract_json_object(raw)
        label = str(value.get("label", "")).strip().upper() if isinstance(value, dict) else ""
    except ModelOutputError:
        label = ""
    if label in ("CORRECT", "WRONG"):
        return label
    words = set(re.findall(r"[A-Z]+", raw.upper()))
    if ("CORRECT" in words) != ("WRONG" in words):
        return "CORRECT" if "CORRECT" in words else "WRONG"
    raise ModelOutputError("judge output has no CORRECT/WRONG label", raw)

"""Stream guards: when to stop a small model's generation early, and what to keep.

Small models under greedy decoding loop until the token cap: they repeat a JSON item, a phrase
inside an item, a memory line, or a unit inside a line. Each guard here is fed the pieces of
one generation in order (`feed(piece) -> bool`, True: stop now) and says what to keep. Both
agents use them through `core.types.read_stream`:
- `RepetitionGuard`: the Memory Manager's schema-constrained JSON (facts or ops): stops on a
  repeated array item or a phrase looping inside the value being written, and repairs the
  output to its distinct complete items (`core/agents/manager.py`);
- `AnswerGuard` (over `answer_stop`): the Answer Agent's QA generation: stops once the answer
  line is complete, on a repeated line, on more lines than allowed, or on a loop within a line
  (`core/agents/answer.py`).

Pure text state machines: no model, no I/O. A guard serves one generation in one thread.
"""

from __future__ import annotations

import json
import re
from typing import Callable

from core.agents import prompts

MIN_PERIOD_REPEATS = 4


def fact_key(text: str) -> str:
    """The key under which two facts (or item strings) are the same: whitespace collapsed,
    case folded, a final "." or "!" dropped.

    >>> fact_key("  John has a  Cat!") == fact_key("john has a cat")
    True
    """
    return " ".join(text.split()).casefold().rstrip(".!")


def line_key(text: str) -> str:
    """The key under which two answer/memory lines are the same: case folded, punctuation
    replaced by spaces, whitespace collapsed.

    >>> line_key("1 May, 2023: Jo's cat.")
    '1 may 2023 jo s cat'
    """
    return " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())


# --------------------------------------------------------------------------- manager JSON


class ArrayItemScanner:
    """Incremental scanner of the first JSON array in a stream: complete top-level items
    (raw JSON text) as they finish, and the unfinished one.

    >>> s = ArrayItemScanner()
    >>> s.feed('{"facts": ["a", {"b": [1]}'), s.feed(', "c'), s.open_item
    (['"a"', '{"b": [1]}'], [], '"c')
    """

    def __init__(self) -> None:
        self.text = ""
        self.array_start = -1
        self.done = False
        self._pos = 0
        self._depth = 0
        self._in_str = self._esc = False
        self._item_start: int | None = None

    @property
    def open_item(self) -> str:
        return self.text[self._item_start:] if self._item_start is not None else ""

    def feed(self, piece: str) -> list[str]:
        self.text += piece
        found: list[str] = []
        text = self.text
        while self._pos < len(text) and not self.done:
            c = text[self._pos]
            if self.array_start < 0:
                if c == "[":
                    self.array_start = self._pos
            elif self._in_str:
                if self._esc:
                    self._esc = False
                elif c == "\\":
                    self._esc = True
                elif c == '"':
                    self._in_str = False
                    if self._depth == 0 and self._item_start is not None:
                        found.append(text[self._item_start:self._pos + 1])
                        self._item_start = None
            elif c == '"':
                self._in_str = True
                if self._depth == 0:
                    self._item_start = self._pos
            elif c in "{[":
                if self._depth == 0:
                    self._item_start = self._pos
                self._depth += 1
            elif c in "}]":
                if self._depth == 0:
                    self.done = True
                else:
                    self._depth -= 1
                    if self._depth == 0 and self._item_start is not None:
                        found.append(text[self._item_start:self._pos + 1])
                        self._item_start = None
            self._pos += 1
        return found


class RepetitionGuard:
    """Stops a schema-constrained generation that has started to loop (small models under
    greedy decoding repeat an item, or a phrase inside an item, until the schema's bound).

    `feed(piece)` returns True when the generation should stop; `repaired()` is then the
    output cut back to its distinct complete items, closed as valid JSON.

    >>> g = RepetitionGuard()
    >>> [g.feed(p) for p in ['{"facts": ["a", ', '"b", ', '"A", ']], g.repaired()
    ([False, False, True], '{"facts": ["a", "b"]}')
    """

    WINDOW = 32

    def __init__(self) -> None:
        self.scanner = ArrayItemScanner()
        self.items: list[str] = []
        self._seen: set[str] = set()
        self.stopped = False

    @staticmethod
    def _key(item: str) -> str:
        try:
            value = json.loads(item)
        except ValueError:
            return item
        if isinstance(value, str):
            return fact_key(value)
        return json.dumps(value, sort_keys=True).casefold()

    def feed(self, piece: str) -> bool:
        for item in self.scanner.feed(piece):
            key = self._key(item)
            if key in self._seen:
                self.stopped = True
                return True
            self._seen.add(key)
            self.items.append(item)
        # a phrase looping inside the value being written; only that value counts, since an
        # UPDATE's `old_memory` legitimately repeats much of its new `text`
        open_item = self.scanner.open_item
        value = open_item[open_item.rfind('":') + 2:]
        if len(value) >= 3 * self.WINDOW and value[-self.WINDOW:] in value[:-self.WINDOW]:
            self.stopped = True
        return self.stopped

    def repaired(self) -> str:
        text = self.scanner.text
        return text[:self.scanner.array_start + 1] + ", ".join(self.items) + "]}"


# --------------------------------------------------------------------------- answer text


def periodic_tail(line: str, *, repeats: int = MIN_PERIOD_REPEATS, max_period: int = 80) -> int | None:
    """Start index of a run of >= `repeats` copies of one unit (3..max_period chars) that
    ends `line`, or None.

    >>> periodic_tail("Answer: Gina: Gina: Gina: Gina: ")
    8
    >>> periodic_tail("a perfectly normal line") is None
    True
    """
    n = len(line)
    for period in range(3, max_period + 1):
        if period * repeats > n:
            break
        unit = line[n - period:]
        if line[n - period * repeats:] == unit * repeats:
            start = n - period * repeats
            while start >= period and line[start - period:start] == unit:
                start -= period
            return start
    return None


def answer_stop(text: str, *, max_lines: int) -> tuple[str, int] | None:
    r"""Whether an answer generation so far should stop: `(reason, keep)` where `text[:keep]`
    is what to keep, or None to go on. Reasons: "answered" (the line after `**Answer:**` is
    complete), "repeated line", "too many lines", "loop" (a unit repeating within a line).

    >>> answer_stop("- a\n**Answer:** Paris\n", max_lines=5)
    ('answered', 21)
    >>> answer_stop("- a\n- b\n- a\n", max_lines=5)
    ('repeated line', 8)
    >>> answer_stop("- a\n- b\n- c\n", max_lines=2)
    ('too many lines', 8)
    >>> answer_stop("- a\nGina: Gina: Gina: Gina: Gina:", max_lines=5)
    ('loop', 9)
    >>> answer_stop("- a\n**Answer:** Par", max_lines=5) is None
    True
    """
    marker = prompts.find_answer_marker(text)
    if marker is not None:
        rest = text[marker[1]:]
        body = rest.lstrip()
        nl = body.find("\n")
        if body and nl > 0:
            return "answered", marker[1] + (len(rest) - len(body)) + nl
    lines = text.split("\n")
    seen: set[str] = set()
    pos = 0
    count = 0
    for i, line in enumerate(lines):
        complete = i < len(lines) - 1
        key = line_key(line)
        if complete and key:
            if key in seen and marker is None:
                return "repeated line", pos
            seen.add(key)
            count += 1
            if count > max_lines and marker is None:
                return "too many lines", pos
        pos += len(line) + 1
    last = lines[-1]
    start = periodic_tail(last)
    if start is not None:
        return "loop", len(text) - len(last) + start
    return None


def _repeats(key: str, seen: int) -> bool:
    """A chat line repeating: a sentence-long line (4+ words) seen before, or any line seen
    twice before (a short "Yes." may legitimately come back once, code often repeats lines)."""
    return seen >= 1 and (len(key.split()) >= 4 or seen >= 2)


def chat_stop(text: str) -> tuple[str, int] | None:
    r"""Whether a chat reply has started to loop: `(reason, keep)` where `text[:keep]` is what
    to keep, or None to go on. Reasons: "repeated line" (see `_repeats`), "loop" (a unit
    repeating within a line). Small models under greedy decoding repeat a line until the
    token cap; a chat reply has no answer marker to stop at.

    >>> chat_stop("Masha: Ana is a nurse in Porto.\nMasha: Ana is a nurse in Porto.\n")
    ('repeated line', 32)
    >>> chat_stop("Yes.\nYes.\nok\n") is None, chat_stop("Hi\nGina: Gina: Gina: Gina: Gina:")
    (True, ('loop', 8))
    """
    lines = text.split("\n")
    seen: dict[str, int] = {}
    pos = 0
    for line in lines[:-1]:  # complete lines
        key = line_key(line)
        if key:
            if _repeats(key, seen.get(key, 0)):
                return "repeated line", pos
            seen[key] = seen.get(key, 0) + 1
        pos += len(line) + 1
    start = periodic_tail(lines[-1])
    if start is not None:
        return "loop", len(text) - len(lines[-1]) + start
    return None


def without_repeats(text: str) -> str:
    r"""`text` without the lines `chat_stop` counts as repeats and without a looping tail: the
    visible reply after a stop (its stream already showed part of the loop).

    >>> without_repeats("Hi Sam!\nAna is a nurse in Porto.\nAna is a nurse in Porto.\nAna is")
    'Hi Sam!\nAna is a nurse in Porto.'
    """
    kept: list[str] = []
    seen: dict[str, int] = {}
    lines = text.split("\n")
    for i, line in enumerate(lines):
        key = line_key(line)
        if key and _repeats(key, seen.get(key, 0)):
            break
        if i == len(lines) - 1 and key and any(k.startswith(key) for k in seen):
            break  # the start of a repeat, cut mid-line
        seen[key] = seen.get(key, 0) + 1
        start = periodic_tail(line)
        kept.append(line if start is None else line[:start].rstrip())
    return "\n".join(kept).strip()


class StreamGuard:
    """A stop check (`text -> (reason, keep) | None`, e.g. `answer_stop`, `chat_stop`) over a
    stream, run at line ends and every `every` pieces (it rescans the text so far). After a
    stop, `found` is `(reason, keep)`.

    >>> g = AnswerGuard(max_lines=5)
    >>> [g.feed(p) for p in ["- a\\n", "**Answer:** Paris", "\\n"]], g.found
    ([False, False, True], ('answered', 21))
    """

    def __init__(self, check: Callable[[str], tuple[str, int] | None], *, every: int = 8) -> None:
        self.check = check
        self.every = every
        self.pieces: list[str] = []
        self.found: tuple[str, int] | None = None

    def feed(self, piece: str) -> bool:
        self.pieces.append(piece)
        if "\n" in piece or len(self.pieces) % self.every == 0:
            self.found = self.check("".join(self.pieces))
        return self.found is not None


def AnswerGuard(*, max_lines: int, every: int = 8) -> StreamGuard:  # a constructor: reads as a class
    """The Answer Agent's QA guard: `answer_stop` with `max_lines`."""
    return StreamGuard(lambda text: answer_stop(text, max_lines=max_lines), every=every)


def ChatGuard(*, every: int = 8) -> StreamGuard:  # a constructor: reads as a class
    """The chat reply's guard: `chat_stop`."""
    return StreamGuard(chat_stop, every=every)

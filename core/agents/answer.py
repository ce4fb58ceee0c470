"""The Answer Agent (method.md §1): retrieve, distil, answer, in one generation.

`AnswerAgent.answer(question)` retrieves up to 60 memories (30 per speaker when the bank has
two speakers), asks the model to list the relevant ones and then answer after `**Answer:**`,
and maps the listed lines back to memory ids. A missing or malformed selection is tolerated
(answer returned, selection empty, logged). With `sources=True` (the default; our departure)
the best memories come with a quote of the turn they came from (their provenance links,
core/agents/evidence.py) in a fixed quote budget beside the paper's 30 + 30 memories;
`sources=False` is the paper's prompt.

`AnswerAgent.chat(...)` is the chat variant used by the pipeline: a natural reply grounded in
the memories and the recent chat, asked for directly (no memory list, so the first visible
word is the model's first word), streamed through `on_token` with any scaffold the model
writes anyway removed (`ReplyFilter`); the memories it used are decided from the reply's words
(`memories_used`).

Threading: call from one thread at a time per backend (the backend is not thread-safe).
Departures (our choices): a question with no memories at all is answered "I don't know."
without a model call; memories that do not fit the context window are dropped from the
lowest-ranked end, using a conservative characters-per-token estimate. Decoding of QA answers
(`generate_answer`) is guarded (`core.agents.guards.AnswerGuard`): generation stops once the
answer line is complete, or when the model repeats a line, lists more lines than it was given
memories (or MAX_SELECTED_LINES), or loops within a line (small models do all three, up to the
token cap); when it stopped that way, or a selection run ended without `**Answer:**`, the kept
text plus `**Answer:**` is given back to the model to finish in
one short line. The prompt is unchanged (training samples the same prompt unguarded).
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from core.agents import evidence, prompts
from core.agents.guards import AnswerGuard, ChatGuard, line_key, without_repeats
from core.textlog import log_text
from core.types import CancelToken, ChatBackend, GenParams, Memory, read_stream

log = logging.getLogger(__name__)

NO_MEMORY_ANSWER = "I don't know."
ANSWER_PARAMS = GenParams(temperature=0.0, max_tokens=1024)
FORCED_ANSWER_TOKENS = 48  # the answer is "less than 5-6 words"
MAX_SELECTED_LINES = 20  # a selection longer than this is cut and the answer forced
CHARS_PER_TOKEN = 3.0  # conservative for English text with SmolLM2/Llama tokenizers
QUERY_CHARS = 2000  # longest query text embedded for retrieval


@dataclass
class AnswerResult:
    answer: str
    selected: list[Memory]
    retrieved: list[Memory]
    raw: str
    prompt_tokens: int = 0
    latency_s: float = 0.0
    cancelled: bool = False
    selection_ok: bool = True  # False when the selection list was missing or unmatched
    shown: list[Memory] = field(default_factory=list)  # the memories in the prompt, best first
    source_refs: list[str] = field(default_factory=list)  # refs of the source turns quoted in it


@dataclass
class _Prompt:
    messages: list[dict]
    used: list[Memory] = field(default_factory=list)  # memories that fit in the prompt
    source_refs: list[str] = field(default_factory=list)  # refs of the source turns quoted
    items: int = 0  # memory lines + source quotes


def match_selected(lines: Sequence[str], memories: Sequence[Memory]) -> list[Memory]:
    """Map the selected memory lines back to memories: exact line or text first, then
    containment, then the best word overlap (Jaccard >= 0.6). Unmatched lines are skipped.

    >>> ms = [Memory(1, "Jo has a cat", observed_at="1 May, 2023"), Memory(2, "Jo lives in Oslo")]
    >>> [m.id for m in match_selected(["1 May, 2023: Jo has a cat.", "Jo lives in Oslo, Norway", "??"], ms)]
    [1, 2]
    """
    keyed = [(m, line_key(m.prompt_line()), line_key(m.text)) for m in memories]
    out: list[Memory] = []
    for line in lines:
        key = line_key(line)
        if not key:
            continue
        best = next((m for m, pl, t in keyed if key in (pl, t)), None)
        if best is None:
            best = next((m for m, pl, t in keyed if t and (t in key or key in t)), None)
        if best is None:
            words = set(key.split())
            scored = [(len(words & set(pl.split())) / len(words | set(pl.split())), m) for m, pl, _ in keyed]
            score, cand = max(scored, key=lambda s: s[0], default=(0.0, None))
            best = cand if score >= 0.6 else None
        if best is not None and all(best.id != m.id for m in out):
            out.append(best)
    return out


def generate_answer(backend: ChatBackend, messages, params: GenParams, *, max_lines: int,
                    force_marker: bool, cancel: CancelToken | None = None) -> tuple[str, str | None]:
    """Generate one QA answer under an `AnswerGuard` (core/agents/guards.py); returns
    `(raw, stop_reason)`.

    When the guard stopped a run that had not answered, or (`force_marker`) the run ended
    without `**Answer:**`, the kept text + "**Answer:**" is continued by the model for one
    short line (the chat prompt's KV prefix is reused, so this costs a few tokens)."""
    guard = AnswerGuard(max_lines=max_lines)
    pieces, _ = read_stream(backend.complete(messages, params=params, cancel=cancel), guard.feed)
    text = "".join(pieces)
    found = guard.found
    reason, text = (found[0], text[:found[1]]) if found else (None, text)
    if reason is not None:
        log.info("answer generation stopped early: %s", reason)
    if cancel is not None and cancel.cancelled:
        return text, reason
    if reason == "answered" or (prompts.find_answer_marker(text) is not None and reason is None):
        return text, reason
    if reason is None and not (force_marker and _ends_in_selection(text)):
        return text, reason
    head = text.rstrip()
    prefix = (head + "\n" if head else "") + "**Answer:**"
    forced = GenParams(temperature=0.0, max_tokens=FORCED_ANSWER_TOKENS, stop=("\n",))
    tail = "".join(backend.complete_text(backend.apply_chat_template(messages) + prefix, params=forced, cancel=cancel))
    line = next((ln for ln in tail.splitlines() if ln.strip()), "")
    if not line:
        return text, reason
    return prefix + " " + line.strip(), reason or "no marker"


def _ends_in_selection(text: str) -> bool:
    r"""True when `text` has no line after its memory list that could be the answer.

    >>> _ends_in_selection("- a memory\n"), _ends_in_selection("- a memory\nParis"), _ends_in_selection("")
    (True, False, True)
    """
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return not lines or lines[-1].startswith(("-", "*", "•")) or lines[-1].lower().startswith("memories")


_STOPWORDS = frozenset("""a an the and or but if so of to in on at by for with from about as into over after
before than then that this these those there here is are was were be been being am do does did have has had
not no yes you your yours i me my mine we our us he him his she her they them their it its what which who whom
when where why how can could would should will shall may might must just also very really too all any some
each more most much many such only own same other one two said says told tell like get got""".split())

# Scaffold a small model may write in a chat reply (the QA format's list and marker, our
# prompt's own labels). Line starts, matched on the line with leading markup removed.
_SCAFFOLD_HEADER = re.compile(
    r"(?:the\s+)?(?:relevant\s+)?memor(?:y|ies)(?:\s+(?:selected\s+as\s+relevant|selected|used|relevant"
    r"|for\s+[^:\n]{1,40}))?[*_\s]*:", re.I)
_SCAFFOLD_MARKER = re.compile(
    r"(?:so,?\s+)?(?:the\s+|my\s+)?(?:final\s+|short\s+)?(?:answer|reply|response)(?:\s+is)?(?:\*\*|__)?\s*:"
    r"(?:\*\*|__)?[ \t]*", re.I)
_SCAFFOLD_NOW = re.compile(r"now\s*:", re.I)
_SCAFFOLD_EMPTY = re.compile(r"[-*\u2022\s]*(?:none|\(?no memories\)?|nothing)[.\s]*", re.I)
_STRICT_INLINE = re.compile(r"\*\*\s*answer\s*:\s*\*\*|\*\*\s*answer\s*\*\*\s*:", re.I)
_MARKUP = "*_# \t"
_DECIDE_CHARS = 80  # a held line is classified once this long, newline or not


def _starts(norm: str, words: Sequence[str]) -> str:
    """"match" when `norm` starts with one of `words`, "maybe" while it is a prefix of one."""
    if any(norm.startswith(w) for w in words):
        return "match"
    return "maybe" if any(w.startswith(norm) for w in words) else "no"


# line starts that may open a scaffold label (the assistant's own "Name:" is added per filter)
_SCAFFOLD_LABELS = ("memor", "the memor", "relevant memor", "answer", "the answer", "final answer", "so the answer",
                    "so, the answer", "short answer", "my answer", "reply", "my reply", "the reply", "response",
                    "the response", "now", "none", "(no memor", "no memor", "nothing")


class ReplyFilter:
    """Streams only the visible reply of a chat generation, whatever scaffold the model writes.

    The chat prompt asks for the reply directly, but small models still write the QA format or
    echo the prompt's labels. Dropped, anywhere in the output: memory headers ("Memories:",
    "Memories for Ann:", "**Memories selected as relevant:**", with whatever follows on that
    line), the bullets under such a header, bullets that copy one of `memory_lines`, "none" /
    "(no memories)" lines, "Now: ..." lines. Removed, keeping the text after them: answer
    markers at a line start ("**Answer:**", "Answer:", "The answer:", "The answer is:",
    "Reply:", "<assistant>:") and a bold "**Answer:**" anywhere. Everything else streams as it
    comes; a line is held only while it could still turn out to be scaffold (a bullet until its
    end, a possible label until it is told apart). `finish()` returns the visible text (what
    was emitted, stripped). Pure text processing: call from one thread.
    """

    def __init__(self, emit: Callable[[str], None] | None, *, memory_lines: Sequence[str] = (),
                 assistant_name: str = "Assistant") -> None:
        self.emit = emit
        self.out = ""  # the visible text emitted so far
        self._memory_keys = {k for k in (line_key(m) for m in memory_lines) if k}
        self._assistant = assistant_name.strip().lower()
        self._labels = _SCAFFOLD_LABELS + (self._assistant + ":",)
        self._line = ""  # the current line's unhandled text
        self._state = "start"  # start (line not classified) | plain (streaming) | drop (until newline)
        self._section = False  # inside a memory list (after a header, before a plain line)
        self._newlines = 0  # newlines owed before the next visible text

    # --- output -------------------------------------------------------------------------
    def _visible(self, text: str) -> None:
        if not text:
            return
        if not self.out:
            text = text.lstrip()
            if not text:
                return
            self._newlines = 0
        if self._newlines:
            text = "\n" * min(self._newlines, 2) + text
            self._newlines = 0
        self.out += text
        if self.emit:
            self.emit(text)

    # --- classification -----------------------------------------------------------------
    def _classify(self, line: str, complete: bool) -> str | None:
        """What the start of `line` is: "drop", "bullet", "marker", "plain", or None (undecided)."""
        norm = line.lstrip(_MARKUP).lower()
        if not norm:
            return ("blank" if not line.strip() else "drop") if complete else None
        if norm[0] in "-\u2022" or line.lstrip().startswith("* ") or re.match(r"\d+[.)]\s", norm):
            return "bullet" if complete else None
        if not complete and re.fullmatch(r"\d+[.)]?", norm):
            return None
        start = _starts(norm, self._labels)
        if start == "no":
            return "plain"
        if start == "maybe" and not complete:
            return None
        decided = complete or len(norm) >= _DECIDE_CHARS or ":" in norm or "\n" in norm
        if _SCAFFOLD_HEADER.match(norm) or _SCAFFOLD_NOW.match(norm):
            return "drop" if decided else None
        marker = _SCAFFOLD_MARKER.match(norm)
        if marker or norm.startswith(self._assistant + ":"):
            end = marker.end() if marker else len(self._assistant) + 1
            return "marker" if complete or norm[end:].strip(_MARKUP) else None
        if _SCAFFOLD_EMPTY.fullmatch(norm):
            return "drop" if complete else None
        if not decided and (":" not in norm):
            return None
        return "plain"

    def _is_memory_copy(self, line: str) -> bool:
        m = re.match(r"\s*(?:[-*\u2022]|\d+[.)])\s+(.*)", line)
        body = line_key(m.group(1) if m else line)
        if not body:
            return False
        if _SCAFFOLD_EMPTY.fullmatch(m.group(1) if m else line):
            return True
        return body in self._memory_keys or any(body in k or k in body for k in self._memory_keys if len(k) > 8)

    def _strip_marker(self, line: str) -> str:
        lead = len(line) - len(line.lstrip(_MARKUP))
        norm = line[lead:]
        hit = _SCAFFOLD_MARKER.match(norm)
        if hit is None and norm.lower().startswith(self._assistant + ":"):
            return norm[len(self._assistant) + 1:].lstrip(" \t")
        return norm[hit.end():] if hit else norm

    # --- streaming ----------------------------------------------------------------------
    def feed(self, piece: str) -> None:
        self._line += piece
        self._pump(final=False)

    def _pump(self, final: bool) -> None:
        while True:
            nl = self._line.find("\n")
            complete = nl >= 0 or final
            line = self._line[:nl] if nl >= 0 else self._line
            if self._state == "drop":
                if nl < 0:
                    self._line = "" if final else self._line
                    return
                self._end_line(nl, visible=False)
                continue
            if self._state == "start":
                inline = _STRICT_INLINE.search(line)
                if inline is not None and line[inline.end():].strip():
                    # "<scaffold> **Answer:** reply": the part before the marker is dropped
                    # when it is scaffold, the marker always.
                    before = line[:inline.start()]
                    kind = self._classify(before, True) if before.strip() else "drop"
                    if kind == "plain" and not self._section:
                        self._visible(before.rstrip() + " ")
                    self._section = False
                    self._line = self._line[inline.end():].lstrip(" \t")
                    self._state = "plain"
                    continue
                kind = self._classify(line, complete)
                if kind is None:
                    return
                if kind == "blank":
                    if nl < 0:
                        self._line = ""
                        return
                    self._end_line(nl, visible=True)
                    continue
                if kind == "bullet":
                    keep = not self._section and not self._is_memory_copy(line)
                    if keep:
                        self._visible(line)
                    if nl < 0:
                        self._line = ""
                        return
                    self._end_line(nl, visible=keep)
                    continue
                if kind == "drop":
                    if _SCAFFOLD_HEADER.match(line.lstrip(_MARKUP)):
                        self._section = True
                    self._state = "drop"
                    if nl < 0:
                        self._line = ""
                        return
                    self._end_line(nl, visible=False)
                    continue
                if kind == "marker":
                    self._line = self._strip_marker(self._line)
                self._section = False
                self._state = "plain"
                continue
            # plain: stream up to a possible inline marker; hold a trailing "*..." that may be one
            inline = _STRICT_INLINE.search(line)
            if inline is not None:
                self._visible(line[:inline.start()].rstrip())
                self._line = self._line[inline.end():].lstrip(" \t")
                continue
            if nl >= 0:
                self._visible(line.replace(prompts.NO_MEMORIES, "").rstrip())
                self._end_line(nl, visible=True)
                continue
            cut = len(line)
            if not final:
                star = line.rfind("**")
                if star >= 0 and len(line) - star < 16:
                    cut = star
                paren = line.rfind("(")
                if paren >= 0 and len(line) - paren < len(prompts.NO_MEMORIES):
                    cut = min(cut, paren)
            head = line[:cut].replace(prompts.NO_MEMORIES, "")
            self._visible(head if not final else head.rstrip())
            self._line = self._line[cut:]
            return

    def _end_line(self, nl: int, *, visible: bool) -> None:
        self._line = self._line[nl + 1:]
        self._state = "start"
        if visible and self.out:
            self._newlines += 1

    def finish(self) -> str:
        """The visible reply text; emits whatever was still held back."""
        if self._line:
            self._pump(final=True)
        if self._state == "plain" and self._line:
            self._visible(self._line.replace(prompts.NO_MEMORIES, "").rstrip())
        self._line = ""
        self._state = "start"
        return self.out.strip()


def _content_words(text: str, drop: frozenset[str] = frozenset()) -> set[str]:
    words = set(re.findall(r"[a-z0-9]+", text.lower().replace("'s ", " ")))
    return {w for w in words if (len(w) >= 3 or w.isdigit()) and w not in _STOPWORDS and w not in drop}


def memories_used(reply: str, memories: Sequence[Memory], message: str = "") -> list[Memory]:
    """The memories a chat reply draws on, decided from the text (the chat model does not
    list them): a memory counts when the reply uses one of its content words that is not in
    the user's `message` (a word only echoed from the question proves nothing) and either
    uses two of its content words (all, when it has fewer) or that word is a name or number
    of the memory ("Tom", "2023"). Speaker names and stopwords do not count.
    In the given order.

    >>> ms = [Memory(1, "Ann's cat is named Tom", speaker="Ann"), Memory(2, "Ann lives in Oslo", speaker="Ann")]
    >>> [m.id for m in memories_used("Your cat is Tom!", ms, "What's my cat called?")]
    [1]
    >>> memories_used("I like cats too.", ms, "What's my cat called?")
    []
    """
    said = _content_words(reply)
    asked = _content_words(message)
    out = []
    for m in memories:
        names = frozenset(w.lower() for w in (m.speaker or "").split())
        words = _content_words(m.text, names)
        hit = words & said
        new = hit - asked
        proper = {w.lower() for w in re.findall(r"\b(?:[A-Z][a-z0-9]+|\d+)\b", m.text)}
        if new and (len(hit) >= min(2, len(words)) or new & proper):
            out.append(m)
    return out


class AnswerAgent:
    """Answers questions (and chat messages) from one `MemoryBank` with one chat backend."""

    def __init__(self, bank, backend: ChatBackend, *, k: int = 60, params: GenParams = ANSWER_PARAMS,
                 distill: bool = True, sources: bool = True,
                 excerpt_chars: int = evidence.EXCERPT_CHARS, max_quotes: int = evidence.QUOTES_PER_SPEAKER,
                 quote_chars: int = evidence.QUOTE_CHARS) -> None:
        self.bank = bank
        self.backend = backend
        self.k = k
        self.params = params
        self.distill = distill
        self.sources = sources
        self.excerpt_chars = excerpt_chars
        self.max_quotes = max_quotes
        self.quote_chars = quote_chars

    # --- retrieval --------------------------------------------------------------------
    def _speakers(self) -> list[str]:
        out = []
        for s in self.bank.speakers():
            name = s[0] if isinstance(s, (tuple, list)) else getattr(s, "speaker", s)
            if name:
                out.append(str(name))
        return out

    def retrieve(self, question: str, *, k: int | None = None, speakers: Sequence[str] | None = None,
                 min_score: float = -1.0) -> list[Memory]:
        """Up to k memories for a question: k // 2 per speaker when there are exactly two
        speakers (the paper's 30 + 30), else the global top k. One query embedding. Memories
        below cosine `min_score` are left out (the chat uses a floor; QA keeps the top k)."""
        k = k or self.k
        speakers = list(speakers) if speakers is not None else self._speakers()
        vec = self.bank.embed([question[:QUERY_CHARS]])[0]
        if len(speakers) == 2:
            per = max(1, k // 2)
            hits = [h for s in speakers for h in self.bank.search_by_vector(vec, k=per, speaker=s)]
        elif len(speakers) == 1 and speakers[0]:
            hits = self.bank.search_by_vector(vec, k=k, speaker=speakers[0])
        else:
            hits = self.bank.search_by_vector(vec, k=k)
        seen: set[int] = set()
        out = []
        for h in hits:
            if h.memory.id not in seen and h.memory.status == "active" and h.score >= min_score:
                seen.add(h.memory.id)
                out.append(h.memory)
        return out

    # --- prompt assembly --------------------------------------------------------------
    def _budget_chars(self, reserve_tokens: int) -> int:
        n_ctx = int(getattr(self.backend, "n_ctx", None) or 4096)
        return int(max(256, n_ctx - reserve_tokens) * CHARS_PER_TOKEN)

    @staticmethod
    def group(memories: Sequence[Memory], speakers: Sequence[str | None] | None = None) -> dict:
        """memory lines by speaker, speakers in first-seen (rank) order, or the given order."""
        groups: dict = {s: [] for s in (speakers or [])}
        for m in memories:
            groups.setdefault(m.speaker, []).append(m.prompt_line())
        return groups

    def _fit(self, memories: Sequence[Memory], fixed_chars: int, reserve_tokens: int) -> list[Memory]:
        budget = self._budget_chars(reserve_tokens) - fixed_chars
        used: list[Memory] = []
        total = 0
        for m in memories:
            cost = len(m.prompt_line()) + 4
            if total + cost > budget:
                log.info("prompt full: %d of %d memories fit", len(used), len(memories))
                break
            used.append(m)
            total += cost
        return used

    def build_prompt(self, question: str, memories: Sequence[Memory], *, distill: bool | None = None,
                     k: int | None = None) -> _Prompt:
        """The QA prompt with as many of `memories` (best first) as fit the context.

        With `sources` (the default) the best memories' lines carry an excerpt of their source
        turn (core/agents/evidence.py: each turn quoted once, a few per speaker within a
        character budget) under the same memories; without, or when no memory has a source
        turn with text, the paper's prompt: the memory lines only."""
        distill = self.distill if distill is None else distill
        question = question[: self._budget_chars(self.params.max_tokens) // 4]
        fixed = len(prompts.ANSWER_SYSTEM) + len(question) + 200
        speakers = [s for s in dict.fromkeys(m.speaker for m in memories)]
        links = self.bank.sources([m.id for m in memories]) if self.sources and memories else {}
        if not any(evidence.evidence_source(m, links.get(m.id, ())) for m in memories):
            used = self._fit(memories, fixed, self.params.max_tokens)
            return _Prompt(prompts.answer_messages(question, self.group(used, speakers), distill=distill), used,
                           items=len(used))
        fixed += len(prompts.ANSWER_SOURCES_NOTE)
        lay = evidence.layout(memories, links, k=k or self.k, speakers=speakers,
                              budget_chars=self._budget_chars(self.params.max_tokens) - fixed,
                              excerpt_chars=self.excerpt_chars, max_quotes=self.max_quotes,
                              quote_chars=self.quote_chars)
        if len(lay.used) < len(memories):
            log.info("answer prompt: %d of %d memories shown, %d source quotes, %d items", len(lay.used),
                     len(memories), len(lay.source_refs), lay.items)
        messages = prompts.answer_messages(question, lay.groups, distill=distill, sources=True)
        return _Prompt(messages, lay.used, lay.source_refs, lay.items)

    # --- generation -------------------------------------------------------------------
    def _run(self, messages, params: GenParams, cancel: CancelToken | None,
             on_piece: Callable[[str], bool | None] | None = None) -> str:
        """Generate; `on_piece(piece)` returning True stops the generation (the stream is
        closed so the backend frees its lock)."""
        stream = self.backend.complete(messages, params=params, cancel=cancel)
        pieces, _stopped = read_stream(stream, lambda piece: bool(on_piece(piece)) if on_piece else False)
        return "".join(pieces)

    def _prompt_tokens(self, messages) -> int:
        try:
            return sum(self.backend.count_tokens(m["content"]) for m in messages)
        except Exception:  # counting is informative only
            return 0

    def answer(self, question: str, *, cancel: CancelToken | None = None, k: int | None = None,
               speakers: Sequence[str] | None = None, distill: bool | None = None,
               memories: Sequence[Memory] | None = None) -> AnswerResult:
        """Retrieve (unless `memories` is given), generate once, parse. With no memories at all
        it answers NO_MEMORY_ANSWER without calling the model."""
        start = time.perf_counter()
        distill = self.distill if distill is None else distill
        retrieved = list(memories) if memories is not None else self.retrieve(question, k=k, speakers=speakers)
        if not retrieved:
            log.info("no memories for a question of %d chars: answering that it does not know", len(question))
            return AnswerResult(NO_MEMORY_ANSWER, [], [], "", 0, time.perf_counter() - start)
        prompt = self.build_prompt(question, retrieved, distill=distill, k=k)
        raw, _ = generate_answer(self.backend, prompt.messages, self.params,
                                 max_lines=min(prompt.items + 2, MAX_SELECTED_LINES),
                                 force_marker=distill, cancel=cancel)
        parsed = prompts.parse_answer(raw)
        selected = match_selected(parsed.selected_lines, prompt.used) if distill else []
        ok = (not distill) or bool(selected)
        if distill and not selected:
            log.info("answer without a usable selection (marker=%s, lines=%d, %d chars)",
                     parsed.has_marker, len(parsed.selected_lines), len(raw))
            log_text("answer output without a usable selection", raw[:500])
        if not parsed.has_marker:
            log.info("answer without the **Answer:** marker; using the output as the answer (%d chars)",
                     len(parsed.answer))
        answer = " ".join(parsed.answer.split())
        return AnswerResult(answer, selected, retrieved, raw, self._prompt_tokens(prompt.messages),
                            time.perf_counter() - start, bool(cancel and cancel.cancelled), ok,
                            list(prompt.used), list(prompt.source_refs))

    def chat_prompt(self, text: str, *, history: Sequence[tuple[str, str]] = (), memories: Sequence[Memory] = (),
                    params: GenParams | None = None, user_name: str = "User", assistant_name: str = "Assistant",
                    now: str | None = None, memory_off: bool = False, history_memories: Sequence[Memory] = (),
                    system: str = "") -> list[prompts.Message]:
        """The messages `chat` sends for the same arguments, byte for byte (the pipeline's
        prefill evaluates them ahead of the reply)."""
        return self._chat_prompt(text, history, memories, params or GenParams(temperature=0.7, max_tokens=512),
                                 user_name=user_name, assistant_name=assistant_name, now=now,
                                 memory_off=memory_off, history_memories=history_memories, system=system)[0]

    def _chat_prompt(self, text: str, history: Sequence[tuple[str, str]], memories: Sequence[Memory],
                     params: GenParams, *, user_name: str, assistant_name: str, now: str | None,
                     memory_off: bool, history_memories: Sequence[Memory],
                     system: str) -> tuple[list[prompts.Message], list[Memory], str]:
        """The chat prompt, the memories that fit in it and the (possibly cut) message."""
        budget = self._budget_chars(params.max_tokens)
        text = text if len(text) <= budget // 3 else text[: budget // 3] + " [... message truncated ...]"
        history = list(history)
        while history and sum(len(c) for _, c in history) > budget // 3:
            history.pop(0)  # oldest first
        hist_chars = sum(len(c) for _, c in history)
        fixed = len(prompts.chat_system(user_name, assistant_name, extra=system)) + len(text) + hist_chars + 200
        used = self._fit(memories, fixed, params.max_tokens)
        messages = prompts.chat_messages(text, self.group(used), history, user_name=user_name,
                                         assistant_name=assistant_name, now=now, memory_off=memory_off,
                                         earlier=bool(history_memories) and not used, system=system)
        return messages, used, text

    def chat(self, text: str, *, history: Sequence[tuple[str, str]] = (), memories: Sequence[Memory] = (),
             on_token: Callable[[str], None] | None = None, cancel: CancelToken | None = None,
             params: GenParams | None = None, user_name: str = "User", assistant_name: str = "Assistant",
             now: str | None = None, memory_off: bool = False,
             history_memories: Sequence[Memory] = (), system: str = "") -> AnswerResult:
        """A streamed chat reply grounded in `memories` (already retrieved and chosen, in the
        order they are shown) and `history` (`(role, content)` oldest first, used verbatim;
        `history_memories` are the memories its user turns show). The message, the history
        (oldest dropped first) and the memories (last dropped first) are cut to fit the
        context. `on_token` gets only the visible reply (`ReplyFilter`), in the calling thread;
        `selected` is `memories_used(reply, ...)` over the memories in the prompt. On cancel the
        partial reply is returned with cancelled=True. `system`: the user's own system prompt."""
        start = time.perf_counter()
        params = params or GenParams(temperature=0.7, max_tokens=512)
        messages, used, text = self._chat_prompt(text, history, memories, params, user_name=user_name,
                                                 assistant_name=assistant_name, now=now, memory_off=memory_off,
                                                 history_memories=history_memories, system=system)
        shown = [*history_memories, *used]
        flt = ReplyFilter(on_token, memory_lines=[m.prompt_line() for m in shown], assistant_name=assistant_name)
        guard = ChatGuard()

        def piece(p: str) -> bool:
            flt.feed(p)
            return guard.feed(p)

        raw = self._run(messages, params, cancel, piece)
        reply = flt.finish()
        if guard.found is not None:  # a loop: the stream showed its start; the reply keeps none of it
            log.info("chat reply stopped: %s", guard.found[0])
            reply = without_repeats(reply)
        selected = memories_used(reply, list({m.id: m for m in shown}.values()), text)
        return AnswerResult(reply, selected, list(memories), raw, self._prompt_tokens(messages),
                            time.perf_counter() - start, bool(cancel and cancel.cancelled), bool(selected))

"""The Answer Agent (method.md §1): retrieve, distil, answer, in one generation.

`AnswerAgent.answer(question)` retrieves up to 60 memories (30 per speaker when the bank has
two speakers), asks the model to list the relevant ones and then answer after `**Answer:**`,
and maps the listed lines back to memory ids. A missing or malformed selection is tolerated
(answer returned, selection empty, logged).

`AnswerAgent.chat(...)` is the chat variant used by the pipeline: a natural reply grounded in
the memories and the recent chat, streamed through `on_token` with the selection part held
back (`ReplyFilter`).

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
import time
from dataclasses import dataclass, field
from typing import Callable, Sequence

from core.agents import prompts
from core.agents.guards import AnswerGuard, line_key
from core.textlog import log_text
from core.types import CancelToken, ChatBackend, GenParams, Memory, read_stream

log = logging.getLogger(__name__)

NO_MEMORY_ANSWER = "I don't know."
ANSWER_PARAMS = GenParams(temperature=0.0, max_tokens=1024)
FORCED_ANSWER_TOKENS = 48  # the answer is "less than 5-6 words"
MAX_SELECTED_LINES = 20  # a selection longer than this is cut and the answer forced
CHARS_PER_TOKEN = 3.0  # conservative for English text with SmolLM2/Llama tokenizers
QUERY_CHARS = 2000  # longest query text embedded for retrieval
_HEADER_WORDS = "memories selected as relevant"


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


@dataclass
class _Prompt:
    messages: list[dict]
    used: list[Memory] = field(default_factory=list)  # memories that fit in the prompt


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


class ReplyFilter:
    """Streams only the reply part of a chat generation.

    Holds text back while the model writes the `**Memories selected as relevant:**` list and
    passes on what follows `**Answer:**`. If the model starts replying directly (no header),
    everything is passed on. `finish()` returns the reply text (the whole output without the
    selection when no marker ever came).
    """

    def __init__(self, emit: Callable[[str], None] | None) -> None:
        self.emit = emit
        self.raw = ""
        self.mode = "sniff"  # sniff -> selecting -> answering | direct
        self.sent = 0  # characters of `self.reply_text` already emitted
        self._reply_start = 0

    def _send_upto(self, end: int) -> None:
        if end > self.sent:
            piece = self.raw[self.sent:end]
            self.sent = end
            if piece and self.emit:
                self.emit(piece)

    def feed(self, piece: str) -> None:
        self.raw += piece
        if self.mode == "sniff":
            head = self.raw.lstrip().lower()
            if len(head) >= 3:
                held = (head.startswith(("*", "-", "answer")) or _HEADER_WORDS.startswith(head[:len(_HEADER_WORDS)])
                        or head.startswith(_HEADER_WORDS))
                if held:
                    self.mode = "selecting"
                else:
                    self.mode = "direct"
                    self._reply_start = self.sent = len(self.raw) - len(self.raw.lstrip())
        if self.mode == "selecting":
            hit = prompts.find_answer_marker(self.raw)
            if hit is not None and self.raw[hit[1]:].strip():
                self._start_answer(hit[1])
        if self.mode in ("answering", "direct"):
            self._send_upto(len(self.raw))

    def _start_answer(self, end: int) -> None:
        self.mode = "answering"
        rest = self.raw[end:]
        self._reply_start = end + (len(rest) - len(rest.lstrip()))
        self.sent = self._reply_start

    def finish(self) -> str:
        """The reply text; emits whatever was still held back."""
        if self.mode in ("sniff", "selecting"):
            parsed = prompts.parse_answer(self.raw)
            structured = parsed.has_marker or parsed.selected_lines or _HEADER_WORDS in self.raw.lower()
            text = parsed.answer if structured else self.raw.strip()
            if text and self.emit:
                self.emit(text)
            self.mode = "done"
            return text
        self._send_upto(len(self.raw))
        return self.raw[self._reply_start:].strip()


class AnswerAgent:
    """Answers questions (and chat messages) from one `MemoryBank` with one chat backend."""

    def __init__(self, bank, backend: ChatBackend, *, k: int = 60, params: GenParams = ANSWER_PARAMS,
                 distill: bool = True) -> None:
        self.bank = bank
        self.backend = backend
        self.k = k
        self.params = params
        self.distill = distill

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

    def build_prompt(self, question: str, memories: Sequence[Memory], *, distill: bool | None = None) -> _Prompt:
        """The QA prompt with as many of `memories` (best first) as fit the context."""
        distill = self.distill if distill is None else distill
        question = question[: self._budget_chars(self.params.max_tokens) // 4]
        fixed = len(prompts.ANSWER_SYSTEM) + len(question) + 200
        used = self._fit(memories, fixed, self.params.max_tokens)
        speakers = [s for s in dict.fromkeys(m.speaker for m in memories)]
        return _Prompt(prompts.answer_messages(question, self.group(used, speakers), distill=distill), used)

    # --- generation -------------------------------------------------------------------
    def _run(self, messages, params: GenParams, cancel: CancelToken | None,
             on_piece: Callable[[str], None] | None = None) -> str:
        pieces = []
        for piece in self.backend.complete(messages, params=params, cancel=cancel):
            pieces.append(piece)
            if on_piece is not None:
                on_piece(piece)
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
        prompt = self.build_prompt(question, retrieved, distill=distill)
        raw, _ = generate_answer(self.backend, prompt.messages, self.params,
                                 max_lines=min(len(prompt.used) + 2, MAX_SELECTED_LINES),
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
                            time.perf_counter() - start, bool(cancel and cancel.cancelled), ok)

    def chat(self, text: str, *, history: Sequence[tuple[str, str]] = (), memories: Sequence[Memory] = (),
             on_token: Callable[[str], None] | None = None, cancel: CancelToken | None = None,
             params: GenParams | None = None, user_name: str = "User", assistant_name: str = "Assistant",
             now: str | None = None, memory_off: bool = False) -> AnswerResult:
        """A streamed chat reply grounded in `memories` (already retrieved) and `history`
        (`(role, content)` oldest first). The message, the history (oldest dropped first) and
        the memories (lowest-ranked dropped first) are cut to fit the context. `on_token` gets
        only the reply part, in the calling thread. On cancel the partial reply is returned
        with cancelled=True."""
        start = time.perf_counter()
        params = params or GenParams(temperature=0.7, max_tokens=512)
        budget = self._budget_chars(params.max_tokens)
        text = text if len(text) <= budget // 3 else text[: budget // 3] + " [... message truncated ...]"
        history = list(history)
        while history and sum(len(c) for _, c in history) > budget // 3:
            history.pop(0)  # oldest first
        hist_chars = sum(len(c) for _, c in history)
        fixed = len(prompts.chat_system(user_name, assistant_name)) + len(text) + hist_chars + 200
        used = self._fit(memories, fixed, params.max_tokens)
        messages = prompts.chat_messages(text, self.group(used), history, user_name=user_name,
                                         assistant_name=assistant_name, now=now, memory_off=memory_off)
        flt = ReplyFilter(on_token)
        raw = self._run(messages, params, cancel, flt.feed)
        reply = flt.finish()
        parsed = prompts.parse_answer(raw)
        selected = match_selected(parsed.selected_lines, used)
        return AnswerResult(reply, selected, list(memories), raw, self._prompt_tokens(messages),
                            time.perf_counter() - start, bool(cancel and cancel.cancelled), bool(selected))

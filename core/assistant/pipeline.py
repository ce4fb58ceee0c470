"""The chat pipeline: a user message -> a streamed, memory-grounded reply -> the Memory Manager
in the background.

`Assistant.reply` (called from one UI/CLI worker thread at a time) stores the user message at
once, retrieves memories, streams the reply through `on_token` in the calling thread, stores
the reply (partial text if cancelled) and queues the turn for the manager. The queue is
durable: the user message is marked pending in the transaction that stores it, the mark is
cleared in the transaction that applies the turn's ops (or, for a turn that yields nothing or
fails, recorded as such), and `resume_pending()` at start-up queues what a killed or closed
run left, so every stored message is given to the manager exactly once. The manager runs in
ONE background thread, so it never delays a reply: it waits while a reply is being generated,
and when both roles share one model object its in-flight generation is cancelled and redone
after the reply (nothing is written until a turn's single `bank.apply`). The next question sees
the bank as updated by every turn processed so far.

The chat prompt is laid out so each turn evaluates only its own new tokens (llama.cpp keeps
the KV of the longest common token prefix of the previous eval, which ends with the reply it
generated): the fixed system text, then the earlier turns, then the new turn. Each user turn
carries its OWN memory block, kept in the history from then on: the memories shown with it
(the reply's meta "shown", re-read from the bank) and the time it was said (meta "now") are
rendered with `chat_user_turn` exactly as before, so turn N+1's prompt starts with turn N's
prompt + reply, byte for byte. (Putting the memories in the system message or dropping an old
turn's block would change text before the new turn and re-evaluate everything after it.) A new
turn's block holds the best memories over the chat floor that are not already shown in the
history window and fit `settings.chat_memory_tokens` (counted with the backend's tokenizer),
in id order. The history window (HISTORY_MESSAGES) moves by HISTORY_STEP messages at a time;
when it moves (or a shown memory is gone) the next prompt's prefix changes, so it is evaluated
in the background right after the reply (`_prewarm`) instead of on the next first token. While
the user types, `prefill(conversation_id, draft)` (the GUI calls it when typing pauses)
evaluates in a background thread the prompt a reply to the draft would send, its memories
retrieved for the draft, so the reply to the message evaluates only what changed since. The
reply is asked for directly (no memory list before it); "memories used" (`Reply.selected`)
are the prompt's memories whose words the reply uses (`core.agents.answer.memories_used`).

Explicit commands are handled without the manager (core.assistant.commands): "remember (that)
X" adds X (in the third person) as a user memory. A request to forget, in natural words
(core.assistant.forgetting: "please forget what I said about my band", "don't remember that",
"that's not true any more, I sold the car"), soft-deletes the clearly matching memories of the
user in one batch (`Reply.changes.batch_id` undoes it) or asks which (the next message may
answer "1 and 3", "all", "none"); it replaces the manager for that message, except for the
rest of a mixed message, which the manager gets as usual. A superseding statement that matches
no memory is an ordinary message.

The models are `assistant.models`, a `core.llm.modelset.ModelSet` with the "answer" and
"manager" roles, which the assistant uses but does not close (its owner does).

`edit_and_resend` removes a sent message and every later one, undoes the memory batches their
turns wrote (`Reply.undone`) and sends the new text as a new message. `regenerate` adds a
version to the last reply (`ChatStore.select_version` pages through them) and changes no
memory: the manager reads only the user's message. A stopped reply is kept as such; its user
message was queued for the manager before the reply began, and no reply is ever given to it.
The chat's own system prompt, else `settings.system_prompt`, follows the fixed system text
(the memory instructions stay). A reply's meta records `model`, `ttft_s`, `tokens`, `tokens_per_s`.

Departure (our choice): only the user's messages are given to the manager. The assistant's
replies are grounded in injected memories, and extracting from them would store those
memories again (a known Mem0 failure), so they are not treated as a speaker's turn.
"""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections import deque
from dataclasses import dataclass
from datetime import datetime
from typing import Callable

from core.agents.answer import AnswerAgent
from core.agents.manager import ManagerConfig, MemoryManager
from core.agents.prompts import chat_system, chat_user_turn, format_time
from core.assistant.commands import parse_command, remember
from core.assistant.editing import change_count, reply_stats, undo_turns
from core.assistant.forgetting import (ForgetPlan, carry_out, delete_memories, detect_forget, manager_text,
                                       parse_choice, plan_forget)
from core.config import Settings
from core.errors import Cancelled, ConflictError, DatabaseError, InvalidInputError
from core.llm.modelset import ModelSet
from core.types import CancelToken, ChatBackend, GenParams, Memory, MemoryChanges, TurnRef

log = logging.getLogger(__name__)

HISTORY_MESSAGES = 10  # most recent chat messages given to the model
HISTORY_STEP = 4  # the history window moves by this many messages at a time
HISTORY_CHARS = 6000  # of the messages' own text (their memory blocks not counted)
HISTORY_MESSAGE_CHARS = 1500


@dataclass
class Reply:
    text: str
    message_id: int
    user_message_id: int
    selected: list[Memory]
    retrieved: list[Memory]
    cancelled: bool
    changes: MemoryChanges | None = None  # only for explicit remember/forget commands
    command: str | None = None  # "remember" | "forget" for a reply that is a command's
    undone: MemoryChanges | None = None  # edit and resend: what the replaced turns' undo reverted
    meta: dict | None = None  # the stored reply's meta (model, ttft_s, tokens_per_s, versions...)

    @property
    def undone_count(self) -> int:
        """How many memory changes the edit undid."""
        return change_count(self.undone)


@dataclass(frozen=True)
class _QueuedTurn:
    """A user message waiting for the manager thread."""

    text: str
    speaker: str
    time: str | None
    turn: str
    message_id: int  # its pending mark in the chat store's manager queue


class Assistant:
    """The chat assistant: answer agent + background memory manager over one `MemoryBank`.

    The models: `models` (a ModelSet with "answer" and "manager" roles, loaded: a role loaded
    lazily would load on the reply thread), or the two backends, adopted into
    `ModelSet.of(answer=..., manager=...)` (no `manager_backend`: the answer backend does
    both). Raises TypeError for neither or both.

    Thread contract: `reply`/`regenerate` from one caller thread at a time; listeners are
    called from the manager thread; `close()` stops that thread but does not close the bank
    or the models.
    """

    def __init__(self, bank, answer_backend=None, manager_backend=None, *, models: ModelSet | None = None,
                 settings: Settings | None = None, user_name: str = "User",
                 assistant_name: str = "Assistant") -> None:
        if (models is None) == (answer_backend is None) or (models is not None and manager_backend is not None):
            raise TypeError("Assistant takes either `models` or the backends")
        self.bank = bank
        self.settings = settings or Settings()
        self.user_name = user_name
        self.assistant_name = assistant_name
        self.models = models or ModelSet.of(answer=answer_backend, manager=manager_backend or answer_backend)
        self._cond = threading.Condition()
        self._queue: deque[_QueuedTurn] = deque()
        self._replying = 0
        self._running: CancelToken | None = None  # the in-flight manager turn's token
        self._running_on: ChatBackend | None = None  # the backend that turn runs on
        self._stopping = False
        # the newest prompt to evaluate ahead of a reply, not yet started: ("draft", conversation id,
        # text, temporary) from `prefill`, or ("prefix", messages) from `_prewarm`
        self._ahead: tuple | None = None
        self._prefilling: CancelToken | None = None  # the running one's token
        self._prefill_thread: threading.Thread | None = None
        self._memory_listeners: list[Callable[[MemoryChanges, str], None]] = []
        self._error_listeners: list[Callable[[Exception], None]] = []
        self._thread = threading.Thread(target=self._worker, name="memory-manager", daemon=True)
        self._thread.start()

    # --- listeners ----------------------------------------------------------------------
    def add_memory_listener(self, fn: Callable[[MemoryChanges, str], None]) -> None:
        """fn(changes, turn_id) from the manager thread after each processed turn."""
        self._memory_listeners.append(fn)

    def add_error_listener(self, fn: Callable[[Exception], None]) -> None:
        """fn(exc) from the manager thread when a turn fails (e.g. ModelOutputError)."""
        self._error_listeners.append(fn)

    def _notify(self, listeners, *args) -> None:
        for fn in list(listeners):
            try:
                fn(*args)
            except Exception:
                log.exception("listener %r failed", fn)

    # --- the manager thread -----------------------------------------------------------
    def _shared(self) -> bool:
        return self.models.manager is self.models.answer

    def _worker(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (self._queue and not self._replying))
                if self._stopping:
                    return
                job = self._queue[0]
                token = self._running = CancelToken()
                self._running_on = self.models.manager
                manager = MemoryManager(self.bank, self._running_on,
                                        config=ManagerConfig(extraction=self.settings.manager_extraction))
            changes: MemoryChanges | None = None
            outcome: str | None = None
            try:
                if not self.bank.chats.is_pending(job.message_id):  # queued twice, or done elsewhere
                    raise ConflictError(f"turn {job.turn} is no longer pending")
                changes = manager.process_turn(job.text, speaker=job.speaker, time=job.time, turn=job.turn,
                                               source=job.turn, cancel=token, done_message_id=job.message_id)
                outcome = None if changes.batch_id is not None else "nothing"
            except Cancelled:
                with self._cond:
                    self._running = self._running_on = None
                    self._cond.notify_all()
                log.info("manager turn %s pre-empted; it will run again", job.turn)
                continue
            except ConflictError:  # finished meanwhile (another process, a duplicate): skip
                outcome = None
            except DatabaseError as exc:  # locked, disk full, folder gone: the mark stays pending
                log.warning("memory manager could not write turn %s (%s); it stays queued for the next start",
                            job.turn, type(exc).__name__)
                self._notify(self._error_listeners, exc)
            except Exception as exc:  # logged and reported; the turn is not retried again
                log.error("memory manager failed on turn %s: %s", job.turn, exc, exc_info=True)
                self._notify(self._error_listeners, exc)
                outcome = "failed"
            if outcome is not None:
                self._finish(job, outcome)
            if changes is not None:
                self._notify(self._memory_listeners, changes, job.turn)
            with self._cond:
                if self._queue and self._queue[0] is job:
                    self._queue.popleft()
                self._running = self._running_on = None
                self._cond.notify_all()

    def _finish(self, job: _QueuedTurn, outcome: str) -> None:
        """Clear the pending mark of a turn that wrote no memory ops (manager thread)."""
        try:
            self.bank.chats.finish_pending(job.message_id, outcome)
        except ConflictError:
            pass  # already finished elsewhere
        except Exception:  # the mark stays: the turn is offered again at the next start
            log.exception("could not clear the manager mark of turn %s", job.turn)

    def resume_pending(self) -> int:
        """Queue the turns stored earlier whose manager work never finished (a run killed or
        closed first), oldest first, skipping those already queued; returns how many were
        added. Call once at start-up, from any thread."""
        pending = self.bank.chats.pending_turns()
        with self._cond:
            if self._stopping:
                return 0
            known = {j.message_id for j in self._queue}
            new = [_QueuedTurn(manager_text(p.text) or p.text, p.speaker or self.user_name, p.said_at, p.turn,
                               p.message_id)
                   for p in pending if p.message_id not in known]
            if new:
                head = [self._queue.popleft()] if self._running is not None and self._queue else []
                self._queue = deque(head + sorted([*self._queue, *new], key=lambda j: j.message_id))
                self._cond.notify_all()
        return len(new)

    def _enqueue(self, job: _QueuedTurn) -> None:
        with self._cond:
            if self._stopping:
                log.warning("assistant closed: turn %s not given to the manager", job.turn)
                return
            self._queue.append(job)
            self._cond.notify_all()

    def _begin_reply(self) -> None:
        with self._cond:
            self._replying += 1
            self._ahead = None  # the message is sent: a waiting prefill would only delay it
            if self._prefilling is not None:
                self._prefilling.cancel()
            if self._running is not None and self._shared():
                self._running.cancel()

    def _end_reply(self) -> None:
        with self._cond:
            self._replying -= 1
            self._cond.notify_all()

    def wait_idle(self, timeout: float | None = None) -> bool:
        """True once the manager queue is drained (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: not self._queue and self._running is None, timeout)

    def pending_turns(self) -> int:
        with self._cond:
            return len(self._queue)

    def set_backends(self, answer_backend=None, manager_backend=None) -> list:
        """Put loaded backends in place (None keeps that role's; `models` owns them from now
        on). Returns once no manager call uses a replaced backend (an in-flight turn is
        cancelled and redone with the new one), with the replaced backends no role uses any
        more, which the caller may then close. Call from the thread that calls `reply`."""
        new = {role: b for role, b in (("answer", answer_backend), ("manager", manager_backend)) if b is not None}
        return self.models.replace(new, release=self._release)

    def swap_models(self, specs, *, loader=None) -> None:
        """Load `specs` ({"answer"/"manager": ModelSpec}) and swap them in once all loaded
        (`ModelSet.swap`); the replaced backends are closed once no manager call uses them.
        Raises ModelLoadError (the current models stay). Call from the thread that calls `reply`."""
        self.models.swap(specs, loader=loader, release=self._release)

    def _release(self, replaced: list) -> None:
        """Return once the manager thread runs on none of `replaced` (cancelling a turn that
        does: it runs again on the new backend)."""
        def free() -> bool:
            return self._running is None or all(self._running_on is not b for b in replaced)

        with self._cond:
            running = self._running
            if running is not None and not free():
                running.cancel()
            if not self._cond.wait_for(free, timeout=60):
                log.warning("a manager turn still used a replaced model after 60 s")

    def close(self, *, drain_timeout: float = 0.0) -> None:
        """Stop the manager thread: wait up to `drain_timeout` s for queued turns, then leave
        the rest (logged; they stay pending for `resume_pending` at the next start) and cancel
        the in-flight one. The bank and backends stay open."""
        if drain_timeout:
            self.wait_idle(drain_timeout)
        with self._cond:
            self._stopping = True
            if self._queue:
                log.warning("assistant closing: %d queued turn(s) not processed: %s", len(self._queue),
                            ", ".join(j.turn for j in self._queue))
            if self._running is not None:
                self._running.cancel()
            if self._prefilling is not None:
                self._prefilling.cancel()
            self._cond.notify_all()
        self._thread.join(timeout=30)
        if self._prefill_thread is not None:
            self._prefill_thread.join(timeout=30)

    # --- replies ----------------------------------------------------------------------
    def _agent(self) -> AnswerAgent:
        return AnswerAgent(self.bank, self.models.answer)

    def _history(self, conversation_id: int, before_id: int) -> tuple[list[tuple[str, str]], list[Memory]]:
        """The earlier turns as `(role, prompt content)` (see `_render_user`), and the memories
        their user turns show. The window starts at a multiple of HISTORY_STEP messages, so it
        moves by whole steps and the turns in it keep their positions between steps."""
        msgs = [m for m in self.bank.chats.messages(conversation_id)
                if m.id < before_id and m.role in ("user", "assistant") and m.content]
        start = max(0, -(-(len(msgs) - HISTORY_MESSAGES) // HISTORY_STEP) * HISTORY_STEP)
        window = msgs[start:]
        out: list[tuple[str, str]] = []
        shown: list[Memory] = []
        total = 0
        for i in range(len(window) - 1, -1, -1):
            m = window[i]
            content = m.content
            if len(content) > HISTORY_MESSAGE_CHARS:
                content = content[:HISTORY_MESSAGE_CHARS] + " ..."
            if total + len(content) > HISTORY_CHARS:
                break
            total += len(content)
            if m.role == "user":
                after = window[i + 1].meta if i + 1 < len(window) and window[i + 1].role == "assistant" else None
                content, mems = self._render_user(content, after or {}, temporary=bool((m.meta or {}).get("temporary")))
                shown[:0] = mems
            out.append((m.role, content))
        return list(reversed(out)), shown

    def _render_user(self, text: str, reply_meta: dict, *, temporary: bool) -> tuple[str, list[Memory]]:
        """An earlier user turn as its prompt showed it: the memories recorded in its reply's
        meta ("shown", re-read from the bank: one deleted or forgotten since is left out) and
        the recorded time ("now"), so the text is byte-identical from turn to turn."""
        mems: list[Memory] = []
        for mid in reply_meta.get("shown") or []:
            try:
                mem = self.bank.get(int(mid))
            except Exception:  # gone (purged) or unreadable: not shown again
                continue
            if mem.status == "active":
                mems.append(mem)
        content = chat_user_turn(text, AnswerAgent.group(mems), user_name=self.user_name,
                                 now=reply_meta.get("now"), memory_off=temporary,
                                 earlier=bool(reply_meta.get("earlier")) and not mems)
        return content, mems

    def _budget(self, candidates: list[Memory], skip: set[int]) -> list[Memory]:
        """The chat's memories: the best of `candidates` (best first, already over the chat
        floor), not already shown in the history window, whose prompt lines fit
        `settings.chat_memory_tokens` (counted with the answer backend's tokenizer), put in
        id order (stable: the same memories render the same block on every turn)."""
        budget = int(self.settings.chat_memory_tokens)
        backend = self.models.answer
        chosen: list[Memory] = []
        used = 0
        for m in candidates:
            if m.id in skip:
                continue
            cost = int(backend.count_tokens(f"- {m.prompt_line()}\n"))
            if used + cost > budget:
                continue
            chosen.append(m)
            used += cost
        return sorted(chosen, key=lambda m: m.id)

    def reply(self, conversation_id: int, text: str, *, on_token: Callable[[str], None] | None = None,
              cancel: CancelToken | None = None, temporary: bool = False) -> Reply:
        """Answer one user message (see the module docstring). Raises InvalidInputError for an
        empty message, NotFoundError for an unknown conversation; a model error propagates
        after the user message was stored."""
        if not text or not text.strip():
            raise InvalidInputError("Type a message first.")
        command = parse_command(text)
        if command is not None and command[0] == "forget":
            command = None  # forget requests, strict or not, are `detect_forget`'s
        use_memory = not temporary and not self.settings.memory_paused
        plan: ForgetPlan | None = None
        choice: list[int] | None = None
        if command is None:
            request = detect_forget(text)
            if request is not None and not use_memory and request.kind != "supersede":
                command = ("forget", request.target or "")  # refused by `_command`
            elif request is not None and use_memory:
                plan = self._plan(conversation_id, request)
            elif use_memory:
                choice = self._answer_to_question(conversation_id, text)
        manager_part = text if plan is None and choice is None else (plan.request.rest if plan else None)
        said_at = format_time(datetime.now())
        user_msg = self.bank.chats.add_message(conversation_id, "user", text,
                                               meta={"temporary": True} if temporary else None,
                                               queue_for_manager=use_memory and command is None
                                               and manager_part is not None,
                                               speaker=self.user_name, said_at=said_at)
        turn = str(TurnRef.chat(conversation_id, user_msg.id))
        if command is not None or plan is not None or choice is not None:
            if command is not None:
                reply = self._command(conversation_id, user_msg, *command, temporary=temporary)
            else:
                if manager_part is not None:
                    self._enqueue(_QueuedTurn(manager_part, self.user_name, said_at, turn, user_msg.id))
                reply = self._forget(conversation_id, user_msg, plan, choice)
            if on_token is not None:
                on_token(reply.text)
            return reply
        job = _QueuedTurn(text, self.user_name, said_at, turn, user_msg.id)
        return self._generate(conversation_id, user_msg, on_token, cancel, temporary=temporary,
                              job=job if use_memory else None)

    def edit_and_resend(self, conversation_id: int, message_id: int, text: str, *,
                        on_token: Callable[[str], None] | None = None, cancel: CancelToken | None = None,
                        temporary: bool = False) -> Reply:
        """Replace the sent user message `message_id` with `text`: it and every later message
        are removed (their turns still queued for the manager are dropped), the memory batches
        their turns wrote are undone (newest first; `Reply.undone`), then `text` is sent as a
        new message (`reply`). Raises InvalidInputError for an empty text or a message that is
        not the user's, NotFoundError for an unknown message."""
        if not text or not text.strip():
            raise InvalidInputError("Type a message first.")
        msg = self.bank.chats.get_message(message_id)
        if msg.role != "user" or msg.conversation_id != conversation_id:
            raise InvalidInputError("Only a message you sent in this chat can be edited.")
        removed = self.bank.chats.remove_from(conversation_id, message_id)
        gone = {m.id for m in removed}
        with self._cond:  # drop their queued turns; a running one finds its mark gone and writes nothing
            head = self._queue[0] if self._running is not None and self._queue else None
            self._queue = deque(j for j in self._queue if j is head or j.message_id not in gone)
            if head is not None and self._running is not None and head.message_id in gone:
                self._running.cancel()
        undone = undo_turns(self.bank, conversation_id, removed)
        reply = self.reply(conversation_id, text, on_token=on_token, cancel=cancel, temporary=temporary)
        reply.undone = undone
        return reply

    def regenerate(self, conversation_id: int, *, on_token: Callable[[str], None] | None = None,
                   cancel: CancelToken | None = None) -> Reply:
        """A new version of the reply to the last user message (the earlier versions stay in
        its meta). No memory changes: the turn is not given to the manager again, and the
        manager never reads replies. Raises InvalidInputError when there is no user message."""
        msgs = self.bank.chats.messages(conversation_id)
        users = [m for m in msgs if m.role == "user"]
        if not users:
            raise InvalidInputError("There is no message to answer yet.")
        user_msg = users[-1]
        after = [m for m in msgs if m.role == "assistant" and m.id > user_msg.id]
        temporary = bool((user_msg.meta or {}).get("temporary"))
        return self._generate(conversation_id, user_msg, on_token, cancel, temporary=temporary,
                              job=None, replace=after[-1] if after else None)

    def _chat_floor(self) -> float:
        """The cosine below which a memory is not put in a chat prompt: the embedder's
        `chat_min_score` (0.2 for all-MiniLM-L6-v2; none for others). Ours: every prompt
        token costs first-token latency on a CPU (~1000 tokens for 60 memories, several
        seconds), and small models get confused by unrelated memories."""
        return float(self.bank.embedder.chat_min_score)

    def system_extra(self, conversation_id: int | None) -> str:
        """The user's system prompt for this chat (None: a chat not created yet): its own, else
        the default in Settings."""
        own = self.bank.chats.system_prompt(conversation_id) if conversation_id is not None else None
        return (own if own is not None else str(self.settings.system_prompt or "")).strip()

    def _turn(self, agent: AnswerAgent, conversation_id: int | None, text: str, before_id: int, *,
              temporary: bool) -> tuple[list[tuple[str, str]], list[Memory], list[Memory], list[Memory]]:
        """A new turn's prompt inputs: the history before message `before_id` and the memories
        it shows, the memories retrieved for `text` and those the turn's block shows."""
        history: list[tuple[str, str]] = []
        history_memories: list[Memory] = []
        if conversation_id is not None:
            history, history_memories = self._history(conversation_id, before_id)
        retrieved = [] if temporary else agent.retrieve(text, min_score=self._chat_floor())
        shown = self._budget(retrieved, {m.id for m in history_memories})
        return history, history_memories, retrieved, shown

    # --- prefill while the user types -------------------------------------------------
    def prefill(self, conversation_id: int | None, draft: str, *, temporary: bool = False) -> None:
        """Evaluate, in a background thread, the prompt a reply to `draft` would send now, so
        that when the message is sent only what changed since is evaluated (at most its own
        words when the draft is the message; llama.cpp keeps the longest common prefix). The
        prompt is the reply's exactly (`_turn` + `AnswerAgent.chat_prompt`): the history, the
        memories retrieved for the draft (in id order, so memories the final text adds or drops
        change the block from that point on), the time and the draft. Nothing is stored or
        logged; memories are only read. Returns at once; a newer draft replaces one not yet
        started; a reply drops a waiting draft and cancels one that has not reached the model
        (one already evaluating finishes first: the reply waits for the backend lock, at most
        one prompt's evaluation, most of it the reply's own prefix). Off with
        `settings.prefill_while_typing`; a command or a forget request is not prefilled.
        `conversation_id` None: a chat not created yet (no history). Any thread."""
        if not self.settings.prefill_while_typing or not draft or not draft.strip():
            return
        self._evaluate_ahead(("draft", conversation_id, draft, temporary))

    def _evaluate_ahead(self, job: tuple, *, unless_waiting: bool = False) -> None:
        """Hand `job` to the prefill thread (started on first use), replacing a waiting one;
        with `unless_waiting`, only if none waits."""
        with self._cond:
            if self._stopping or (unless_waiting and self._ahead is not None):
                return
            self._ahead = job
            if self._prefill_thread is None:
                self._prefill_thread = threading.Thread(target=self._prefill_worker, name="chat-prefill",
                                                        daemon=True)
                self._prefill_thread.start()
            self._cond.notify_all()

    def wait_prefilled(self, timeout: float | None = None) -> bool:
        """True once no draft waits and none is being prefilled (False on timeout)."""
        with self._cond:
            return self._cond.wait_for(lambda: self._ahead is None and self._prefilling is None, timeout)

    def _prefill_worker(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._stopping or (self._ahead is not None and not self._replying))
                if self._stopping:
                    return
                job, self._ahead = self._ahead, None
                assert job is not None
                token = self._prefilling = CancelToken()
            try:
                if job[0] == "draft":
                    _, conversation_id, draft, temporary = job
                    self._prefill_once(conversation_id, draft, temporary, token)
                else:
                    self._evaluate(job[1], token)
            except Exception as exc:  # a closed or replaced model, a chat deleted meanwhile: nothing to warm
                log.debug("prompt evaluation ahead skipped: %s", type(exc).__name__)
            finally:
                with self._cond:
                    self._prefilling = None
                    self._cond.notify_all()

    def _prefill_once(self, conversation_id: int | None, draft: str, temporary: bool, cancel: CancelToken) -> None:
        if parse_command(draft) is not None or (not temporary and detect_forget(draft) is not None):
            return  # answered without the model
        agent = self._agent()
        history, history_memories, _, shown = self._turn(agent, conversation_id, draft, 1 << 62, temporary=temporary)
        if cancel.cancelled:
            return
        params = self.settings.gen_params()
        messages = agent.chat_prompt(draft, history=history, memories=shown, params=params,
                                     user_name=self.user_name, assistant_name=self.assistant_name,
                                     now=format_time(datetime.now()), memory_off=temporary,
                                     history_memories=history_memories,
                                     system=self.system_extra(conversation_id))
        self._evaluate(messages, cancel)

    def _evaluate(self, messages: list, cancel: CancelToken) -> None:
        """Evaluate `messages` into the answer model's KV (one greedy token, discarded)."""
        for _ in self.models.answer.complete(messages, params=GenParams(temperature=0.0, max_tokens=1),
                                             cancel=cancel):
            pass

    def _generate(self, conversation_id, user_msg, on_token, cancel, *, temporary: bool, job: _QueuedTurn | None,
                  replace=None) -> Reply:
        agent = self._agent()
        extra = self.system_extra(conversation_id)
        first: list[float] = []

        def token(piece: str) -> None:
            if not first and piece:
                first.append(time.perf_counter())
            if on_token is not None:
                on_token(piece)

        self._begin_reply()
        try:
            if job is not None:
                self._enqueue(job)
            history, history_memories, retrieved, shown = self._turn(agent, conversation_id, user_msg.content,
                                                                     user_msg.id, temporary=temporary)
            params = self.settings.gen_params()
            now = format_time(datetime.now())
            started = time.perf_counter()

            def answer(gen: GenParams):
                return agent.chat(user_msg.content, history=history, memories=shown, on_token=token,
                                  cancel=cancel, params=gen, user_name=self.user_name,
                                  assistant_name=self.assistant_name, now=now, memory_off=temporary,
                                  history_memories=history_memories, system=extra)

            result = answer(params)
            if not result.cancelled and not result.answer.strip() and params.temperature > 0:
                # a sampled reply that shows nothing (a small model may stop at once or write only
                # scaffold, which the reply filter hides): one greedy try, same prompt (KV reused)
                log.info("the sampled reply showed nothing; answering again greedily")
                result = answer(dataclasses.replace(params, temperature=0.0))
            ended = time.perf_counter()
        finally:
            self._end_reply()
        meta = {"selected": [m.id for m in result.selected], "retrieved": [m.id for m in retrieved],
                "shown": [m.id for m in shown], "now": now,
                "earlier": bool(history_memories) and not shown, "cancelled": result.cancelled, "temporary": temporary}
        meta.update(reply_stats(self.models.answer, result.answer, started, first[0] if first else None, ended))
        if replace is not None:
            stored = self.bank.chats.add_version(replace.id, result.answer, meta)
        else:
            stored = self.bank.chats.add_message(conversation_id, "assistant", result.answer, meta=meta)
        if not result.cancelled:
            self._prewarm(conversation_id, stored.id, history, extra)
        return Reply(result.answer, stored.id, user_msg.id, result.selected, retrieved, result.cancelled,
                     meta=stored.meta)

    def _prewarm(self, conversation_id: int, message_id: int, history: list[tuple[str, str]],
                 extra: str = "") -> None:
        """When the next turn's history will not start with this turn's (the window moved a
        step, or a shown memory is gone), evaluate the next prompt's system + history now, on
        the prefill thread, so the next reply re-evaluates only its own turn. A draft already
        waiting there is left to run instead (its prompt starts with the same history); a reply
        drops a waiting warm-up, and the backend's lock orders a running one with the reply,
        which at worst waits for work it would do anyway."""
        nxt, _ = self._history(conversation_id, message_id + 1)
        if nxt[:len(history)] == history:
            return
        msgs = [{"role": "system", "content": chat_system(self.user_name, self.assistant_name, extra=extra)},
                *({"role": r, "content": c} for r, c in nxt)]
        self._evaluate_ahead(("prefix", msgs), unless_waiting=True)

    # --- explicit commands --------------------------------------------------------------
    def _command(self, conversation_id: int, user_msg, name: str, arg: str, *, temporary: bool) -> Reply:
        turn = str(TurnRef.chat(conversation_id, user_msg.id))
        changes: MemoryChanges | None = None
        if temporary:
            text = "This is a temporary chat: I don't read or write memories here."
        elif self.settings.memory_paused:
            text = "Memory is paused, so I didn't change any memories."
        else:
            text, changes = remember(self.bank, arg, user_name=self.user_name, turn=turn)
        meta = {"command": name, "temporary": temporary,
                "changes": {"added": [m.id for m in changes.added] if changes else [],
                            "deleted": [m.id for m in changes.deleted] if changes else []}}
        msg = self.bank.chats.add_message(conversation_id, "assistant", text, meta=meta)
        return Reply(text, msg.id, user_msg.id, [], [], False, changes, command=name)

    # --- forgetting by asking -----------------------------------------------------------
    def _plan(self, conversation_id: int, request) -> ForgetPlan | None:
        """The plan for a forget request of this chat; None for a superseding statement that
        matches no memory (an ordinary message then)."""
        previous = None
        if request.kind == "previous":
            users = [m for m in self.bank.chats.messages(conversation_id, limit=HISTORY_MESSAGES) if m.role == "user"]
            previous = users[-1] if users else None
        plan = plan_forget(self.bank, request, user_name=self.user_name,
                           previous_turn=str(TurnRef.chat(conversation_id, previous.id)) if previous else None)
        plan.previous_message_id = previous.id if previous is not None else None
        if request.kind == "supersede" and request.target is not None and not plan.clear:
            return None
        return plan

    def _answer_to_question(self, conversation_id: int, text: str) -> list[int] | None:
        """The memory ids `text` picks when the chat's last message asked "Which should I
        forget?" and `text` answers it (`parse_choice`), else None."""
        last = self.bank.chats.messages(conversation_id, limit=1)
        ask = (last[0].meta or {}).get("ask") if last and last[0].role == "assistant" else None
        if not ask:
            return None
        picks = parse_choice(text, len(ask))
        return None if picks is None else [int(ask[i]) for i in picks]

    def _forget(self, conversation_id: int, user_msg, plan: ForgetPlan | None, choice: list[int] | None) -> Reply:
        """Carry out a forget plan or the answer to a question; store and return the reply."""
        turn = str(TurnRef.chat(conversation_id, user_msg.id))
        ask: list[int] = []
        if plan is not None:
            text, changes = carry_out(self.bank, plan, turn=turn)
            ask = [m.id for m in plan.ask] if not plan.clear else []
            previous = plan.previous_message_id
            if plan.request.kind == "previous" and previous is not None and self.bank.chats.is_pending(previous):
                try:  # not processed yet: the manager skips it now
                    self.bank.chats.finish_pending(previous, "nothing")
                    text = "OK, I won't remember your last message." if not changes else text
                except ConflictError:
                    pass  # the manager finished it meanwhile
        else:
            mems = []
            for mid in choice or []:
                try:
                    mem = self.bank.get(mid)
                except Exception:  # purged meanwhile
                    continue
                if mem.status == "active":
                    mems.append(mem)
            text, changes = delete_memories(self.bank, mems, turn=turn) if mems else (
                "OK, I won't forget anything." if not choice else "Those memories are already gone.",
                MemoryChanges())
        meta = {"command": "forget", "temporary": False, "ask": ask, "batch": changes.batch_id,
                "changes": {"added": [], "deleted": [m.id for m in changes.deleted]}}
        msg = self.bank.chats.add_message(conversation_id, "assistant", text, meta=meta)
        return Reply(text, msg.id, user_msg.id, [], [], False, changes, command="forget")

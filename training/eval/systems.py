"""The four systems the LoCoMo evaluation compares, and the cached, resumable memory banks.

Each system is a `System` object (`ALL_SYSTEMS`; `system_named` looks one up by name, once, where
a name comes in): the bank it needs (`bank`, `uses_manager`) and how it answers (`answer`).

- `memory-r1`: the Memory Manager builds one bank per conversation (every turn of both
  speakers, in order, with the session timestamps; the `speaker` column makes it one bank per
  speaker as in the paper); the Answer Agent retrieves 30 memories per speaker (60) and
  selects + answers in one generation.
- `no-distill`: the same bank; the answer prompt without the selection step.
- `rag`: no manager; the raw dialogue turns (`"<speaker>: <text>"`, session time as the
  timestamp) are embedded into a separate bank and the Answer Agent answers over them with the
  same prompt and the same 30 + 30 retrieval (LoCoMo's RAG baseline, with our answer prompt).
- `full-context`: no retrieval; as many of the most recent turns as fit the answer model's
  context (n_ctx minus the answer budget, counted with the model's tokenizer), in order,
  answered with the no-selection prompt (our choice: a selection list over hundreds of turns
  would only cost generation time).

Banks are cached under `<cache>/<kind>-<sample>-<key>/` where the key hashes the conversation's
turns, the manager model + adapter fingerprints, PROMPT_VERSION, `max_sessions` and the
embedder: a re-run with another answerer reuses them. Ingestion checkpoints after every turn
(`turns.jsonl`, one line per turn with its timing and op counts) and resumes from there; a
turn applied just before a crash may be redone once (its facts are then duplicates, which the
manager skips). `done.json` marks a complete bank. A lock file keeps two processes from
ingesting the same bank at once (POSIX only).

Threads: everything here runs on the caller's thread; backends are not thread-safe.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

from core.agents import prompts
from core.errors import InvalidInputError, ModelOutputError
from core.fileio import atomic_write_json, folder_lock
from core.locomo import QA, Sample, Turn
from core.textlog import log_text
from core.types import OP_EVENTS, ChatBackend, GenParams, Memory, MemoryOp

from training.eval.audit import audit_bank

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

log = logging.getLogger(__name__)

CACHE_LAYOUT_VERSION = "eval-bank-1"  # bump when what a cached bank holds changes
FULL_CONTEXT_PARAMS = GenParams(temperature=0.0, max_tokens=256)
TEMPLATE_SLACK_TOKENS = 64  # chat-template tokens not counted by count_tokens(content)


# --- fingerprints and cache keys -------------------------------------------------------------

def turns_digest(turns: Sequence[Turn]) -> str:
    h = hashlib.sha256()
    for t in turns:
        h.update(json.dumps([t.speaker, t.dia_id, t.full_text, t.time], ensure_ascii=False).encode())
    return h.hexdigest()[:16]


def bank_key(kind: str, sample: Sample, max_sessions: int | None, embedder_name: str,
             manager_id: str | None = None) -> str:
    """The cache folder name of one bank: `<kind>-<sample>-<hash of everything it depends on>`."""
    parts = [CACHE_LAYOUT_VERSION, kind, sample.sample_id, turns_digest(sample.turns_upto(max_sessions)),
             str(max_sessions), embedder_name]
    if kind == "memory":
        parts += [manager_id or "", prompts.PROMPT_VERSION]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample.sample_id)
    return f"{kind}-{safe}-{digest}"


# --- memory banks ------------------------------------------------------------------------------

@dataclass
class BankHandle:
    """An open bank (memories or raw turns) and the stats of how it was built."""

    bank: object  # core.memory.MemoryBank
    stats: dict
    folder: Path

    def close(self) -> None:
        self.bank.close()


def _open_bank(folder: Path, embedder):
    from core.memory import MemoryBank

    return MemoryBank(folder / "bank.sqlite3", embedder)


def _bar(*, total: int, desc: str, enabled: bool, initial: int = 0):
    """A tqdm bar over turns, or None when progress is off."""
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, desc=desc, unit="turn", initial=initial, dynamic_ncols=True)


def ingest_memory_bank(sample: Sample, folder: Path, embedder, manager_backend: Callable[[], ChatBackend],
                       *, max_sessions: int | None, progress: bool = False,
                       decide_backend: Callable[[], ChatBackend] | None = None, manager_config=None) -> BankHandle:
    """The sample's Memory-Manager bank in `folder`: reused when complete, else built or resumed
    (the one turn loop, `core.assistant.turns.run_turns`, checkpointing to `turns.jsonl`).

    `manager_backend` (and `decide_backend`, an optional second instance of the same model for
    the per-fact decisions, so the extraction prompt's cached prefix is not evicted: about half
    the time per turn, benchmarks/agents.py) is called only when some turn still has to be
    processed (a cached bank needs no model). `manager_config`: the manager's
    `ManagerConfig` (default: the app's). A turn whose model output fails twice
    (ModelOutputError) is recorded as a failure and skipped; any other error stops ingestion
    with the progress kept.
    """
    from core.agents.manager import MemoryManager
    from core.assistant.ingest import locomo_turn
    from core.assistant.turns import JsonlProgress, remaining, run_turns

    with folder_lock(folder):
        turns = [locomo_turn(sample.sample_id, t) for t in sample.turns_upto(max_sessions)]
        done_path = folder / "done.json"
        bank = _open_bank(folder, embedder)
        bar = None
        try:
            cached = done_path.exists()
            checkpoint = JsonlProgress(folder / "turns.jsonl", key_of=lambda t: t.dia_id, record_of=_ingest_record)
            todo = remaining(turns, checkpoint)
            if todo and not cached:
                manager = MemoryManager(bank, manager_backend(), config=manager_config,
                                        decide_backend=decide_backend() if decide_backend else None)
                bar = _bar(total=len(turns), initial=len(turns) - todo, desc=f"ingest {sample.sample_id}",
                           enabled=progress)
                run_turns(manager, turns, progress=checkpoint,
                          on_turn=(lambda _outcome: bar.update(1)) if bar is not None else None)
            stats = _ingest_stats(checkpoint.records(), bank, cached=cached)
            if not cached:
                atomic_write_json(done_path, stats)
        except BaseException:
            bank.close()
            raise
        finally:
            if bar is not None:
                bar.close()
    return BankHandle(bank, stats, folder)


def _ingest_record(outcome) -> dict:
    """One `turns.jsonl` line: the turn, its op counts, the model error (or None), its time."""
    turn = outcome.turn
    return {"dia_id": turn.dia_id, "speaker": turn.speaker, **outcome.op_counts(), "rejected": outcome.rejected,
            "error": str(outcome.error)[:500] if outcome.error is not None else None,
            "seconds": outcome.seconds}


def _ingest_stats(records: Sequence[dict], bank: MemoryBank, *, cached: bool) -> dict:
    ops = [prompts.op_counts(r) for r in records]  # turn logs saved with "NONE" read as NOOP
    return {
        "kind": "memory",
        "turns": len(records),
        "seconds": round(sum(r["seconds"] for r in records), 3),
        "turn_seconds": [r["seconds"] for r in records],
        "ops": {e: sum(o[e] for o in ops) for e in OP_EVENTS},
        "rejected": sum(int(r.get("rejected") or 0) for r in records),  # facts the grounding gate refused
        "failures": sum(1 for r in records if r.get("error")),
        "memories": bank.count(),
        "audit": audit_bank(bank),  # memories with a name or number absent from their sources
        "cached": cached,
    }


def turn_text(turn: Turn) -> str:
    """How a raw turn is stored for the RAG and full-context baselines.

    >>> turn_text(Turn("Jon", "D1:2", "I lost my job", 1, "4:04 pm on 20 January, 2023"))
    'Jon: I lost my job'
    """
    return f"{turn.speaker}: {turn.full_text}"


def build_turn_bank(sample: Sample, folder: Path, embedder, *, max_sessions: int | None) -> BankHandle:
    """The RAG baseline's index: every turn as one `memory`, added in one transaction."""
    with folder_lock(folder):
        bank = _open_bank(folder, embedder)
        try:
            cached = bank.count() > 0
            start = time.perf_counter()
            turns = sample.turns_upto(max_sessions)
            if not cached and turns:
                bank.apply([MemoryOp("ADD", text=turn_text(t), speaker=t.speaker, observed_at=t.time or None,
                                     source=f"locomo:{sample.sample_id}/{t.dia_id}") for t in turns],
                           actor="import", turn=f"locomo:{sample.sample_id}")
            stats = {"kind": "turns", "turns": len(turns), "seconds": round(time.perf_counter() - start, 3),
                     "memories": bank.count(), "cached": cached, "turn_seconds": [], "failures": 0,
                     "ops": {}}
        except BaseException:
            bank.close()
            raise
    return BankHandle(bank, stats, folder)


# --- answering -----------------------------------------------------------------------------------

@dataclass
class Answered:
    """One system's answer to one question, before scoring."""

    prediction: str
    raw: str = ""
    selected: Sequence[Memory] = ()
    retrieved: Sequence[Memory] = ()
    retrieval_s: float = 0.0
    answer_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    context_turns: int | None = None  # full-context: turns that fit
    error: str | None = None
    shown: Sequence[Memory] | None = None  # the memories in the prompt (None: as retrieved)
    source_refs: Sequence[str] = ()  # refs of the source turns quoted in the prompt
    linked_refs: Sequence[str] = ()  # refs of the turns that gave a shown memory its content

    def evidence_refs(self) -> list[str]:
        """The turn refs the prompt's memories stand for: each shown memory's `source` and
        the refs of its provenance links."""
        shown = self.retrieved if self.shown is None else self.shown
        return list(dict.fromkeys([*(m.source for m in shown if m.source), *self.linked_refs]))


def _count(backend: ChatBackend, text: str) -> int:
    try:
        return int(backend.count_tokens(text)) if text else 0
    except Exception:  # informative only
        return 0


# Links that gave a memory its content (evidence recall counts these): not "repeated" (a turn
# the manager found already said, which may hold more than the memory) nor "superseded".
CONTENT_ROLES = ("added", "updated", "imported")


def linked_refs(bank, memories: Sequence[Memory]) -> list[str]:
    """The refs of the source turns that gave `memories` their content (`CONTENT_ROLES`), in
    order, once each."""
    if not memories:
        return []
    links = bank.sources([m.id for m in memories])
    return list(dict.fromkeys(s.ref for m in memories for s in links.get(m.id, ())
                              if s.ref and s.role in CONTENT_ROLES))


def answer_with_agent(agent, question: str, speakers: Sequence[str], *, distill: bool) -> Answered:
    """Retrieve (timed) then answer (timed) with a `core.agents.answer.AnswerAgent`; the
    answer keeps the memories shown and their linked source refs (for evidence recall)."""
    start = time.perf_counter()
    retrieved = agent.retrieve(question, speakers=list(speakers))
    mid = time.perf_counter()
    res = agent.answer(question, memories=retrieved, distill=distill)
    end = time.perf_counter()
    shown = list(res.shown) if res.retrieved else []
    return Answered(res.answer, res.raw, res.selected, res.retrieved, mid - start, end - mid,
                    res.prompt_tokens, _count(agent.backend, res.raw), shown=shown,
                    source_refs=list(res.source_refs), linked_refs=linked_refs(agent.bank, shown))


def _prompt_tokens(backend: ChatBackend, messages) -> int:
    try:
        return int(backend.count_tokens(backend.apply_chat_template(messages)))
    except Exception:  # fall back to the contents plus a margin
        pass
    return sum(_count(backend, m["content"]) for m in messages) + TEMPLATE_SLACK_TOKENS


def fit_recent_turns(turns: Sequence[Turn], question: str, backend: ChatBackend, n_ctx: int,
                     answer_tokens: int) -> tuple[list[dict], int]:
    """The no-selection answer prompt over the most recent turns that fit `n_ctx - answer_tokens`
    (oldest dropped first), and how many turns it holds. Token counts use the backend's own
    tokenizer; the final prompt is re-counted and trimmed until it fits."""
    budget = n_ctx - answer_tokens

    def build(kept: Sequence[Turn]) -> list[dict]:
        return prompts.answer_messages(question, {None: [f"{t.time}: {turn_text(t)}" if t.time else turn_text(t)
                                                          for t in kept]}, distill=False)

    base = _prompt_tokens(backend, build([]))
    used, total = 0, base
    for t in reversed(turns):
        cost = _count(backend, f"- {t.time}: {turn_text(t)}\n")
        if total + cost > budget:
            break
        total += cost
        used += 1
    kept = list(turns[len(turns) - used:]) if used else []
    messages = build(kept)
    while kept and _prompt_tokens(backend, messages) > budget:
        drop = max(1, len(kept) // 20)
        kept = kept[drop:]
        messages = build(kept)
    return messages, len(kept)


def answer_full_context(turns: Sequence[Turn], question: str, backend: ChatBackend, n_ctx: int,
                        params: GenParams = FULL_CONTEXT_PARAMS) -> Answered:
    start = time.perf_counter()
    messages, used = fit_recent_turns(turns, question, backend, n_ctx, params.max_tokens)
    mid = time.perf_counter()
    from core.agents.answer import generate_answer

    raw, _ = generate_answer(backend, messages, params, max_lines=used + 2, force_marker=False)
    end = time.perf_counter()
    answer = " ".join(prompts.parse_answer(raw).answer.split())
    return Answered(answer, raw, (), (), mid - start, end - mid, _prompt_tokens(backend, messages),
                    _count(backend, raw), context_turns=used)


# --- the systems ------------------------------------------------------------------------------

class System:
    """One evaluated system: its name (the run folder, `system` in predictions.jsonl and
    summary.json), the bank it answers from (`bank`: "memory" = the Memory Manager's,
    "turns" = the raw dialogue turns, None = no bank), and how it answers one question."""

    name: str = ""
    bank: str | None = None

    @property
    def uses_manager(self) -> bool:
        """Whether its bank is built by the Memory Manager (the manager model then keys the run)."""
        return self.bank == "memory"

    def answer(self, sample: Sample, qa: QA, bank, backend: ChatBackend, *, k: int, n_ctx: int,
               max_sessions: int | None, sources: bool = True) -> Answered:
        """Answer `qa` (`bank`: the open bank of `self.bank`, or None; `sources`: quote the
        memories' source turns, `AnswerAgent(sources=)`). Raises ModelOutputError or
        InvalidInputError when the model's output is unusable."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"System({self.name!r})"


class AgentSystem(System):
    """The Answer Agent over a bank: retrieve 30 + 30, then select + answer (`distill`) or
    answer directly."""

    def __init__(self, name: str, bank: str, *, distill: bool) -> None:
        self.name, self.bank, self.distill = name, bank, distill

    def answer(self, sample: Sample, qa: QA, bank: MemoryBank | None, backend: ChatBackend, *, k: int, n_ctx: int,
               max_sessions: int | None, sources: bool = True) -> Answered:
        from core.agents.answer import AnswerAgent

        agent = AnswerAgent(bank, backend, k=k, distill=self.distill, sources=sources)
        return answer_with_agent(agent, qa.question, sample.speakers, distill=self.distill)


class FullContextSystem(System):
    """No bank: the most recent turns that fit the answer model's context (`fit_recent_turns`)."""

    name = "full-context"

    def answer(self, sample: Sample, qa: QA, bank: MemoryBank | None, backend: ChatBackend, *, k: int, n_ctx: int,
               max_sessions: int | None, sources: bool = True) -> Answered:
        return answer_full_context(sample.turns_upto(max_sessions), qa.question, backend,
                                   int(backend.n_ctx or n_ctx))


ALL_SYSTEMS: tuple[System, ...] = (
    AgentSystem("memory-r1", "memory", distill=True),
    AgentSystem("no-distill", "memory", distill=False),
    AgentSystem("rag", "turns", distill=True),
    FullContextSystem(),
)
SYSTEMS = tuple(s.name for s in ALL_SYSTEMS)  # their names, in report order


def system_named(name: "str | System") -> System:
    """The system called `name` (a System is returned as is); InvalidInputError if unknown.

    >>> system_named("rag").bank
    'turns'
    """
    if isinstance(name, System):
        return name
    for s in ALL_SYSTEMS:
        if s.name == name:
            return s
    raise InvalidInputError(f"Unknown system {name!r}; expected one of {', '.join(SYSTEMS)}.")


# --- judge -----------------------------------------------------------------------------------------

def judge_answer(backend: ChatBackend, question: str, gold: str, prediction: str) -> str:
    """CORRECT or WRONG from a local judge model (schema-constrained; one retry, then WRONG)."""
    messages = prompts.judge_messages(question, gold, prediction)
    for attempt in (1, 2):
        raw = "".join(backend.complete(messages, params=GenParams(temperature=0.0 if attempt == 1 else 0.5,
                                                                  max_tokens=64),
                                       schema=prompts.JUDGE_SCHEMA))
        try:
            return prompts.parse_judge(raw)
        except ModelOutputError as exc:
            log.warning("judge output unparseable (attempt %d, %d chars): %s", attempt, len(raw), exc)
            log_text(f"judge output (attempt {attempt})", raw[:300])
    return "WRONG"


def selected_questions(sample: Sample, max_sessions: int | None) -> list[QA]:
    """Scored questions (categories 1-4); with `max_sessions`, only those whose evidence lies
    entirely in the first N sessions (a question without evidence is then dropped)."""
    qs = sample.scored_qa()
    if max_sessions is None:
        return qs
    return [q for q in qs if q.sessions and max(q.sessions) <= max_sessions]

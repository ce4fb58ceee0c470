"""Memory Manager training states from a LoCoMo file (method.md §2).

A *state* is one decision the manager makes at a turn that is evidence (LoCoMo `evidence`
dia_ids) for a training question of categories 1-4:
- the memory bank built by the current manager from the preceding turns (a snapshot: the
  active memories with their embedding vectors, so a copy is rebuilt without re-embedding);
- the turn, its extracted facts, the duplicates the app skips without a model call, and the
  related memories shown to the model (top 5 per fact, merged, `MemoryManager.related`);
- the exact decision prompt the app sends (`core.agents.prompts.manager_messages`) and the alias of
  every shown memory ("0", "1", ... = `shown_ids` in order);
- the linked questions with their gold answers;
- what the current (untrained) manager did there, as the app runs it (greedy and
  schema-constrained): `app_ops` (counts of the applied ops, duplicates' NOOP included) and
  `app_decision` (the applied ADD/UPDATE/DELETE written as a decision over this state's
  aliases, so the reward function can score it).

`build_states` makes ONE pass over the conversation with `core.agents.manager.MemoryManager` (the app's
code, `process_turn` per turn, through the same loop as the evaluation's ingestion,
`core.assistant.turns.run_turns`), snapshotting the bank when it reaches an evidence turn. The
turn's facts and shown memories are computed first with the
manager's own `extract` / `related`; a replaying backend (`_ReplayBackend`) then hands the
same generations to `process_turn`, so each model call runs once. The pass is cached on disk
and resumable (`<dir>/bank.sqlite3`, `progress.jsonl`, `states.jsonl`, `vectors.npy`).

Departures (ours): a turn whose fresh facts exceed `facts_per_decision` (10) makes several
decision calls in the app; its state is the FIRST call (the ops of the later calls are still
applied to the bank, as the app does). States where the app makes no decision call (no facts,
all duplicates, or nothing related to show) are kept with their `kind` but are not trained on
by default. Evidence ids are read leniently ("D8:6; D9:17" is two ids).

Runs in the calling thread; raises InvalidInputError for a bad data file or state folder.
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import os
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterator, Sequence

import numpy as np

from core.agents import prompts
from core.errors import InvalidInputError, ModelOutputError
from core.fileio import append_jsonl, atomic_path, atomic_write_json, folder_lock, read_jsonl
from core.locomo import QA, Sample, Turn
from core.types import OP_EVENTS, GenParams, Memory

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

log = logging.getLogger(__name__)

STATE_LAYOUT = "manager-states-3"  # bump when what a state holds changes (3: facts gated)
KINDS = ("decision", "no-related", "all-duplicates", "no-facts", "extract-failed")
_DIA = re.compile(r"D\d+:\d+")
_UNDOABLE = ("ADD", "UPDATE", "DELETE")  # what a manager turn writes (core.memory.history undoes them)


# --------------------------------------------------------------------------- evidence


def evidence_ids(qa: QA) -> list[str]:
    """The dia_ids a question cites, read leniently.

    >>> evidence_ids(QA("q", "a", ("D8:6; D9:17", "D1:3"), 1, 0))
    ['D8:6', 'D9:17', 'D1:3']
    """
    out: list[str] = []
    for e in qa.evidence:
        out += [d for d in _DIA.findall(str(e)) if d not in out]
    return out


def evidence_map(sample: Sample, max_sessions: int | None = None) -> dict[str, list[QA]]:
    """dia_id -> the scored questions (categories 1-4) that cite it, for turns that exist."""
    from training.eval.systems import selected_questions

    ids = {t.dia_id for t in sample.turns_upto(max_sessions)}
    out: dict[str, list[QA]] = collections.defaultdict(list)
    for qa in selected_questions(sample, max_sessions):
        for d in evidence_ids(qa):
            if d in ids:
                out[d].append(qa)
    return dict(out)


# --------------------------------------------------------------------------- the state


@dataclass
class ManagerState:
    """One training state (see the module docstring). JSON-serialisable except `vector_table`."""

    id: str  # "<sample>/<dia_id>"
    sample_id: str
    dia_id: str
    speaker: str
    time: str | None
    turn_text: str
    source: str  # "locomo:<sample>/<dia_id>", the memories' source as the app writes it
    speakers: list[str]
    kind: str  # one of KINDS
    facts: list[str]  # the turn's extracted facts that the grounding gate accepted
    duplicates: list[str]  # facts the app skips as duplicates (NOOP without a model call)
    decision_facts: list[str]  # the facts of the (first) decision call
    shown_ids: list[int]  # snapshot ids shown under aliases "0", "1", ...
    prompt: list[dict]  # the decision call's chat messages, exactly as the app sends them
    questions: list[dict]  # {"question", "answer", "category", "qa_index"}
    snapshot: list[dict]  # active memories before the turn: {"id", "text", "speaker", "observed_at", "source", "v"}
    app_ops: dict | None = None  # what the current manager applied at this turn: event -> count
    app_decision: str | None = None  # the same, as a decision JSON over this state's aliases
    auto_added: list[str] = field(default_factory=list)  # the unrelated facts: ADDed without a model call
    vector_table: np.ndarray | None = field(default=None, repr=False, compare=False)

    @property
    def trainable(self) -> bool:
        return self.kind == "decision"

    def snapshot_vectors(self) -> np.ndarray:
        """The snapshot's embedding rows, in `snapshot` order."""
        if self.vector_table is None:
            raise InvalidInputError(f"state {self.id} has no vector table attached")
        return self.vector_table[[m["v"] for m in self.snapshot]] if self.snapshot else \
            np.zeros((0, self.vector_table.shape[1]), np.float32)

    def shown_memories(self) -> list[Memory]:
        by_id = {m["id"]: m for m in self.snapshot}
        return [_memory(by_id[i]) for i in self.shown_ids]

    def schema(self) -> dict:
        return prompts.manager_schema(len(self.shown_ids), len(self.decision_facts))

    def to_json(self) -> dict:
        d = asdict(self)
        d.pop("vector_table", None)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "ManagerState":
        d = dict(d)
        d.pop("vector_table", None)
        if d.get("app_ops") is not None:  # states saved with the model's "NONE" key read as NOOP
            d["app_ops"] = prompts.op_counts(d["app_ops"])
        return cls(**d)


def _memory(m: dict) -> Memory:
    return Memory(int(m["id"]), m["text"], speaker=m.get("speaker"), observed_at=m.get("observed_at"),
                  source=m.get("source"))


# --------------------------------------------------------------------------- embeddings


class CachingEmbedder:
    """An `Embedder` that remembers the vector of every text it embeds (LRU, `max_items`).

    Same `name` and `dim` as the wrapped embedder, so a bank opened with it is indexed as with
    the original. Snapshots take their vectors from here: what the bank stored was embedded
    through it. Not thread-safe (one pass or one trainer thread).
    """

    def __init__(self, inner, max_items: int = 100_000) -> None:
        self.inner = inner
        self.name = inner.name
        self.dim = int(inner.dim)
        self.related_score = inner.related_score  # the manager's cut-offs follow the embedder
        self.chat_min_score = inner.chat_min_score
        self.max_items = max_items
        self._cache: collections.OrderedDict[str, np.ndarray] = collections.OrderedDict()
        self.calls = 0
        self.embedded = 0

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        texts = list(texts)
        missing = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if missing:
            self.calls += 1
            self.embedded += len(missing)
            vecs = np.asarray(self.inner.embed(missing), dtype=np.float32)
            for t, v in zip(missing, vecs):
                self._cache[t] = v
        out = np.zeros((len(texts), self.dim), np.float32)
        for i, t in enumerate(texts):
            out[i] = self._cache[t]
            self._cache.move_to_end(t)
        while len(self._cache) > self.max_items:
            self._cache.popitem(last=False)
        return out


class _VectorTable:
    """Unique memory texts -> rows of one float32 matrix (snapshots point at rows)."""

    def __init__(self, dim: int, rows: np.ndarray | None = None, texts: Sequence[str] = ()) -> None:
        self.dim = dim
        self.texts = list(texts)
        # rows beyond the texts come from a crash between the two writes: dropped
        self.rows: list[np.ndarray] = list(rows[:len(self.texts)]) if rows is not None else []
        self.texts = self.texts[:len(self.rows)]
        self.index = {t: i for i, t in enumerate(self.texts)}

    def row_of(self, text: str, embedder) -> int:
        i = self.index.get(text)
        if i is None:
            i = self.index[text] = len(self.rows)
            self.rows.append(np.asarray(embedder.embed([text])[0], np.float32))
            self.texts.append(text)
        return i

    def matrix(self) -> np.ndarray:
        return np.stack(self.rows).astype(np.float32) if self.rows else np.zeros((0, self.dim), np.float32)


# --------------------------------------------------------------------------- replaying backend


def _call_key(messages, schema, params: GenParams) -> str:
    blob = json.dumps([list(messages), schema, asdict(params)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


class _ReplayBackend:
    """A `ChatBackend` wrapper that serves a generation it already ran for the same
    (messages, schema, params) once more from memory.

    Lets the state builder call `extract` itself and then run the app's `process_turn`
    without generating twice. Streams through (the manager may stop reading a looping output:
    what was read is what is remembered); entries are consumed when replayed.
    """

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.n_ctx = inner.n_ctx
        self._memo: dict[str, str] = {}
        self.generated = 0

    def complete(self, messages, *, params: GenParams = GenParams(), schema=None, cancel=None) -> Iterator[str]:
        key = _call_key(messages, schema, params)
        if key in self._memo:
            return iter([self._memo.pop(key)])
        return self._stream(key, messages, params, schema, cancel)

    def _stream(self, key, messages, params, schema, cancel) -> Iterator[str]:
        pieces: list[str] = []
        stream = self.inner.complete(messages, params=params, schema=schema, cancel=cancel)
        try:
            for piece in stream:
                pieces.append(piece)
                yield piece
        finally:
            close = getattr(stream, "close", None)
            if close is not None:
                close()
            self.generated += 1
            self._memo[key] = "".join(pieces)

    def forget(self) -> None:
        self._memo.clear()

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self.inner.close()


# --------------------------------------------------------------------------- one pass


def _snapshot(bank: MemoryBank, table: _VectorTable, embedder) -> list[dict]:
    mems = sorted(bank.list(status="active"), key=lambda m: m.id)
    return [{"id": m.id, "text": m.text, "speaker": m.speaker, "observed_at": m.observed_at,
             "source": m.source, "v": table.row_of(m.text, embedder)} for m in mems]


def plan_state(manager, turn: Turn) -> tuple[str, list[str], list[str], list[str], list[Memory], list[str]]:
    """(kind, facts, duplicates, decision_facts, shown, auto_added) of one turn over the
    manager's bank, computed as `MemoryManager.plan_turn` does before its first decision call
    (`MemoryManager.screen`: facts are those the grounding gate accepted; auto_added: the first
    batch's facts with no related memory, ADDed without a model call)."""
    cfg = manager.config
    try:
        screened = manager.screen(turn.full_text, speaker=turn.speaker, time=turn.time or None)
    except ModelOutputError as exc:
        log.warning("state %s: fact extraction failed: %s", turn.dia_id, exc)
        return "extract-failed", [], [], [], [], []
    facts, dups = screened.facts, [op.text for op in screened.duplicates]
    if not facts:
        return "no-facts", [], [], [], [], []
    if not screened.fresh:
        return "all-duplicates", facts, dups, [], [], []
    batch, batch_vecs = screened.fresh[:cfg.facts_per_decision], screened.fresh_vecs[:cfg.facts_per_decision]
    unrelated, to_decide, shown = manager.split_batch(batch, batch_vecs, speaker=turn.speaker)
    if not to_decide:
        return "no-related", facts, dups, batch, [], unrelated
    return "decision", facts, dups, to_decide, shown, unrelated


def _questions(qas: Sequence[QA]) -> list[dict]:
    return [{"question": q.question, "answer": str(q.answer), "category": q.category, "qa_index": q.index}
            for q in qas]


def _make_state(sample: Sample, turn: Turn, qas, plan, snapshot) -> ManagerState:
    kind, facts, dups, batch, shown, unrelated = plan
    return ManagerState(
        id=f"{sample.sample_id}/{turn.dia_id}", sample_id=sample.sample_id, dia_id=turn.dia_id,
        speaker=turn.speaker, time=turn.time or None, turn_text=turn.full_text,
        source=f"locomo:{sample.sample_id}/{turn.dia_id}", speakers=list(sample.speakers), kind=kind,
        facts=facts, duplicates=dups, decision_facts=batch, shown_ids=[m.id for m in shown], auto_added=unrelated,
        prompt=prompts.manager_messages(batch, [m.text for m in shown]), questions=_questions(qas),
        snapshot=snapshot)


def decision_from_changes(changes, state: ManagerState) -> str:
    """The ops a turn applied, as a decision JSON over the state's aliases (what the app's
    manager decided). Changes to memories that were not shown (a later decision call of a
    long turn) cannot be written so and are left out."""
    alias = {mid: str(i) for i, mid in enumerate(state.shown_ids)}
    items = [{"id": alias[m.id], "text": m.text, "event": "UPDATE"} for m in changes.updated if m.id in alias]
    items += [{"id": alias[m.id], "text": m.text, "event": "DELETE"} for m in changes.deleted if m.id in alias]
    first_new = len(state.shown_ids)
    items += [{"id": str(first_new + i), "text": m.text, "event": "ADD"} for i, m in enumerate(changes.added)]
    return json.dumps({"memory": items}, ensure_ascii=False)


@dataclass
class BuildReport:
    turns: int = 0
    states: int = 0
    seconds: float = 0.0
    kinds: dict = field(default_factory=dict)
    turn_ops: dict = field(default_factory=lambda: dict.fromkeys(OP_EVENTS, 0))
    failures: int = 0


def build_states(sample: Sample, folder: str | os.PathLike, embedder, backend_factory: Callable[[], object], *,
                 max_sessions: int | None = None, max_states: int | None = None, manager_config=None,
                 progress: bool = False) -> tuple[list[ManagerState], BuildReport]:
    """The states of one conversation, built (or resumed, or reused) in `folder`.

    `backend_factory()` returns the manager's `ChatBackend`; it is called only when some turn
    still has to be processed. The pass stops after the last evidence turn (or the
    `max_states`-th one). Returns the states (vector table attached) and a report.
    """
    from core.agents.manager import MemoryManager
    from core.assistant.ingest import locomo_turn
    from core.assistant.turns import JsonlProgress, remaining, run_turns
    from core.memory import MemoryBank

    folder = Path(folder)
    ev = evidence_map(sample, max_sessions)
    turns = sample.turns_upto(max_sessions)
    last = max((i for i, t in enumerate(turns) if t.dia_id in ev), default=-1)
    if max_states is not None:
        hits = [i for i, t in enumerate(turns) if t.dia_id in ev][:max_states]
        last = hits[-1] if hits else -1
    turns = turns[:last + 1]
    report = BuildReport()
    items = [locomo_turn(sample.sample_id, t) for t in turns]
    with folder_lock(folder):
        checkpoint = JsonlProgress(folder / "progress.jsonl", key_of=lambda t: t.dia_id, record_of=_progress_record)
        meta = _read_meta(folder)
        table = _VectorTable(meta["dim"] if meta else int(embedder.dim), *_load_table(folder))
        todo = remaining(items, checkpoint)
        if todo:
            caching = embedder if isinstance(embedder, CachingEmbedder) else CachingEmbedder(embedder)
            replay = _ReplayBackend(backend_factory())
            bank = MemoryBank(folder / "bank.sqlite3", caching)
            bar = _bar(len(items), len(items) - todo, sample.sample_id, progress)
            try:
                manager = MemoryManager(bank, replay, config=manager_config)
                first = next(t for i, t in enumerate(items) if not checkpoint.is_done(i, t))
                _roll_back_unfinished(bank, first.turn_id)
                recorder = _StateRecorder(sample, turns, ev, manager, replay, table, caching, folder)
                run_turns(manager, items, progress=checkpoint, before_turn=recorder.before_turn,
                          after_turn=recorder.after_turn,
                          on_turn=(lambda _outcome: bar.update(1)) if bar is not None else None)
            finally:
                if bar is not None:
                    bar.close()
                bank.close()
                replay.close()
            _save_table(folder, table)
        records = {r["dia_id"]: r for r in checkpoint.records()}
        _write_meta(folder, sample, embedder, table.dim, max_sessions, max_states, len(turns))
    states = load_states(folder)
    for r in records.values():
        report.seconds += r.get("seconds", 0.0)
        report.failures += bool(r.get("error"))
        for e, n in prompts.op_counts(r).items():  # also reads records saved with "NONE"
            report.turn_ops[e] += n
    report.turns, report.states = len(records), len(states)
    report.kinds = dict(collections.Counter(s.kind for s in states))
    return states, report


def _bar(total, initial, name, enabled):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"states {name}", unit="turn", dynamic_ncols=True)


def _roll_back_unfinished(bank: MemoryBank, source: str) -> None:
    """Undo what a turn interrupted after its write (but before its progress line) applied,
    so its state is snapshotted, and the turn applied, again from the bank before it."""
    for _ in range(4):  # process_turn writes one batch (two after a vanished memory)
        newest = [e for e in bank.history(limit=200) if e.event in _UNDOABLE and not e.undone][:1]
        if not newest or newest[0].turn != source:
            return
        log.warning("turn %s was applied before an interruption: undoing it to redo it", source)
        bank.undo(actor="import")


class _StateRecorder:
    """The turn loop's hooks that make the states: before an evidence turn, its state is planned
    over the bank as it stands (and the replaying backend keeps those generations for the
    app's `process_turn`); after the turn, what the app applied is written into the state and
    the state saved, before the turn's progress line."""

    def __init__(self, sample: Sample, turns: Sequence[Turn], ev: dict, manager, replay, table, embedder,
                 folder: Path) -> None:
        self.sample, self.ev, self.manager, self.replay = sample, ev, manager, replay
        self.table, self.embedder, self.folder = table, embedder, folder
        self.by_dia = {t.dia_id: t for t in turns}

    def before_turn(self, item) -> ManagerState | None:
        self.replay.forget()
        qas = self.ev.get(item.dia_id)
        if not qas:
            return None
        turn = self.by_dia[item.dia_id]
        plan = plan_state(self.manager, turn)
        return _make_state(self.sample, turn, qas, plan, _snapshot(self.manager.bank, self.table, self.embedder))

    def after_turn(self, outcome) -> None:
        state = outcome.prepared
        if state is None:
            return
        if outcome.changes is not None:
            state.app_decision = decision_from_changes(outcome.changes, state)
        state.app_ops = outcome.op_counts()
        append_jsonl(self.folder / "states.jsonl", state.to_json())
        _save_table(self.folder, self.table)  # the state's rows must exist before its progress line


def _progress_record(outcome) -> dict:
    """One `progress.jsonl` line: the turn, the model error (or None), op counts, time, and
    whether it made a state."""
    return {"dia_id": outcome.turn.dia_id,
            "error": str(outcome.error)[:300] if outcome.error is not None else None,
            **outcome.op_counts(), "seconds": outcome.seconds, "state": outcome.prepared is not None}


# --------------------------------------------------------------------------- files


def _read_progress(path: Path) -> dict[str, dict]:
    return {r["dia_id"]: r for r in read_jsonl(path)}


def _read_meta(folder: Path) -> dict | None:
    p = folder / "meta.json"
    return json.loads(p.read_text(encoding="utf-8")) if p.is_file() else None


def _write_meta(folder: Path, sample: Sample, embedder, dim: int, max_sessions, max_states, n_turns) -> None:
    meta = {"layout": STATE_LAYOUT, "sample_id": sample.sample_id, "embedder": embedder.name, "dim": dim,
            "prompt_version": prompts.PROMPT_VERSION, "max_sessions": max_sessions, "max_states": max_states,
            "turns": n_turns}
    atomic_write_json(folder / "meta.json", meta)


def _load_table(folder: Path) -> tuple[np.ndarray | None, list[str]]:
    vec, txt = folder / "vectors.npy", folder / "vector_texts.json"
    if not vec.is_file() or not txt.is_file():
        return None, []
    return np.load(vec), json.loads(txt.read_text(encoding="utf-8"))


def _save_table(folder: Path, table: _VectorTable) -> None:
    """vectors.npy + vector_texts.json, each replaced atomically (texts last: rows >= texts)."""
    with atomic_path(folder / "vectors.npy") as tmp, open(tmp, "wb") as fh:
        np.save(fh, table.matrix())
    atomic_write_json(folder / "vector_texts.json", table.texts, indent=None)


def load_states(folder: str | os.PathLike) -> list[ManagerState]:
    """The states saved in `folder`, each with the shared vector table attached."""
    folder = Path(folder)
    path = folder / "states.jsonl"
    if not path.is_file():
        return []
    table, _ = _load_table(folder)
    done = _read_progress(folder / "progress.jsonl")
    states = []
    for d in read_jsonl(path):
        if d.get("dia_id") not in done:  # written, but the turn itself never finished: redone on resume
            continue
        try:
            s = ManagerState.from_json(d)
        except TypeError as exc:
            raise InvalidInputError(f"{path}: not a manager state ({exc})") from exc
        s.vector_table = table
        states.append(s)
    unique = {s.id: s for s in states}  # a resumed turn may have been written twice: keep the last
    return list(unique.values())


def states_folder(cache: str | os.PathLike, sample: Sample, embedder_name: str, manager_id: str | None,
                  max_sessions: int | None = None, max_states: int | None = None) -> Path:
    """`<cache>/states-<sample>-<hash of what the states depend on>`."""
    from training.eval.systems import turns_digest

    parts = [STATE_LAYOUT, sample.sample_id, turns_digest(sample.turns_upto(max_sessions)), str(max_sessions),
             str(max_states), embedder_name, manager_id or "", prompts.PROMPT_VERSION]
    digest = hashlib.sha256("\x1f".join(parts).encode()).hexdigest()[:12]
    safe = "".join(c if c.isalnum() or c in "-_." else "_" for c in sample.sample_id)
    return Path(cache) / f"states-{safe}-{digest}"


def states_from(data: str | os.PathLike, *, cache: str | os.PathLike, embedder=None, manager_model=None,
                backend_factory: Callable[[], object] | None = None, manager_id: str | None = None,
                samples: Sequence[str] | None = None, max_sessions: int | None = None,
                max_states: int | None = None, progress: bool = True) -> tuple[list[ManagerState], list[BuildReport]]:
    """States of every conversation of a LoCoMo JSON file (built or reused under `cache`), or
    of a states folder (one written by `build_states`).

    `manager_model`: a `core.config.ModelSpec` for the manager (None = the embedded model);
    `backend_factory`/`manager_id`/`embedder` override it (tests pass fakes).
    """
    from core.locomo import load_locomo

    p = Path(data)
    if p.is_dir():
        states = load_states(p)
        if not states:
            raise InvalidInputError(f"{p}: no manager states")
        return states, []
    if not p.is_file():
        raise InvalidInputError(f"LoCoMo data file not found: {p}")
    if embedder is None:
        from core.embeddings import default_embedder

        embedder = default_embedder()
    if backend_factory is None:
        from core.config import ModelSpec
        from core.llm.runtime import load_backend

        from training.models import model_id

        spec = manager_model or ModelSpec()
        manager_id = manager_id or model_id(spec)
        backend_factory = lambda: load_backend(spec)  # noqa: E731
    caching = CachingEmbedder(embedder)
    all_states, reports = [], []
    for sample in load_locomo(p, list(samples) if samples else None):
        folder = states_folder(cache, sample, embedder.name, manager_id, max_sessions, max_states)
        states, report = build_states(sample, folder, caching, backend_factory, max_sessions=max_sessions,
                                      max_states=max_states, progress=progress)
        log.info("%s: %d states (%s) in %s", sample.sample_id, len(states), report.kinds, folder)
        all_states += states
        reports.append(report)
    return all_states, reports


def op_distribution(states: Sequence[ManagerState]) -> dict:
    """What the current manager applied at the states: op counts over all states and over the
    decision states only (where the model was called), and the states per kind."""
    def total(group) -> dict:
        c = collections.Counter(dict.fromkeys(OP_EVENTS, 0))
        for s in group:
            c.update(s.app_ops or {})
        n = sum(c.values())
        return {e: c[e] for e in OP_EVENTS} | {"share": {e: round(c[e] / n, 3) if n else 0.0
                                                       for e in OP_EVENTS}}

    return {"states": len(states), "kinds": dict(collections.Counter(s.kind for s in states)),
            "all_states": total(states), "decision_states": total([s for s in states if s.kind == "decision"])}

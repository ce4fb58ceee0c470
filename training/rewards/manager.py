"""The Memory Manager's reward (method.md §2): the frozen Answer Agent's exact match after
applying the sampled operations to a copy of the state's memory bank.

`manager_reward(completion, state, answerer) -> float`, for one sampled completion:
1. parse it strictly (`check_completion`): not JSON / no `memory` list, an unknown event, or an
   id that is not an integer alias of the prompt (UPDATE/DELETE must name a SHOWN memory; NONE
   an alias or a new-fact id) -> 0.0. ADD ids are not checked (the app ignores them). With
   `lenient` (ours, for models that cannot write the JSON without the app's grammar) the valid
   complete items of a broken output are scored instead (`salvage_completion`);
2. turn it into ops exactly as the app does (`core.agents.manager.parse_manager_output`, which also
   drops repeated or empty items) and apply them in one `MemoryBank.apply` to a fresh
   in-memory copy of the snapshot (`snapshot_bank`: rebuilt from stored vectors, no
   re-embedding of the snapshot; the state is never modified);
3. let the frozen Answer Agent (`core.agents.answer.AnswerAgent`, 30 memories per speaker, greedy,
   `max_tokens` short) answer each linked question over that copy, in the app's prompt: with
   `sources` (default) the memories' source turns are quoted under them, as the app does. The
   ops of the state's turn link to its text (`ManagerState.turn_text`), as the app's ingest
   links them; snapshot memories carry a quote only when the state's snapshot rows hold their
   turn's text (`snapshot[i]["source_text"]`, read with .get(); states built before that field
   give those memories no quote). `sources=False`: the paper's prompt, memories only;
4. reward = mean exact match (training.eval.metrics normalisation, as the answer agent's reward),
   plus `f1_weight` x mean token F1 when asked (paper: EM only, weight 0).

Pure in the sense that matters for training: deterministic for a given (completion, state,
answerer) and free of side effects on the state; the answerer only memoises. Costs are kept
down by two caches in `FrozenAnswerer`: per (state, canonical ops) the whole result, and per
exact answer prompt the generated answer (identical prompts give identical greedy answers).

`ManagerRewardFunc` adapts it to TRL's reward-function signature (`state_id` column).
Threads: one thread at a time per answerer (its backend is not thread-safe).
"""

from __future__ import annotations

import collections
import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Sequence

from core.agents import prompts
from core.errors import ModelOutputError
from core.types import OP_EVENTS, ChatBackend, Embedder, GenParams, Memory, MemoryOp, SourceTurn

from training.data.manager import CachingEmbedder, ManagerState
from training.eval.metrics import exact_match, f1_score

if TYPE_CHECKING:
    from core.memory.bank import MemoryBank

log = logging.getLogger(__name__)

REWARD_ANSWER_TOKENS = 160  # greedy answer budget: the selection list + "**Answer:** ..."


class InvalidCompletion(ValueError):
    """A sampled manager output that earns 0: its reason is the message."""


# --------------------------------------------------------------------------- parsing


def _alias_number(alias: Any) -> int | None:
    text = str(alias).strip()
    return int(text) if text.isdigit() else None


def _item_problem(item: dict, state: ManagerState) -> str | None:
    """Why one raw item earns 0 (None when it is valid for `state`'s prompt)."""
    n_shown, n_ids = len(state.shown_ids), len(state.shown_ids) + len(state.decision_facts)
    event = prompts.op_event(item.get("event"))
    if event is None:
        return f"unknown event {item.get('event')!r}"
    if event == "ADD":
        return None
    n = _alias_number(item.get("id"))
    if event in ("UPDATE", "DELETE") and (n is None or n >= n_shown):
        return f"{event} of id {item.get('id')!r}, not a shown memory"
    if event == "NOOP" and (n is None or n >= n_ids):
        return f"NONE of id {item.get('id')!r}, not an id of the prompt"
    return None


def check_completion(raw: str, state: ManagerState) -> list[dict]:
    """The raw items of a completion, or InvalidCompletion (see the module docstring)."""
    try:
        items = prompts.parse_manager_items(raw)
    except ModelOutputError as exc:
        raise InvalidCompletion(str(exc)) from None
    for item in items:
        problem = _item_problem(item, state)
        if problem:
            raise InvalidCompletion(problem)
    return items


def complete_items(raw: str) -> list[dict]:
    """The complete operation objects (dicts with an "event") in `raw`, in order, even when
    the output around them is broken: cut off, looping, or with a malformed neighbour.

    >>> complete_items('{"memory": [{"id": "0", "event": "NONE"}, {"id": "1", "text": "Jo lo')
    [{'id': '0', 'event': 'NONE'}]
    """
    decoder = json.JSONDecoder()
    items, i = [], raw.find("{")
    while i >= 0:
        try:
            value, end = decoder.raw_decode(raw, i)
        except ValueError:
            i = raw.find("{", i + 1)
            continue
        if isinstance(value, dict) and "event" in value:
            items.append(value)
            i = raw.find("{", end)
        else:
            i = raw.find("{", i + 1)
    return items


def salvage_completion(raw: str, state: ManagerState) -> str:
    """LENIENT scoring (ours, `lenient_parse`; the paper scores unparseable output 0): the
    valid complete items of `raw` as a well-formed decision; InvalidCompletion when none is
    left. The app decodes the manager with a JSON-schema grammar, so its outputs are always
    well-formed; a small model sampled without that grammar breaks the JSON in most samples
    (SmolLM2-135M at temperature 0.7: 1 of 12 parseable), and zeroing those leaves GRPO with
    no reward differences to learn the decision from. Items with an unknown event or an id
    that was not in the prompt are dropped, as the app drops them."""
    try:
        items = prompts.parse_manager_items(raw)
    except ModelOutputError:
        items = complete_items(raw)
    keep = [item for item in items if _item_problem(item, state) is None]
    if not keep:
        raise InvalidCompletion("no complete, valid operation in the output")
    return json.dumps({"memory": keep}, ensure_ascii=False)


def completion_ops(raw: str, state: ManagerState, alias_map: dict[str, Memory]) -> list[MemoryOp]:
    """The ops the app would apply for `raw` (InvalidCompletion when it earns 0)."""
    from core.agents.manager import parse_manager_output

    check_completion(raw, state)
    return parse_manager_output(raw, alias_map, speaker=state.speaker, observed_at=state.time,
                                source=state.source)


def ops_key(ops: Sequence[MemoryOp]) -> str:
    """A canonical key of what ops change (a NOOP changes nothing and is left out)."""
    changing = sorted((o.event, o.memory_id or 0, o.text) for o in ops if o.event != "NOOP")
    return hashlib.sha256(json.dumps(changing).encode()).hexdigest()[:24]


# --------------------------------------------------------------------------- the bank copy


def snapshot_bank(state: ManagerState, embedder, *, sources: bool = False):
    """(bank, alias_map): a fresh in-memory `MemoryBank` holding the state's snapshot (vectors
    reused), and the shown aliases mapped to the copy's memories. With `sources`, snapshot rows
    that hold their turn's text (`source_text`) are linked to it ("added"), one source per
    turn. The caller closes the bank."""
    from core.memory import MemoryBank

    bank = MemoryBank(":memory:", embedder)
    try:
        ops = [MemoryOp("ADD", text=m["text"], speaker=m.get("speaker"), observed_at=m.get("observed_at"),
                        source=m.get("source")) for m in state.snapshot]
        vectors = state.snapshot_vectors()
        groups: dict = {}  # one apply per source turn (its text kept once), the rest together
        for i, m in enumerate(state.snapshot):
            key = (m.get("source"), m.get("source_text")) if sources and m.get("source_text") else None
            groups.setdefault(key, []).append(i)
        added_at: dict[int, Memory] = {}
        for key, idx in groups.items():
            turn = None
            if key is not None:
                first = state.snapshot[idx[0]]
                turn = SourceTurn(str(key[1]), speaker=first.get("speaker"), said_at=first.get("observed_at"),
                                  ref=key[0])
            made = bank.apply([ops[i] for i in idx], actor="import", vectors=vectors[idx], source=turn).added
            added_at.update(zip(idx, made))
        added = [added_at[i] for i in range(len(ops))]
        copy_of = {m["id"]: new for m, new in zip(state.snapshot, added)}
        alias_map = {str(i): copy_of[mid] for i, mid in enumerate(state.shown_ids)}
    except BaseException:
        bank.close()
        raise
    return bank, alias_map


def greedy_decisions(states: Sequence[ManagerState], backend: ChatBackend, embedder: Embedder) -> dict:
    """What a manager model decides at `states` the way the app calls it: greedy,
    grammar-constrained `MemoryManager.decide` over a copy of each state's bank (the states'
    prompts are the app's). Returns the op counts, the number of new facts shown, failures
    (output still invalid after the app's retry), and per state the ops."""
    from core.agents.manager import MemoryManager

    counts, rows = _counts([]), []
    facts = failed = 0
    for s in states:
        if not s.decision_facts:
            continue
        bank, alias_map = snapshot_bank(s, embedder)
        try:
            shown = [alias_map[str(i)] for i in range(len(s.shown_ids))]
            try:
                ops = MemoryManager(bank, backend).decide(s.decision_facts, shown, speaker=s.speaker,
                                                          observed_at=s.time, source=s.source)
            except ModelOutputError as exc:
                failed += 1
                rows.append({"state": s.id, "error": str(exc)})
                continue
        finally:
            bank.close()
        counts.update(o.event for o in ops)
        facts += len(s.decision_facts)
        rows.append({"state": s.id, "ops": [[o.event, o.text] for o in ops]})
    return {"states": len(rows), "ops": dict(counts), "facts": facts, "failed": failed,
            "rows": rows}


# --------------------------------------------------------------------------- the answerer


@dataclass
class RewardDetail:
    reward: float
    valid: bool
    reason: str = ""
    ops: dict = field(default_factory=dict)  # event -> count of the applied ops
    answers: list[str] = field(default_factory=list)
    em: list[float] = field(default_factory=list)
    f1: list[float] = field(default_factory=list)
    seconds: float = 0.0
    cached: bool = False


class FrozenAnswerer:
    """The frozen Answer Agent that scores manager outputs, with its caches and cost counters.

    `backend`: a ChatBackend (llama.cpp `LlamaBackend`, or a FakeBackend in tests); `embedder`:
    the embedder the states were built with (wrapped in a `CachingEmbedder`). `k`: memories per
    question (30 per speaker). `params`: greedy with a short `max_tokens`. `lenient`: score the
    valid complete items of a broken output instead of 0 (`salvage_completion`; ours).
    `sources`: the app's answer prompt with source quotes (default) or the paper's (False).
    """

    def __init__(self, backend: ChatBackend, embedder: Embedder, *, k: int = 60,
                 max_tokens: int = REWARD_ANSWER_TOKENS, f1_weight: float = 0.0, lenient: bool = False,
                 max_cache: int = 50_000, sources: bool = True) -> None:
        self.backend = backend
        self.embedder = embedder if isinstance(embedder, CachingEmbedder) else CachingEmbedder(embedder)
        self.k = k
        self.params = GenParams(temperature=0.0, max_tokens=max_tokens)
        self.f1_weight = f1_weight
        self.lenient = lenient
        self.sources = sources
        self.max_cache = max_cache
        self._answers: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._results: collections.OrderedDict[str, RewardDetail] = collections.OrderedDict()
        self.stats = collections.Counter()
        self.seconds = collections.Counter()

    @classmethod
    def load(cls, *, adapter: str | None = None, model: str | None = None, n_ctx: int = 4096,
             threads: int | None = None, embedder=None, **kw) -> "FrozenAnswerer":
        """The embedded model (or `model`) with an optional GGUF LoRA `adapter`, via llama.cpp."""
        from core.config import ModelSpec
        from core.llm.runtime import load_backend

        if embedder is None:
            from core.embeddings import default_embedder

            embedder = default_embedder()
        backend = load_backend(ModelSpec(path=model, adapter=adapter, n_ctx=n_ctx, n_threads=threads))
        return cls(backend, embedder, **kw)

    def close(self) -> None:
        self.backend.close()

    @staticmethod
    def _remember(cache: collections.OrderedDict, key: str, value, limit: int) -> None:
        cache[key] = value
        while len(cache) > limit:
            cache.popitem(last=False)

    def answer(self, bank: MemoryBank, question: str, speakers: Sequence[str]) -> str:
        """The greedy answer over `bank`; generated once per distinct prompt."""
        from core.agents.answer import AnswerAgent

        # the app's answer prompt (source quotes unless `sources` is off: the paper's)
        agent = AnswerAgent(bank, self.backend, k=self.k, params=self.params, sources=self.sources)
        t0 = time.perf_counter()
        retrieved = agent.retrieve(question, speakers=list(speakers))
        prompt = agent.build_prompt(question, retrieved)
        key = hashlib.sha256(json.dumps(prompt.messages, ensure_ascii=False).encode()).hexdigest()
        self.seconds["retrieve"] += time.perf_counter() - t0
        if key in self._answers:
            self.stats["answer_cache_hits"] += 1
            self._answers.move_to_end(key)
            return self._answers[key]
        t0 = time.perf_counter()
        answer = agent.answer(question, memories=retrieved).answer
        self.seconds["generate"] += time.perf_counter() - t0
        self.stats["generations"] += 1
        self._remember(self._answers, key, answer, self.max_cache)
        return answer

    def score(self, completion: str, state: ManagerState) -> RewardDetail:
        """The reward of one completion at one state, with what it did (see the module docstring).
        Invalid and already-seen decisions cost no bank copy and no generation."""
        t0 = time.perf_counter()
        self.stats["samples"] += 1
        try:  # ops against the snapshot's own ids: the validity check and the cache key
            if self.lenient:
                completion = salvage_completion(completion, state)
            ops = completion_ops(completion, state, {str(i): m for i, m in enumerate(state.shown_memories())})
        except InvalidCompletion as exc:
            self.stats["invalid"] += 1
            return RewardDetail(0.0, False, str(exc), seconds=time.perf_counter() - t0)
        key = f"{state.id}|{ops_key(ops)}"
        hit = self._results.get(key)
        if hit is not None:
            self.stats["result_cache_hits"] += 1
            return RewardDetail(hit.reward, True, hit.reason, dict(_counts(ops)), list(hit.answers),
                                list(hit.em), list(hit.f1), time.perf_counter() - t0, True)
        bank, alias_map = snapshot_bank(state, self.embedder, sources=self.sources)
        try:
            detail = self._score_ops(bank, completion_ops(completion, state, alias_map), state)
        finally:
            bank.close()
        detail.seconds = time.perf_counter() - t0
        self._remember(self._results, key, detail, self.max_cache)
        return detail

    def _score_ops(self, bank: MemoryBank, ops: list[MemoryOp], state: ManagerState) -> RewardDetail:
        auto = [MemoryOp("ADD", text=f, speaker=state.speaker, observed_at=state.time, source=state.source)
                for f in state.auto_added]  # what the app adds at this turn whatever the decision
        if ops or auto:
            turn = (SourceTurn(state.turn_text, speaker=state.speaker, said_at=state.time, ref=state.source)
                    if self.sources and state.turn_text else None)
            bank.apply(auto + ops, actor="manager", turn=state.source, source=turn)
        answers, ems, f1s = [], [], []
        for q in state.questions:
            a = self.answer(bank, q["question"], state.speakers)
            answers.append(a)
            ems.append(exact_match(a, q["answer"]))
            f1s.append(f1_score(a, q["answer"]))
        n = max(1, len(state.questions))
        reward = sum(ems) / n + self.f1_weight * sum(f1s) / n
        return RewardDetail(reward, True, "", dict(_counts(ops)), answers, ems, f1s)


def _counts(ops: Sequence[MemoryOp]) -> collections.Counter:
    c = collections.Counter({e: 0 for e in OP_EVENTS})
    c.update(o.event for o in ops)
    return c


def manager_reward(completion: str, state: ManagerState, answerer: FrozenAnswerer) -> float:
    """The Memory Manager's reward for one sampled completion (see the module docstring)."""
    return answerer.score(completion, state).reward


# --------------------------------------------------------------------------- TRL adapter


class ManagerRewardFunc:
    """TRL reward function: `f(prompts, completions, state_id=[...], **kw) -> [float]`.

    Logs, when TRL passes `log_metric`: the share of valid completions, the mean number of each
    op per completion, and the reward's seconds per completion.
    """

    __name__ = "manager_em"

    def __init__(self, states: Sequence[ManagerState], answerer: FrozenAnswerer) -> None:
        self.states = {s.id: s for s in states}
        self.answerer = answerer
        self.details: list[RewardDetail] = []  # the last call's

    def __call__(self, completions=None, state_id=None, log_metric=None, **_: Any) -> list[float]:
        from training.rewards.answer import completion_text

        if state_id is None:
            raise ValueError("the training rows have no 'state_id' column")
        t0 = time.perf_counter()
        self.details = [self.answerer.score(completion_text(c), self.states[s]) for c, s in zip(completions, state_id)]
        if log_metric is not None and self.details:
            n = len(self.details)
            log_metric("manager/valid", sum(d.valid for d in self.details) / n)
            for e in OP_EVENTS:
                log_metric(f"manager/{e}", sum(d.ops.get(e, 0) for d in self.details) / n)
            log_metric("manager/reward_seconds", (time.perf_counter() - t0) / n)
        return [d.reward for d in self.details]


"""The Memory Manager (method.md §1): after each dialogue turn, turn it into memory operations.

`MemoryManager.process_turn` runs, for one turn:
extract facts (schema-constrained) -> the grounding gate (a fact the turn does not support
becomes a REJECT op) -> skip exact and near duplicates without a model call ->
retrieve the top 5 related memories per fact (merged) -> show them under small integer
aliases -> constrained ADD/UPDATE/DELETE/NONE ops (the model's NONE is a NOOP op) -> validate
the ids (the manager may only touch the memories it was SHOWN; anything else is dropped and
logged) -> the gate again on the ADD/UPDATE texts -> keep the facts the decision dropped and
mark the memories a new fact replaces (`core.agents.updates`; `ManagerConfig.updates`,
`.supersede`) -> one `bank.apply` transaction (recorded in the event log) -> the `MemoryChanges`.

Threading: a manager is driven by one thread at a time (the pipeline's manager thread or the
ingest loop); the backend is not thread-safe.

Departures from Mem0/the paper (our choices):
- a memory counts as related only from a cosine of `related_min_score` up (default: the
  embedder's `related_score`, 0.6 for the embedded all-MiniLM-L6-v2): Mem0 shows
  the top 5 whatever their score, which means unrelated memories the model must answer NONE
  for (slow, and a small model then also drops the new fact). Measured with 0.1 on the
  validation conversation: the embedded model answered NONE for 1023 of 1033 facts and the
  bank ended with 4 memories after 369 turns. With all-MiniLM-L6-v2, paraphrases and the same
  attribute of the same person score ~0.7+, different topics of one person ~0.3-0.5;
- a fact with no related memory is ADDed without a model call (NONE would only drop a new
  fact); only the facts that have related memories go to the decision call, with their
  related memories merged. `decide_when_empty=True` sends every fact to the call;
- duplicates found by `find_duplicate` are recorded as NOOP ops (the event log shows why a
  fact was not stored) instead of being shown to the model;
- a turn longer than `max_turn_chars` is extracted in chunks of `chunk_chars`; the part past
  `max_turn_chars` is not scanned (logged), the message itself is kept in full by the caller;
- the grounding gate (`core.agents.grounding.check_fact`, `ManagerConfig.gate`): every
  extracted fact is checked against the turn (its text, speaker, time and the other speakers
  this manager has seen) before it is deduplicated or shown to the model, and every ADD/UPDATE
  text the decision call writes is checked again (an UPDATE against the turn plus the memory it
  rewrites). A refused fact becomes a REJECT op with the gate's reason, never a memory. The
  cosine part of the gate is calibrated for all-MiniLM-L6-v2 only: with another embedder the
  gate is lexical;
- extraction modes (`ManagerConfig.extraction`): "free" is the paper's (the model writes the
  facts); "extractive" lets the model only choose among the turn's own sentences and code
  rewrites them (`core.agents.extractive`); "auto" picks extractive for a manager model under
  `EXTRACTIVE_MAX_PARAMS` parameters (read from its GGUF header) and free for a larger or an
  unknown one (`resolve_extraction`).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass, field
from typing import AbstractSet, Mapping, Sequence, TypedDict

from core.agents import extractive, prompts, updates
from core.agents.grounding import DEFAULT_CONFIG as GATE_DEFAULTS
from core.agents.grounding import GateConfig, Source, Verdict, check_fact
from core.agents.guards import RepetitionGuard, fact_key
from core.embeddings import DEFAULT_EMBEDDER_NAME
from core.errors import Cancelled, InvalidInputError, ModelOutputError, NotFoundError, UserError
from core.memory.text import clean_fragment
from core.textlog import log_text
from core.types import (REJECT, CancelToken, ChatBackend, GenParams, Memory, MemoryChanges, MemoryOp, SourceTurn,
                        read_stream)

log = logging.getLogger(__name__)


EXTRACT_PARAMS = GenParams(temperature=0.0, max_tokens=1024)
DECIDE_PARAMS = GenParams(temperature=0.0, max_tokens=1536)
RETRY_TEMPERATURE = 0.5

EXTRACTIONS = ("free", "extractive", "auto")
# "auto": a manager model with fewer parameters than this (the GGUF header's count) chooses
# among the turn's sentences instead of writing facts (figures in docs/results.md, "Extractive")
EXTRACTIVE_MAX_PARAMS = 1_000_000_000
# known without a speaker: how the prompts name an unnamed speaker
_UNNAMED = ("User", extractive.DEFAULT_SPEAKER)


def resolve_extraction(mode: str, parameter_count: int | None) -> str:
    """"free" or "extractive" for a `ManagerConfig.extraction` value and the manager model's
    parameter count (None: unknown, e.g. a scripted test backend). InvalidInputError for an
    unknown mode.

    >>> resolve_extraction("auto", 135_000_000), resolve_extraction("auto", 7_000_000_000)
    ('extractive', 'free')
    >>> resolve_extraction("auto", None), resolve_extraction("extractive", None)
    ('free', 'extractive')
    """
    if mode not in EXTRACTIONS:
        raise InvalidInputError(f"Unknown extraction mode {mode!r}: choose one of {', '.join(EXTRACTIONS)}.")
    if mode != "auto":
        return mode
    return "extractive" if parameter_count is not None and parameter_count < EXTRACTIVE_MAX_PARAMS else "free"


def parameter_count(backend) -> int | None:
    """The backend's model size from its GGUF header (`LlamaBackend.info`), None when unknown."""
    n = getattr(getattr(backend, "info", None), "parameter_count", None)
    return n if isinstance(n, int) and not isinstance(n, bool) and n > 0 else None


@dataclass
class ManagerConfig:
    """Knobs of the manager (defaults follow Mem0 where it has one)."""

    related_per_fact: int = 5  # Mem0: top 5 per fact
    related_min_score: float | None = None  # cosine below which a memory is not "related" (ours);
    # None = the embedder's calibrated `related_score`
    duplicate_threshold: float = 0.95  # cosine similarity for a near-duplicate
    decide_when_empty: bool = False
    max_shown: int = 20  # memories shown in one decision call
    facts_per_decision: int = 10  # facts per decision call (a long turn makes several)
    chunk_chars: int = 2000
    max_turn_chars: int = 16000
    extract_params: GenParams = EXTRACT_PARAMS
    # core.agents.updates: facts the decision dropped are kept (`updates`), and an ADD that
    # replaces an older memory supersedes it by the slot/retraction/correction rules (`supersede`)
    updates: bool = True
    supersede: bool = True
    decide_params: GenParams = DECIDE_PARAMS
    gate: bool = True  # the grounding gate (ours); False = the paper's path, nothing refused
    extraction: str = "auto"  # "free" | "extractive" | "auto" (module docstring)
    gate_config: GateConfig = field(default=GATE_DEFAULTS)

    def __post_init__(self) -> None:
        resolve_extraction(self.extraction, None)  # InvalidInputError for an unknown mode

    def variant(self) -> str:
        """What of this config changes the banks a manager builds beyond the model and the
        prompts: a cache key part ("gate-auto", "nogate-free").

        >>> ManagerConfig().variant(), ManagerConfig(gate=False, extraction="free").variant()
        ('gate-auto', 'nogate-free')
        """
        return f"{'gate' if self.gate else 'nogate'}-{self.extraction}"


def turn_chunks(text: str, config: ManagerConfig | None = None) -> list[str]:
    """The pieces `MemoryManager.extract` extracts facts from separately: `text` stripped,
    cut to `config.max_turn_chars` (logged when it is longer), then split into pieces of at
    most `config.chunk_chars`, at a sentence or word boundary when one is in the second half.

    >>> turn_chunks("  I have a dog.  ")
    ['I have a dog.']
    """
    config = config or ManagerConfig()
    text = text.strip()
    limit = config.max_turn_chars
    if len(text) > limit:
        log.warning("turn of %d characters: only the first %d are scanned for facts", len(text), limit)
        text = text[:limit]
    size = config.chunk_chars
    chunks, start = [], 0
    while start < len(text):
        end = min(len(text), start + size)
        if end < len(text):  # cut at a sentence or word boundary when one is near
            cut = max(text.rfind(". ", start, end), text.rfind("\n", start, end))
            if cut <= start + size // 2:
                cut = text.rfind(" ", start, end)
            end = cut + 1 if cut > start + size // 2 else end
        chunks.append(text[start:end].strip())
        start = end
    return [c for c in chunks if c]


class _Provenance(TypedDict):
    """The `MemoryOp` fields every op of one turn shares."""

    speaker: str | None
    observed_at: str | None
    source: str | None


def _shape(value: object) -> str:
    """What a model-given value is, for log lines: a short id-like string itself, else only
    its type and length (it may hold memory text, or be 1 MB long)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 6 and value.strip().isalnum() else f"<text of {len(value)} chars>"
    if isinstance(value, (list, dict)):
        return f"<{type(value).__name__} of {len(value)}>"
    return f"<{type(value).__name__}>"


def _id_alias(value: object) -> str | None:
    """A shown alias from the model's `id`: a string (stripped), an int as its decimal string,
    "" when missing; None for any other type (a bool, float, list or object is refused)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return str(value)
    return value.strip() if isinstance(value, str) else None


def _op_text(value: object) -> str | None:
    """The model's `text` cleaned as the bank cleans memory texts (`clean_fragment`) and cut
    to `FACT_MAX_CHARS`; "" when missing, None when it is not a string (refused)."""
    if value is None:
        return ""
    if not isinstance(value, str):
        return None
    text = clean_fragment(value)[:prompts.FACT_MAX_CHARS].strip()
    return text if any(c.isalnum() for c in text) else ""  # "\ufffd" or "..." alone says nothing


def parse_manager_output(raw: str, alias_map: Mapping[str, Memory], *, speaker: str | None = None,
                         observed_at: str | None = None, source: str | None = None) -> list[MemoryOp]:
    """Validated ops from the manager's raw JSON. Pure: no bank, no model.

    `alias_map` maps each shown alias ("0", "1", ...) to the memory shown under it. Rules:
    output that is not JSON or lacks a `memory` list raises ModelOutputError; each invalid item
    is dropped and logged: an event that is not a string of the schema, an `id` or `text` of
    the wrong type (never stringified: an int id is read as its decimal string, a bool, float,
    list or object is refused), an UPDATE/DELETE whose id was not shown, a second op on the
    same memory, an ADD/UPDATE with empty text, an ADD repeating another ADD or a shown
    memory. Texts are cleaned like the bank's (`core.memory.text.clean_fragment`: NULs and
    control characters dropped, lone surrogates replaced, whitespace collapsed); a text with
    no letter or digit counts as empty. An UPDATE to
    the same text becomes a NOOP. NOOP ops (the model's "NONE", `prompts.op_event`) keep the
    memory id when it was shown (for the event log).

    >>> m = Memory(7, "Jo has a dog")
    >>> ops = parse_manager_output('{"memory": [{"id": "0", "text": "Jo has two dogs", "event": "UPDATE"},'
    ...     ' {"id": "9", "text": "x", "event": "DELETE"}, {"id": "0", "text": true, "event": "UPDATE"}]}', {"0": m})
    >>> [(o.event, o.memory_id, o.text, o.old_text) for o in ops]
    [('UPDATE', 7, 'Jo has two dogs', 'Jo has a dog')]
    """
    items = prompts.parse_manager_items(raw)
    ops: list[MemoryOp] = []
    touched: set[int] = set()
    known_texts = {fact_key(m.text) for m in alias_map.values()}
    added: set[str] = set()
    extra: _Provenance = {"speaker": speaker, "observed_at": observed_at, "source": source}
    for n, item in enumerate(items):
        raw_event = item.get("event")
        event = prompts.op_event(raw_event) if isinstance(raw_event, str) else None
        alias, text = _id_alias(item.get("id")), _op_text(item.get("text"))
        if event is None:
            log.warning("manager op dropped: unknown event %s (item %d)", _shape(raw_event), n)
            log_text(f"manager item {n} with an unknown event", item)
            continue
        if alias is None or text is None:
            log.warning("manager %s dropped (item %d): id %s or text %s of the wrong type", event, n,
                        _shape(item.get("id")), _shape(item.get("text")))
            continue
        memory = alias_map.get(alias)
        if event == "ADD":
            if not text or fact_key(text) in added:
                log.info("manager ADD dropped (item %d): %s", n, "repeated text" if text else "empty text")
                continue
            if fact_key(text) in known_texts:
                ops.append(MemoryOp("NOOP", text=text, **extra))
                continue
            added.add(fact_key(text))
            ops.append(MemoryOp("ADD", text=text, **extra))
            continue
        if memory is None:
            if event == "NOOP":
                ops.append(MemoryOp("NOOP", text=text, **extra))
            else:
                log.warning("manager %s dropped: id %s was not shown to it (shown: %s)",
                            event, _shape(alias), sorted(alias_map))
            continue
        if memory.id in touched:
            log.warning("manager %s dropped: memory alias %s already has an op this turn", event, _shape(alias))
            continue
        if event == "UPDATE" and not text:
            log.warning("manager UPDATE dropped: empty text for alias %s", _shape(alias))
            continue
        touched.add(memory.id)
        if event == "UPDATE" and fact_key(text) == fact_key(memory.text):
            event = "NOOP"
        ops.append(MemoryOp(event, text=text if event == "UPDATE" else memory.text,
                            memory_id=memory.id, old_text=memory.text if event == "UPDATE" else None,
                            **extra))
    return ops


@dataclass
class Screened:
    """One turn before its first decision call (`MemoryManager.screen`): the extracted facts the
    gate accepted, the REJECT ops of those it refused, the NOOP ops of the accepted ones that
    duplicate a memory, and the rest (`fresh`, with their vectors)."""

    facts: list[str] = field(default_factory=list)
    rejected: list[MemoryOp] = field(default_factory=list)
    duplicates: list[MemoryOp] = field(default_factory=list)
    fresh: list[str] = field(default_factory=list)
    fresh_vecs: list = field(default_factory=list)


class MemoryManager:
    """Runs the Memory Manager over turns, writing to one `MemoryBank`.

    Raises ModelOutputError when the model output still fails after one retry (never a silent
    "no facts"); `Cancelled` when `cancel` is set during a model call (nothing was written).
    """

    def __init__(self, bank, backend: ChatBackend, *, config: ManagerConfig | None = None,
                 params: GenParams | None = None, decide_backend: ChatBackend | None = None) -> None:
        """`decide_backend`: an optional second instance of the same model for the decision
        calls. Extraction and decision prompts have different fixed prefixes; on one instance
        they evict each other's KV cache, so every call re-reads its whole instruction text."""
        self.bank = bank
        self.backend = backend
        self.decide_backend = decide_backend or backend
        self.config = dataclasses.replace(config) if config is not None else ManagerConfig()
        if params is not None:  # one override for both calls (e.g. a seed for evaluation)
            self.config.extract_params = params
            self.config.decide_params = params
        self.known_names: set[str] = set()  # the speakers of the turns processed so far (the gate's context)
        self.last_rejected: list[MemoryOp] = []  # the REJECT ops of the last `process_turn`
        self._extraction: str | None = None

    # --- model calls ------------------------------------------------------------------
    def _generate(self, messages, schema: dict, params: GenParams, cancel: CancelToken | None,
                  backend: ChatBackend | None = None) -> str:
        """One constrained generation; a looping output is cut short (RepetitionGuard)."""
        guard = RepetitionGuard()
        stream = (backend or self.backend).complete(messages, params=params, schema=schema, cancel=cancel)
        pieces, _ = read_stream(stream, guard.feed)
        if cancel is not None and cancel.cancelled:
            raise Cancelled("manager generation cancelled")
        if guard.stopped:
            log.info("repetitive model output cut after %d distinct items", len(guard.items))
            return guard.repaired()
        return "".join(pieces)

    def _call_with_retry(self, what: str, messages, schema: dict, params: GenParams, parse,
                         cancel: CancelToken | None, backend: ChatBackend | None = None):
        """Generate and parse; on a model failure or bad output log it and retry once
        (sampling with a little temperature so the retry can differ), then raise."""
        last_raw = ""
        last_exc: Exception | None = None
        for attempt in (1, 2):
            if attempt == 2:
                params = GenParams(temperature=max(params.temperature, RETRY_TEMPERATURE),
                                   top_p=params.top_p, max_tokens=params.max_tokens,
                                   seed=(params.seed or 0) + 1, stop=params.stop)
            try:
                last_raw = self._generate(messages, schema, params, cancel, backend)
                return parse(last_raw)
            except (Cancelled, UserError, KeyboardInterrupt):
                raise
            except ModelOutputError as exc:
                last_exc = exc
                log.warning("%s: unparseable output (attempt %d, %d chars): %s", what, attempt, len(last_raw), exc)
                log_text(f"{what} output (attempt {attempt})", last_raw[:2000])
            except Exception as exc:  # a failure inside the model runtime
                last_exc = exc
                log.warning("%s: model call failed (attempt %d): %r", what, attempt, exc, exc_info=True)
        raise ModelOutputError(f"{what} failed twice: {last_exc}", last_raw) from last_exc

    # --- steps ------------------------------------------------------------------------
    @property
    def extraction(self) -> str:
        """The extraction mode in use, "free" or "extractive" ("auto" resolved once, from the
        extraction backend's parameter count)."""
        if self._extraction is None:
            self._extraction = resolve_extraction(self.config.extraction, parameter_count(self.backend))
            log.info("memory manager: %s extraction (%s, configured %s)", self._extraction,
                     getattr(self.backend, "name", "model"), self.config.extraction)
        return self._extraction

    def extract(self, text: str, *, speaker: str | None, time: str | None,
                cancel: CancelToken | None = None) -> list[str]:
        """The facts of one turn (its own text only), not yet gated (`screen` gates them).
        Raises ModelOutputError after one retry."""
        extract_chunk = self._choose_facts if self.extraction == "extractive" else self._write_facts
        facts: list[str] = []
        seen: set[str] = set()
        for chunk in turn_chunks(text, self.config):
            for fact in extract_chunk(chunk, speaker, time, cancel):
                if fact_key(fact) not in seen:
                    seen.add(fact_key(fact))
                    facts.append(fact)
        return facts

    def _write_facts(self, chunk: str, speaker: str | None, time: str | None, cancel) -> list[str]:
        """Free extraction: the model writes the facts (method.md §1)."""
        messages = prompts.extraction_messages(chunk, speaker, time)
        facts = self._call_with_retry("fact extraction", messages, prompts.FACTS_SCHEMA,
                                      self.config.extract_params, prompts.parse_facts, cancel)
        # a small model sometimes copies the turn's first person ("I live in Lisbon."): the
        # memory is written about the speaker, as the prompt asks
        facts = [extractive.as_third_person(f, speaker)[:prompts.FACT_MAX_CHARS] for f in facts]
        return [f for f in facts if not extractive.is_tautology(f)]

    def _choose_facts(self, chunk: str, speaker: str | None, time: str | None, cancel) -> list[str]:
        """Extractive: the model picks among the chunk's own statements (numbers under a schema
        enum), code rewrites them; no call when the chunk has no candidate."""
        who = speaker or extractive.DEFAULT_SPEAKER

        def choose(cands: Sequence[str]) -> list[int]:
            n = len(cands)
            params = dataclasses.replace(self.config.extract_params, max_tokens=16 + 4 * n)
            return self._call_with_retry("fact choice", extractive.choice_messages(cands, who, time),
                                         extractive.choice_schema(n), params,
                                         lambda raw: extractive.parse_choice(raw, n), cancel)

        return [f[:prompts.FACT_MAX_CHARS] for f in extractive.extract_facts(chunk, who, time, choose)]

    # --- the grounding gate -------------------------------------------------------------
    @property
    def gate_embedder(self):
        """The bank's embedder when the gate's cosine is calibrated for it (all-MiniLM-L6-v2),
        else None (the gate is then lexical only)."""
        embedder = getattr(self.bank, "embedder", None)
        return embedder if getattr(embedder, "name", None) == DEFAULT_EMBEDDER_NAME else None

    def context_names(self, speaker: str | None) -> tuple[str, ...]:
        """Names a fact may carry without the turn saying them: the other speakers seen so far
        (and how the prompts call an unnamed speaker)."""
        names = sorted(n for n in self.known_names if n != speaker)
        return tuple(names) + (_UNNAMED if not speaker else ())

    def check(self, fact: str, text: str, *, speaker: str | None, time: str | None,
              memory: str | None = None) -> Verdict:
        """The gate's verdict on `fact` said in the turn `text` (`memory`: the text an UPDATE
        rewrites). Always ok with `ManagerConfig.gate` off."""
        if not self.config.gate:
            return Verdict(True, None, 1.0, checks_ok=True)
        source = Source(text, speaker, time, memory=memory, names=self.context_names(speaker))
        return check_fact(fact, source, embedder=self.gate_embedder, config=self.config.gate_config)

    def _gate_decided(self, decided: Sequence[MemoryOp], text: str, accepted: set[str], *,
                      speaker: str | None, time: str | None) -> list[MemoryOp]:
        """The decision call's ops with every ADD/UPDATE text the turn does not support
        (an UPDATE: with the memory it rewrites) turned into a REJECT op. `accepted`: fact
        keys that already passed (an ADD copying an extracted fact is not checked twice)."""
        out = []
        for op in decided:
            if op.event in ("ADD", "UPDATE") and op.speaker:
                op = dataclasses.replace(op, text=extractive.as_third_person(op.text, op.speaker))
            if op.event == "ADD" and fact_key(op.text) not in accepted:
                verdict = self.check(op.text, text, speaker=speaker, time=time)
            elif op.event == "UPDATE":
                verdict = self.check(op.text, text, speaker=speaker, time=time, memory=op.old_text)
            else:
                out.append(op)
                continue
            if verdict.ok:
                accepted.add(fact_key(op.text))
                out.append(op)
            else:
                log_text(f"{op.event} refused by the gate ({verdict.reason})", op.text)
                out.append(dataclasses.replace(op, event=REJECT, reason=verdict.reason))
        return out

    @property
    def related_min_score(self) -> float:
        if self.config.related_min_score is not None:
            return self.config.related_min_score
        return float(self.bank.embedder.related_score)

    def _related_hits(self, vec, *, speaker: str | None, exclude: AbstractSet[int]) -> list[tuple[float, Memory]]:
        """(score, memory) of the top `related_per_fact` related memories of one fact vector."""
        floor = self.related_min_score
        return [(h.score, h.memory)
                for h in self.bank.search_by_vector(vec, k=self.config.related_per_fact, speaker=speaker)
                if h.score >= floor and h.memory.status == "active" and h.memory.id not in exclude]

    def _merge(self, hit_lists) -> list[Memory]:
        """Per-fact hits merged, best score first, at most `max_shown` (the prompt must fit)."""
        best: dict[int, tuple[float, Memory]] = {}
        for hits in hit_lists:
            for score, mem in hits:
                if score > best.get(mem.id, (-2.0, None))[0]:
                    best[mem.id] = (score, mem)
        ranked = sorted(best.values(), key=lambda sm: -sm[0])
        return [m for _, m in ranked[: self.config.max_shown]]

    def related(self, vecs, *, speaker: str | None, exclude: AbstractSet[int] = frozenset()) -> list[Memory]:
        """Top `related_per_fact` memories per fact vector, merged (best score first, at most
        `max_shown` so the decision prompt fits the context)."""
        return self._merge(self._related_hits(v, speaker=speaker, exclude=exclude) for v in vecs)

    def decide(self, facts: Sequence[str], shown: Sequence[Memory], *, speaker: str | None = None,
               observed_at: str | None = None, source: str | None = None,
               cancel: CancelToken | None = None) -> list[MemoryOp]:
        """One constrained decision call over `facts` and the `shown` memories (aliases "0",
        "1", ... in order), parsed and validated. Raises ModelOutputError after one retry."""
        alias_map = {str(i): m for i, m in enumerate(shown)}
        messages = prompts.manager_messages(list(facts), [m.text for m in shown])
        schema = prompts.manager_schema(len(shown), len(facts))

        def parse(raw: str) -> list[MemoryOp]:
            return parse_manager_output(raw, alias_map, speaker=speaker, observed_at=observed_at, source=source)

        return self._call_with_retry("memory decision", messages, schema, self.config.decide_params, parse, cancel,
                                     self.decide_backend)

    def screen(self, text: str, *, speaker: str | None, time: str | None = None, source: str | None = None,
               cancel: CancelToken | None = None) -> Screened:
        """Everything of one turn before its first decision call: extract, gate, skip the
        duplicates (the state builder of training/data/manager.py calls this too)."""
        extra: _Provenance = {"speaker": speaker, "observed_at": time, "source": source}
        out = Screened()
        for fact in self.extract(text, speaker=speaker, time=time, cancel=cancel):
            verdict = self.check(fact, text, speaker=speaker, time=time)
            if verdict.ok:
                out.facts.append(fact)
            else:
                log_text(f"turn {source} fact refused by the gate ({verdict.reason})", fact)
                out.rejected.append(MemoryOp(REJECT, text=fact, reason=verdict.reason, **extra))
        if out.rejected:
            log.info("turn %s: %d facts refused by the grounding gate", source, len(out.rejected))
        if not out.facts:
            return out
        for fact, vec in zip(out.facts, self.bank.embed(out.facts)):
            dup = self.bank.find_duplicate(fact, speaker=speaker, threshold=self.config.duplicate_threshold, vec=vec)
            if dup is not None and self.config.updates and not updates.same_fact(fact, dup.text, 1.0):
                dup = None  # updates hook: a close cosine but another name, number or a negation
            if dup is not None:
                log_text(f"turn {source} fact skipped as duplicate of #{dup.id}", fact)
                out.duplicates.append(MemoryOp("NOOP", text=fact, memory_id=dup.id, **extra))
            else:
                out.fresh.append(fact)
                out.fresh_vecs.append(vec)
        if out.duplicates:
            log.info("turn %s: %d facts, %d skipped as duplicates of %s", source, len(out.facts),
                     len(out.duplicates), ", ".join(f"#{op.memory_id}" for op in out.duplicates))
        return out

    def plan_turn(self, text: str, *, speaker: str | None, time: str | None = None,
                  source: str | None = None, cancel: CancelToken | None = None) -> list[MemoryOp]:
        """All the ops of one turn, without writing anything (see the module docstring): the
        gate's REJECT ops first, then the duplicates' NOOPs, then the ADDs and the decisions."""
        extra: _Provenance = {"speaker": speaker, "observed_at": time, "source": source}
        screened = self.screen(text, speaker=speaker, time=time, source=source, cancel=cancel)
        ops: list[MemoryOp] = screened.rejected + screened.duplicates
        accepted = {fact_key(f) for f in screened.facts}
        size = self.config.facts_per_decision
        touched: set[int] = set()
        for i in range(0, len(screened.fresh), size):
            batch, batch_vecs = screened.fresh[i:i + size], screened.fresh_vecs[i:i + size]
            unrelated, to_decide, shown = self.split_batch(batch, batch_vecs, speaker=speaker, exclude=touched)
            adds = [MemoryOp("ADD", text=f, **extra) for f in unrelated]
            decided = self.decide(to_decide, shown, speaker=speaker, observed_at=time, source=source,
                                  cancel=cancel) if to_decide else []
            # the gate on the texts the model wrote, before the updates rules: a fact whose
            # rewrite was refused is then one the decision dropped, and is kept as said
            decided = self._gate_decided(decided, text, accepted, speaker=speaker, time=time)
            # --- updates hook (core.agents.updates): dropped facts kept, replaced memories superseded
            if self.config.updates:
                decided = self._reconcile(adds + decided, to_decide, shown, text=text, speaker=speaker,
                                          extra=extra, exclude=touched)
                adds = []
            touched |= {op.memory_id for op in decided if op.memory_id is not None}
            touched |= {op.supersedes for op in decided if op.supersedes is not None}
            # --- end updates hook
            ops += adds + decided
        return ops

    def _reconcile(self, ops: list[MemoryOp], facts: Sequence[str], shown: Sequence[Memory], *, text: str,
                   speaker: str | None, extra: _Provenance, exclude: AbstractSet[int]) -> list[MemoryOp]:
        """`core.agents.updates.reconcile` over one batch's ops (the ADDs made without a call
        and the decision's); a fact that could supersede by a slot or retraction also gets
        the speaker's nearest active memories as candidates, whatever their score."""
        wanting = [op.text for op in ops if op.event == "ADD" and updates.wants_candidates(op.text, speaker)]
        wanting += [f for f in facts if updates.wants_candidates(f, speaker)]
        if not facts and not shown and not wanting:
            return ops  # only ADDs of facts with no related memory and no slot: nothing to check
        candidates: list[Memory] = []
        if self.config.supersede and wanting:
            for vec in self.bank.embed(wanting):
                candidates += [h.memory for h in self.bank.search_by_vector(vec, k=self.config.related_per_fact,
                                                                          speaker=speaker)
                               if h.memory.status == "active" and h.memory.id not in exclude]
        provenance = {"speaker": extra["speaker"], "observed_at": extra["observed_at"], "source": extra["source"]}
        done = updates.reconcile(ops, facts, shown, embed=self.bank.embed, speaker=speaker, provenance=provenance,
                                 turn_text=text, candidates=candidates, ruled=self.config.supersede)
        for fact in done.kept:
            log_text("fact the decision dropped, kept", fact)
        for new, old_id, rule in done.superseded:
            log_text(f"supersedes #{old_id} ({rule})", new)
        if done.kept or done.superseded or done.repeats:
            log.info("updates: %d dropped facts kept, %d model ADDs were repeats, %d memories superseded (%s)",
                     len(done.kept), len(done.repeats), len(done.superseded),
                     ", ".join(f"#{o} by {r}" for _, o, r in done.superseded) or "none")
        return done.ops

    def split_batch(self, facts: Sequence[str], vecs, *, speaker: str | None,
                    exclude: AbstractSet[int] = frozenset()) -> tuple[list[str], list[str], list[Memory]]:
        """(unrelated facts: those with no related memory, ADDed without a model call; facts
        for the decision call; the memories shown to it) for one batch of fresh facts; see the
        module docstring."""
        if self.config.decide_when_empty:
            return [], list(facts), self.related(vecs, speaker=speaker, exclude=exclude)
        unrelated, rest, rest_hits = [], [], []
        for fact, vec in zip(facts, vecs):
            hits = self._related_hits(vec, speaker=speaker, exclude=exclude)  # one search per fact
            if hits:
                rest.append(fact)
                rest_hits.append(hits)
            else:
                unrelated.append(fact)
        return unrelated, rest, self._merge(rest_hits)

    def process_turn(self, text: str, *, speaker: str | None, time: str | None = None,
                     turn: str | None = None, source: str | None = None,
                     cancel: CancelToken | None = None, done_message_id: int | None = None,
                     actor: str = "manager", source_turn: SourceTurn | None = None) -> MemoryChanges:
        """Extract, decide and apply one turn in ONE transaction; returns what changed.
        `actor` is recorded in the event log ("tool" for the MCP/HTTP servers' remember).
        `done_message_id` is passed to `MemoryBank.apply` (the chat's pending mark is cleared
        with the ops; when nothing is applied the caller clears it). `source_turn`: the turn
        as the bank keeps it for provenance (default: this text, speaker and time, with
        `done_message_id` as its message and `turn` as its ref). The gate's refused facts are
        passed to the bank as REJECT ops and kept in `last_rejected`.

        If a shown memory vanished before the write (a user deleted it meanwhile), the ops on
        it are dropped (logged; an ADD that would supersede it is kept without the link) and
        the rest applied.
        """
        self.last_rejected = []
        if not text or not text.strip():
            return MemoryChanges()
        ops = self.plan_turn(text, speaker=speaker, time=time, source=source or turn, cancel=cancel)
        if speaker:
            self.known_names.add(speaker)
        self.last_rejected = [op for op in ops if op.event == REJECT]
        if not ops:
            return MemoryChanges()
        if cancel is not None and cancel.cancelled:
            raise Cancelled("manager cancelled before writing")
        src = source_turn or SourceTurn(text, speaker, time, message_id=done_message_id, ref=turn)
        try:
            return self._apply(ops, actor=actor, turn=turn, done_message_id=done_message_id, source=src)
        except NotFoundError as exc:
            kept = [op for op in ops if op.memory_id is None or self._active(op.memory_id)]
            kept = [dataclasses.replace(op, supersedes=None)  # updates: the fact stays, the link goes
                    if op.supersedes is not None and not self._active(op.supersedes) else op for op in kept]
            log.warning("turn %s: %s; applying the %d ops whose memories still exist", turn, exc, len(kept))
            return self._apply(kept, actor=actor, turn=turn, done_message_id=done_message_id, source=src)

    def _apply(self, ops: list[MemoryOp], *, actor: str, turn: str | None, done_message_id: int | None,
               source: SourceTurn) -> MemoryChanges:
        return self.bank.apply(ops, actor=actor, turn=turn, done_message_id=done_message_id,
                               source=source) if ops else MemoryChanges()

    def _active(self, memory_id: int) -> bool:
        try:
            return self.bank.get(memory_id).status == "active"
        except NotFoundError:
            return False

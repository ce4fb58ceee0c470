"""The LoCoMo evaluation runner (Memory-R1's protocol, method.md §3).

    run_locomo(EvalConfig(data="val.json", systems=("memory-r1",)))

For each conversation: build (or reuse from the cache) the bank, answer every question of
categories 1-4 (or those whose evidence lies in the first `max_sessions` sessions), score each
answer with `training.eval.metrics` (F1, BLEU-1, EM) and optionally a local judge model, and write
into the output folder: `predictions.jsonl` (one line per question, appended as it is answered:
an interrupted run resumes from it), `summary.json`, `report.md` and PNG plots. With several
systems each gets a sub-folder and the folder also gets `comparison.md` / `comparison.png`.

Models load lazily and once per role: a cached bank needs no manager model, `rag` needs none.
Each role gets its own backend (llama.cpp keeps the KV cache of the previous prompt's prefix;
the manager's and the answerer's prompts would evict each other).

Threads: runs on the caller's thread. Raises UserError subclasses for bad input (missing data
file, unknown system or sample, an output folder holding a run with other settings);
ModelLoadError when a model cannot load. A manager failure on one turn or an answer failure on
one question is counted in the report, never fatal.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Sequence

from core.agents import prompts
from core.fileio import append_jsonl, atomic_write_json, atomic_write_text, read_jsonl
from core.config import ModelSpec
from core.errors import InvalidInputError, ModelOutputError
from core.llm.modelset import ModelSet
from core.locomo import CATEGORY_NAMES, PAPER_CATEGORY_NAMES, Sample, load_locomo
from core.types import ChatBackend, Embedder

from training.data.gold_facts import load_gold
from training.eval import extraction
from training.eval import report as eval_report
from training.eval.systems import (ALL_SYSTEMS, Answered, BankHandle, System, bank_key, build_turn_bank,
                                   ingest_memory_bank, judge_answer, selected_questions, system_named)
from training.eval.metrics import score_answer

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
PREDICTIONS = "predictions.jsonl"


@dataclass
class EvalConfig:
    """What to evaluate. Paths are strings; None models mean the embedded SmolLM2-135M.
    `systems` may be given by name; they are looked up once, here (InvalidInputError if unknown)."""

    data: str
    systems: tuple[System, ...] = ("memory-r1",)
    samples: tuple[str, ...] | None = None
    max_questions: int | None = None
    max_sessions: int | None = None
    out: str | None = None
    cache_dir: str | None = None
    answer_model: ModelSpec = field(default_factory=ModelSpec)
    manager_model: ModelSpec = field(default_factory=ModelSpec)
    judge_model: str | None = None
    manager_extraction: str = "auto"  # core.agents.manager.ManagerConfig.extraction
    gate: bool = True  # the grounding gate (False: the paper's path)
    sources: bool = True  # source-turn quotes in the answer prompt (False: the paper's prompt)
    k: int = 60
    fresh: bool = False
    progress: bool = True

    def __post_init__(self) -> None:
        self.systems = tuple(system_named(s) for s in self.systems)

    def validate(self) -> None:
        if not self.systems:
            raise InvalidInputError("Choose at least one system.")
        if self.max_questions is not None and self.max_questions < 1:
            raise InvalidInputError("--max-questions must be at least 1.")
        if self.max_sessions is not None and self.max_sessions < 1:
            raise InvalidInputError("--max-sessions must be at least 1.")
        if self.k < 2:
            raise InvalidInputError("k must be at least 2 (half per speaker).")
        self.answer_model.validate()
        self.manager_model.validate()
        self.manager_config()  # InvalidInputError for an unknown extraction mode

    def manager_config(self):
        """The Memory Manager's `ManagerConfig` for this run."""
        from core.agents.manager import ManagerConfig

        return ManagerConfig(extraction=self.manager_extraction, gate=self.gate)


class Components:
    """The models (a `core.llm.modelset.ModelSet`, each role loaded on first use and closed
    by `close()`) and the embedder; tests pass fakes in.

    Either `models` or the zero-argument factories `answer`, `manager`, `judge` and
    `manager_decide` (a second manager instance for the decision step; optional), each called
    at most once until `close()`. `ids`: the fingerprints that key the caches and guard
    resumption (`manager`, `answer`, `judge`, `embedder`).
    """

    def __init__(self, embedder: Embedder, *, answer: Callable[[], ChatBackend] | None = None,
                 manager: Callable[[], ChatBackend] | None = None, judge: Callable[[], ChatBackend] | None = None,
                 ids: dict | None = None, manager_decide: Callable[[], ChatBackend] | None = None,
                 models: ModelSet | None = None) -> None:
        self.embedder = embedder
        self.models = models or ModelSet.lazy(answer=answer, manager=manager, judge=judge, decide=manager_decide)
        self.ids = {"embedder": embedder.name, **(ids or {})}

    def backend(self, role: str) -> ChatBackend:
        """The role's backend ("answer", "manager", "decide", "judge"), loaded on first use.
        Raises InvalidInputError for a role with no model."""
        return self.models.get(role)

    def has(self, role: str) -> bool:
        return self.models.has(role)

    def memory_bank(self, sample: Sample, folder: Path, *, max_sessions: int | None,
                    progress: bool, manager_config=None) -> BankHandle:
        """The sample's Memory-Manager bank in `folder` (cached; built with the manager, and
        the second manager instance for decisions when there is one)."""
        decide = (lambda: self.models.get("decide")) if self.models.has("decide") else None
        return ingest_memory_bank(sample, folder, self.embedder, lambda: self.models.get("manager"),
                                  max_sessions=max_sessions, progress=progress, decide_backend=decide,
                                  manager_config=manager_config)

    def close(self) -> None:
        """Close every loaded backend (best effort); a later use loads it again."""
        self.models.close()

    @classmethod
    def load(cls, config: EvalConfig) -> "Components":
        """Real components: llama.cpp backends (lazy) and the embedded MiniLM embedder."""
        from core.embeddings import default_embedder

        from training.models import model_id

        ids = {"manager": model_id(config.manager_model), "answer": model_id(config.answer_model)}
        judge_spec = None
        if config.judge_model:
            judge_spec = ModelSpec(path=config.judge_model, n_ctx=config.answer_model.n_ctx)
            ids["judge"] = model_id(judge_spec)
        models = ModelSet.from_specs({"answer": config.answer_model, "manager": config.manager_model,
                                      "decide": config.manager_model, "judge": judge_spec})
        return cls(default_embedder(), models=models, ids=ids)


# --- output folders and resumption ------------------------------------------------------------

def default_out(config: EvalConfig) -> Path:
    from core.paths import data_dir

    tag = Path(config.data).stem
    if config.samples:
        tag += "-" + "+".join(config.samples)
    if config.max_sessions:
        tag += f"-s{config.max_sessions}"
    if config.max_questions:
        tag += f"-q{config.max_questions}"
    tag += option_tag(config)
    base = data_dir() / "eval" / tag
    return base / config.systems[0].name if len(config.systems) == 1 else base


def option_tag(config: EvalConfig) -> str:
    """The part of the default output folder's name that names the switched-off parts and a
    chosen extraction mode ('' for the defaults), so runs with other options never share it.

    >>> option_tag(EvalConfig(data="val.json")), option_tag(EvalConfig(data="val.json", gate=False, sources=False,
    ...                                                                  manager_extraction="free"))
    ('', '-nogate-free-nosources')
    """
    tag = "" if config.gate else "-nogate"
    if config.manager_extraction != "auto":
        tag += f"-{config.manager_extraction}"
    return tag + ("" if config.sources else "-nosources")


def system_out(config: EvalConfig, system: "System | str") -> Path:
    """Where one system's outputs go: --out itself for one system, --out/<system> for several."""
    base = Path(config.out) if config.out else default_out(config)
    return base if len(config.systems) == 1 else base / system_named(system).name


def _data_digest(path: str) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def run_identity(config: EvalConfig, system: System, comps: Components, data_digest: str) -> dict:
    """What a resumed run must share with the one that wrote the folder."""
    ident = {"system": system.name, "data_sha256": data_digest, "samples": list(config.samples or []),
             "max_sessions": config.max_sessions, "answer": comps.ids.get("answer"),
             "embedder": comps.ids.get("embedder"), "prompt_version": prompts.PROMPT_VERSION,
             "k": config.k, "n_ctx": config.answer_model.n_ctx}
    if system.uses_manager:  # a bank of raw turns has no links: its prompt is the same either way
        ident["answer_sources"] = prompts.ANSWER_SOURCES_VERSION if config.sources else False
    if system.uses_manager:
        ident["manager"] = comps.ids.get("manager")
        ident["manager_variant"] = config.manager_config().variant()
    return ident


def prepare_out(out: Path, identity: dict, *, fresh: bool) -> list[dict]:
    """Create `out`, check it holds no run with other settings, return the done records."""
    out.mkdir(parents=True, exist_ok=True)
    run_file, preds = out / RUN_FILE, out / PREDICTIONS
    if fresh:
        for name in (PREDICTIONS, RUN_FILE, "summary.json", "report.md"):
            (out / name).unlink(missing_ok=True)
    if run_file.exists():
        try:
            old = json.loads(run_file.read_text(encoding="utf-8"))
        except ValueError:
            old = {}
        diff = sorted(k for k in set(old) | set(identity) if old.get(k) != identity.get(k))
        if diff and preds.exists():
            raise InvalidInputError(
                f"{out} holds a run with other settings ({', '.join(diff)} differ); "
                "pass --fresh to start over or choose another --out.")
    atomic_write_json(run_file, identity)
    return read_jsonl(preds)


# --- one system ----------------------------------------------------------------------------------

def covers(refs, evidence) -> bool:
    """Whether a turn ref ("locomo:conv-30/D1:3") of `refs` names one of the `evidence` dia_ids.

    >>> covers(["locomo:conv-30/D1:3", "chat:1/2"], ["D1:3"]), covers(["locomo:conv-30/D1:30"], ["D1:3"])
    (True, False)
    """
    wanted = set(evidence)
    return any(str(r).rsplit("/", 1)[-1] in wanted for r in refs if r)


def _record(sample: Sample, qa, system: System, ans: Answered) -> dict:
    refs = ans.evidence_refs()
    hit = covers(refs, qa.evidence) if ans.retrieved else None
    # the earlier measure, kept comparable: any retrieved memory's own `source` string
    plain = covers((m.source for m in ans.retrieved), qa.evidence) if ans.retrieved else None
    shown = ans.retrieved if ans.shown is None else ans.shown
    return {
        "sample_id": sample.sample_id, "qa_index": qa.index, "system": system.name,
        "question": qa.question, "gold": qa.answer, "prediction": ans.prediction,
        "category": qa.category, "category_name": CATEGORY_NAMES.get(qa.category),
        "paper_category": PAPER_CATEGORY_NAMES.get(qa.category), "evidence": list(qa.evidence),
        **score_answer(ans.prediction, qa.answer), "judge": None,
        "selected_ids": [m.id for m in ans.selected], "retrieved_ids": [m.id for m in ans.retrieved],
        "selected_sources": [m.source for m in ans.selected], "evidence_retrieved": hit,
        "evidence_retrieved_plain": plain, "shown_ids": [m.id for m in shown],
        "shown_source_refs": list(ans.source_refs), "evidence_refs": refs,
        "context_turns": ans.context_turns,
        "retrieval_s": round(ans.retrieval_s, 5), "answer_s": round(ans.answer_s, 5),
        "latency_s": round(ans.retrieval_s + ans.answer_s, 5),
        "prompt_tokens": ans.prompt_tokens, "completion_tokens": ans.completion_tokens,
        "raw": ans.raw, "error": ans.error,
    }


def _answer_one(system: System, sample: Sample, qa, handle: BankHandle | None, comps: Components,
                config: EvalConfig) -> Answered:
    backend = comps.backend("answer")
    try:
        return system.answer(sample, qa, handle.bank if handle is not None else None, backend, k=config.k,
                             n_ctx=config.answer_model.n_ctx, max_sessions=config.max_sessions,
                             sources=config.sources)
    except (ModelOutputError, InvalidInputError) as exc:
        log.error("%s: question %s/%d failed: %s", system.name, sample.sample_id, qa.index, exc)
        return Answered("", getattr(exc, "raw", ""), error=str(exc)[:500])


def _bank_for(system: System, sample: Sample, comps: Components, config: EvalConfig,
              cache: Path) -> BankHandle | None:
    emb = comps.ids["embedder"]
    if system.bank == "memory":
        manager = config.manager_config()
        folder = cache / bank_key("memory", sample, config.max_sessions, emb,
                                  f"{comps.ids.get('manager') or ''}/{manager.variant()}")
        return comps.memory_bank(sample, folder, max_sessions=config.max_sessions, progress=config.progress,
                                 manager_config=manager)
    if system.bank == "turns":
        folder = cache / bank_key("turns", sample, config.max_sessions, emb)
        return build_turn_bank(sample, folder, comps.embedder, max_sessions=config.max_sessions)
    return None


def run_system(system: System, samples: Sequence[Sample], comps: Components, config: EvalConfig,
               out: Path, cache: Path, data_digest: str) -> dict:
    """Evaluate one system into `out`; returns its summary."""
    done = prepare_out(out, run_identity(config, system, comps, data_digest), fresh=config.fresh)
    have = {(r["sample_id"], r["qa_index"]) for r in done}
    plan = [(s, q) for s in samples for q in selected_questions(s, config.max_sessions)]
    if config.max_questions:
        plan = plan[:config.max_questions]
    if not plan:
        raise InvalidInputError("No question to evaluate (check --samples and --max-sessions).")
    wanted = {(s.sample_id, q.index) for s, q in plan}
    ingestion: list[dict] = []
    gold: dict[str, dict[str, list[str]]] | None = None
    bar = _question_bar(len(plan), len(have & wanted), system.name, config.progress)
    for sample in dict.fromkeys(s for s, _ in plan):
        todo = [q for s, q in plan if s is sample and (s.sample_id, q.index) not in have]
        handle = _bank_for(system, sample, comps, config, cache)
        try:
            if handle is not None:
                if handle.stats.get("kind") == "memory":
                    gold = _gold(config, gold)
                    if gold.get(sample.sample_id):  # a file without `observation` has nothing to score
                        handle.stats = {**handle.stats, "extraction": extraction.written_score(
                            handle.bank, sample, gold[sample.sample_id], max_sessions=config.max_sessions)}
                ingestion.append(handle.stats)
            for qa in todo:
                record = _record(sample, qa, system, _answer_one(system, sample, qa, handle, comps, config))
                if comps.has("judge"):
                    record["judge"] = judge_answer(comps.backend("judge"), qa.question, qa.answer,
                                                   record["prediction"])
                append_jsonl(out / PREDICTIONS, record)
                if bar is not None:
                    bar.update(1)
        finally:
            if handle is not None:
                handle.close()
    if bar is not None:
        bar.close()
    records = [r for r in read_jsonl(out / PREDICTIONS) if (r["sample_id"], r["qa_index"]) in wanted]
    records = _judge_missing(records, comps, out)
    summary = eval_report.summarise(records, system=system.name, config=_config_dict(config, system, comps),
                                    ingestion=ingestion)
    summary["evidence_recall"] = _evidence_recall(records)
    summary["evidence_recall_plain"] = _evidence_recall(records, "evidence_retrieved_plain")
    turn_seconds = [t for st in ingestion if st.get("kind") == "memory" for t in st.get("turn_seconds", [])]
    eval_report.write_outputs(out, summary, records, turn_seconds)
    return summary


def _gold(config: EvalConfig, loaded: dict | None) -> dict[str, dict[str, list[str]]]:
    """sample id -> dia_id -> gold facts of the data file (read once per system)."""
    if loaded is not None:
        return loaded
    return {s.sample_id: g for s, g in load_gold(config.data)}


def _question_bar(total: int, initial: int, system: str, enabled: bool):
    if not enabled:
        return None
    from tqdm import tqdm

    return tqdm(total=total, initial=initial, desc=f"answer {system}", unit="q", dynamic_ncols=True)


def _judge_missing(records: list[dict], comps: Components, out: Path) -> list[dict]:
    """Label the records an earlier run left without a judge label (then rewrite the file)."""
    if not comps.has("judge") or all(r.get("judge") for r in records):
        return records
    for r in records:
        if not r.get("judge"):
            r["judge"] = judge_answer(comps.backend("judge"), r["question"], r["gold"], r["prediction"])
    everything = {(r["sample_id"], r["qa_index"]): r for r in read_jsonl(out / PREDICTIONS)}
    everything.update({(r["sample_id"], r["qa_index"]): r for r in records})
    atomic_write_text(out / PREDICTIONS, "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in everything.values()))
    return records


def _evidence_recall(records: Sequence[dict], key: str = "evidence_retrieved") -> float | None:
    """Share of questions whose memories/turns in the prompt came from an evidence turn (their
    `source` or a provenance link); `key="evidence_retrieved_plain"`: any retrieved memory's
    `source` string, the measure of earlier runs."""
    vals = [r[key] for r in records if r.get(key) is not None]
    return round(sum(vals) / len(vals), 4) if vals else None


def _config_dict(config: EvalConfig, system: System, comps: Components) -> dict:
    d = asdict(config)
    return {
        "system": system.name, "data": config.data, "samples": list(config.samples or []) or None,
        "max_sessions": config.max_sessions, "max_questions": config.max_questions, "k": config.k,
        "answer_model": comps.ids.get("answer"), "answer_adapter": d["answer_model"]["adapter"],
        "manager_model": comps.ids.get("manager") if system.uses_manager else None,
        "manager_adapter": d["manager_model"]["adapter"] if system.uses_manager else None,
        "manager_extraction": config.manager_extraction if system.uses_manager else None,
        "gate": config.gate if system.uses_manager else None,
        "sources": config.sources if system.uses_manager else None,
        "judge_model": comps.ids.get("judge"), "n_ctx": config.answer_model.n_ctx,
        "prompt_version": prompts.PROMPT_VERSION, "embedder": comps.ids.get("embedder"),
        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
    }


# --- entry point ---------------------------------------------------------------------------------

def run_locomo(config: EvalConfig, components: Components | None = None) -> dict[str, dict]:
    """Evaluate every system of `config`; returns {system: summary}. See the module docstring."""
    config.validate()
    data = Path(config.data)
    if not data.is_file():
        raise InvalidInputError(f"LoCoMo data file not found: {data}")
    samples = load_locomo(data, list(config.samples) if config.samples else None)
    comps = components or Components.load(config)
    from core.paths import data_dir

    cache = Path(config.cache_dir) if config.cache_dir else data_dir() / "eval-cache"
    digest = _data_digest(config.data)
    results: dict[str, dict] = {}
    try:
        for system in config.systems:
            out = system_out(config, system)
            summary = results[system.name] = run_system(system, samples, comps, config, out, cache, digest)
            log.info("%s: F1 %.4f BLEU-1 %.4f -> %s", system.name, summary["overall"]["f1"],
                     summary["overall"]["bleu1"], out)
    finally:
        comps.close()
    if len(config.systems) > 1:
        base = Path(config.out) if config.out else default_out(config)
        eval_report.compare_runs([system_out(config, s) for s in config.systems], base)
    return results


def parse_systems(value: str) -> tuple[System, ...]:
    """The systems of `--system`: `memory-r1`, `rag,full-context` or `all` (InvalidInputError
    for an unknown name).

    >>> [s.name for s in parse_systems("all")]
    ['memory-r1', 'no-distill', 'rag', 'full-context']
    >>> [s.name for s in parse_systems("rag, memory-r1")]
    ['rag', 'memory-r1']
    """
    if value.strip() == "all":
        return ALL_SYSTEMS
    names = dict.fromkeys(v.strip() for v in value.split(",") if v.strip())
    return tuple(system_named(n) for n in names)

"""Agent benchmarks: answer-path overhead and Memory Manager seconds per turn.

    .venv/bin/python benchmarks/agents.py                 # both, printed
    .venv/bin/python benchmarks/agents.py --json          # last line: one JSON object
    .venv/bin/python benchmarks/agents.py --skip-manager  # overhead only (no LLM)

1. Answer-path overhead: query embedding (real all-MiniLM-L6-v2) + retrieval (60 = 30 per
   speaker) + prompt assembly, no generation, over a bank of `--memories` memories (default
   10,000; stored with random unit vectors so building the bank takes seconds; the query
   side is real). Target: p50 <= 30 ms.
   Wall time and the process's CPU time are both printed: on a shared, overloaded machine
   the wall time mostly measures waiting for a core; the CPU time is what an idle machine
   would see (the path is single-threaded for a one-sentence query).
2. Manager seconds per turn: `MemoryManager.process_turn` (extraction + decision) with the
   embedded SmolLM2-135M over `--turns` turns of LoCoMo's training conversation (read from
   ../shared/data/locomo, never copied; a built-in synthetic conversation when absent), into
   a fresh bank with the real embedder. p50/p95 of the turn, and of the model calls per kind.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from benchmarks.common import finish, percentile as pct  # noqa: E402

LOCOMO = ROOT.parent / "shared" / "data" / "locomo" / "train.json"
SYNTHETIC = [
    ("Ann", "I just adopted a puppy named Biscuit, a golden retriever!"),
    ("Bob", "Congrats! I moved to Lisbon last month for a new job at a bank."),
    ("Ann", "Biscuit loves playing fetch in the park every morning."),
    ("Bob", "Lisbon is sunny, and I have started taking surfing lessons."),
    ("Ann", "My sister Clara is visiting next week; she is a nurse in Porto."),
    ("Bob", "Nice. My brother also works in healthcare, as a dentist."),
    ("Ann", "Yesterday Biscuit chewed my favourite running shoes."),
    ("Bob", "Ha! I ran my first half marathon two weeks ago."),
    ("Ann", "I am training for a 10k in October."),
    ("Bob", "I still miss my old cat Luna, she lived with my parents."),
]


# --------------------------------------------------------------------------- 1. overhead

def build_bank(path: Path, n: int, embedder):
    from core.memory import MemoryBank
    from core.types import MemoryOp

    bank = MemoryBank(path, embedder)
    rng = np.random.default_rng(0)
    words = ("garden", "dog", "Lisbon", "concert", "painting", "school", "bakery", "hiking", "piano",
             "birthday", "trip", "camera", "sister", "job", "marathon", "book", "festival", "beach")
    batch = 1000
    for start in range(0, n, batch):
        ops, size = [], min(batch, n - start)
        for i in range(start, start + size):
            speaker = "Ann" if i % 2 else "Bob"
            w = rng.choice(words, 3, replace=False)
            ops.append(MemoryOp("ADD", text=f"{speaker} talked about the {w[0]}, the {w[1]} and the {w[2]} (#{i})",
                                speaker=speaker, observed_at=f"{1 + i % 12}:00 pm on {1 + i % 28} May, 2023"))
        vecs = rng.standard_normal((size, embedder.dim)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        bank.apply(ops, actor="import", vectors=vecs)
    return bank


def bench_overhead(n_memories: int, n_queries: int) -> dict:
    from core.agents.answer import AnswerAgent
    from core.embeddings import default_embedder
    from core.fakes import FakeBackend

    embedder = default_embedder()
    embedder.embed(["warm up"])
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        bank = build_bank(Path(tmp) / "bench.sqlite3", n_memories, embedder)
        build_s = time.perf_counter() - t0
        agent = AnswerAgent(bank, FakeBackend())  # no generation: the fake is never called
        questions = [f"What did {s} say about the {w} in May?" for s in ("Ann", "Bob")
                     for w in ("garden", "dog", "Lisbon", "piano", "beach", "festival", "camera", "job",
                               "trip", "book", "hiking", "school", "concert", "bakery", "sister")]
        agent.build_prompt(questions[0], agent.retrieve(questions[0]))  # warm caches
        total, cpu, emb, ret, asm, n_used = [], [], [], [], [], []
        for i in range(n_queries):
            q = questions[i % len(questions)] + f" ({i})"
            a = time.perf_counter()
            vec = bank.embed([q])[0]
            b = time.perf_counter()
            mems = [h.memory for s in ("Ann", "Bob") for h in bank.search_by_vector(vec, k=30, speaker=s)]
            c = time.perf_counter()
            prompt = agent.build_prompt(q, mems)
            d = time.perf_counter()
            emb.append((b - a) * 1e3)
            ret.append((c - b) * 1e3)
            asm.append((d - c) * 1e3)
            n_used.append(len(prompt.used))
            # the agent's own path, end to end (embed + retrieve + assemble), timed separately
            e, f = time.perf_counter(), time.process_time()
            agent.build_prompt(q, agent.retrieve(q))
            total.append((time.perf_counter() - e) * 1e3)
            cpu.append((time.process_time() - f) * 1e3)
        bank.close()
    return {"memories": n_memories, "queries": n_queries, "build_s": round(build_s, 2),
            "p50_ms": round(pct(total, 50), 2), "p95_ms": round(pct(total, 95), 2),
            "cpu_p50_ms": round(pct(cpu, 50), 2), "cpu_p95_ms": round(pct(cpu, 95), 2),
            "embed_p50_ms": round(pct(emb, 50), 2), "retrieve_p50_ms": round(pct(ret, 50), 2),
            "assemble_p50_ms": round(pct(asm, 50), 2), "memories_in_prompt": int(statistics.median(n_used))}


# --------------------------------------------------------------------------- 2. manager

class TimedBackend:
    """Wraps a ChatBackend and records (kind, seconds, characters out) per call."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name = inner.name
        self.n_ctx = getattr(inner, "n_ctx", None)
        self.records: list[tuple[str, float, int]] = []

    def complete(self, messages, *, params=None, schema=None, cancel=None):
        kind = "extract" if schema and "facts" in schema.get("properties", {}) else "decide" if schema else "chat"
        start = time.perf_counter()
        out = []
        kwargs = {"schema": schema, "cancel": cancel}
        if params is not None:
            kwargs["params"] = params
        stream = self.inner.complete(messages, **kwargs)
        try:
            for piece in stream:
                out.append(piece)
                yield piece
        finally:  # also when the caller stops early (the manager's repetition guard)
            stream.close()
            self.records.append((kind, time.perf_counter() - start, len("".join(out))))

    def count_tokens(self, text: str) -> int:
        return self.inner.count_tokens(text)

    def close(self) -> None:
        self.inner.close()


def load_turns(n: int) -> tuple[str, list[tuple[str, str, str]]]:
    if LOCOMO.exists():
        from core.locomo import load_locomo

        sample = load_locomo(LOCOMO)[0]
        return f"LoCoMo {sample.sample_id}", [(t.speaker, t.full_text, t.time) for t in sample.turns[:n]]
    return "synthetic", [(s, t, "10:00 am on 5 June, 2023") for s, t in SYNTHETIC[:n]]


def bench_manager(n_turns: int, n_threads: int | None, two_instances: bool = False) -> dict:
    from core.config import ModelSpec
    from core.embeddings import default_embedder
    from core.agents.manager import MemoryManager
    from core.memory import MemoryBank
    from core.llm.runtime import load_backend

    source, turns = load_turns(n_turns)
    backend = TimedBackend(load_backend(ModelSpec(n_threads=n_threads)))
    decide = TimedBackend(load_backend(ModelSpec(n_threads=n_threads))) if two_instances else None
    per_turn, cpu_turn, failures = [], [], 0
    changes_total = {"added": 0, "updated": 0, "deleted": 0, "noops": 0}
    with tempfile.TemporaryDirectory() as tmp:
        bank = MemoryBank(Path(tmp) / "bench.sqlite3", default_embedder())
        bank.embed(["warm up"])
        manager = MemoryManager(bank, backend, decide_backend=decide)
        for i, (speaker, text, when) in enumerate(turns):
            start, cpu = time.perf_counter(), time.process_time()
            try:
                ch = manager.process_turn(text, speaker=speaker, time=when, turn=f"bench:{i}")
                for key in ("added", "updated", "deleted"):
                    changes_total[key] += len(getattr(ch, key))
                changes_total["noops"] += ch.noops
            except Exception as exc:  # a failed turn still costs its time; report it
                failures += 1
                print(f"  turn {i}: {type(exc).__name__}: {exc}", file=sys.stderr)
            per_turn.append(time.perf_counter() - start)
            cpu_turn.append(time.process_time() - cpu)
            print(f"  turn {i + 1}/{len(turns)}: {per_turn[-1]:.2f} s wall, {cpu_turn[-1]:.2f} s CPU",
                  file=sys.stderr)
        memories = len(bank.list())
        bank.close()
    backend.close()
    records = backend.records + (decide.records if decide is not None else [])
    if decide is not None:
        decide.close()
    by_kind = {}
    for kind in ("extract", "decide"):
        secs = [s for k, s, _ in records if k == kind]
        chars = [c for k, _, c in records if k == kind]
        by_kind[kind] = {"calls": len(secs), "p50_s": round(pct(secs, 50), 2), "p95_s": round(pct(secs, 95), 2),
                         "median_chars_out": int(statistics.median(chars)) if chars else 0}
    return {"source": source, "turns": len(turns), "p50_s": round(pct(per_turn, 50), 2),
            "p95_s": round(pct(per_turn, 95), 2), "mean_s": round(statistics.fmean(per_turn), 2),
            "cpu_p50_s": round(pct(cpu_turn, 50), 2), "cpu_p95_s": round(pct(cpu_turn, 95), 2),
            "failed_turns": failures, "memories": memories, "changes": changes_total, "calls": by_kind,
            "threads": n_threads or os.cpu_count(), "instances": 2 if two_instances else 1}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--memories", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=60)
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--threads", type=int, default=None, help="llama.cpp threads (default: physical cores)")
    parser.add_argument("--two-instances", action="store_true",
                        help="manager: a second model instance for decisions (keeps both prefixes cached)")
    parser.add_argument("--skip-manager", action="store_true")
    parser.add_argument("--skip-overhead", action="store_true")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    result: dict = {"cpus": os.cpu_count(), "loadavg_start": [round(x, 2) for x in os.getloadavg()]}
    print(f"{os.cpu_count()} CPUs, load average at start {result['loadavg_start']} "
          "(figures from a shared machine are only as good as its idle share)")
    if not args.skip_overhead:
        r = bench_overhead(args.memories, args.queries)
        result["answer_path_overhead"] = r
        print(f"answer-path overhead at {r['memories']} memories (embed + 30+30 retrieval + prompt, no generation): "
              f"p50 {r['p50_ms']} ms, p95 {r['p95_ms']} ms wall; CPU time p50 {r['cpu_p50_ms']} ms, "
              f"p95 {r['cpu_p95_ms']} ms  [target p50 <= 30 ms]  "
              f"(embed {r['embed_p50_ms']} ms, retrieve {r['retrieve_p50_ms']} ms, "
              f"assemble {r['assemble_p50_ms']} ms; {r['memories_in_prompt']} memories in the prompt; "
              f"bank built in {r['build_s']} s)")
    if not args.skip_manager:
        r = bench_manager(args.turns, args.threads, args.two_instances)
        result["manager_seconds_per_turn"] = r
        print(f"manager seconds per turn ({r['source']}, {r['turns']} turns, embedded SmolLM2-135M, "
              f"{r['threads']} threads, {r['instances']} instance(s)): "
              f"p50 {r['p50_s']} s, p95 {r['p95_s']} s, mean {r['mean_s']} s wall; "
              f"CPU time p50 {r['cpu_p50_s']} s, p95 {r['cpu_p95_s']} s (all threads); "
              f"extract p50 {r['calls']['extract']['p50_s']} s x{r['calls']['extract']['calls']}, "
              f"decide p50 {r['calls']['decide']['p50_s']} s x{r['calls']['decide']['calls']}; "
              f"{r['memories']} memories, {r['failed_turns']} failed turns")
    result["loadavg_end"] = [round(x, 2) for x in os.getloadavg()]
    print(f"load average at end {result['loadavg_end']}")
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

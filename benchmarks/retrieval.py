"""Top-60 retrieval and insert throughput of the memory bank (prints figures; not a test).

For 1k, 10k and 100k random unit vectors (384-d) it builds a real bank (SQLite + sqlite-vec
in a temp dir), then times `MemoryBank.search_by_vector(q, k=60)` (the NumPy mirror plus
fetching the 60 rows) against a plain NumPy brute-force top-60 over the same matrix in the
same run, and sqlite-vec's own vec0 KNN for reference. Insert throughput: batched `apply()`
and one-transaction-each `add()` with precomputed vectors (no embedding), and the same with
the real all-MiniLM-L6-v2 embedder.

    python benchmarks/retrieval.py [--sizes 1000,10000,100000] [--queries 200] [--json]

With `--json` the last line is one JSON object keyed by size:
`{"100000": {"p50_ms": .., "p95_ms": .., "numpy_p50_ms": .., ...}, ..., "insert": {...}}`.
Target: at 100k, p50 within 1.5x of NumPy's.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import finish, percentile  # noqa: E402
from core.memory import MemoryBank  # noqa: E402
from core.types import MemoryOp  # noqa: E402

DIM = 384
K = 60
BATCH = 5000


class QueueEmbedder:
    """Hands out precomputed vectors in order (so add() measures storage, not embedding)."""

    name = "bench-random"
    dim = DIM

    def __init__(self) -> None:
        self.pending: list[np.ndarray] = []

    def embed(self, texts):
        out = np.stack([self.pending.pop() for _ in texts]) if texts else np.zeros((0, DIM), np.float32)
        return out.astype(np.float32)


def unit_rows(rng: np.random.Generator, n: int) -> np.ndarray:
    m = rng.standard_normal((n, DIM), dtype=np.float32)
    m /= np.linalg.norm(m, axis=1, keepdims=True)
    return np.ascontiguousarray(m)


def pct(samples: list[float], q: float) -> float:
    """Percentile in milliseconds of timings in seconds."""
    return percentile(samples, q, scale=1000.0)


def numpy_top(mat: np.ndarray, q: np.ndarray, k: int = K) -> np.ndarray:
    scores = mat @ q
    idx = np.argpartition(-scores, k - 1)[:k]
    return idx[np.argsort(-scores[idx])]


def timed(fn, queries) -> tuple[list[float], list]:
    times, results = [], []
    for q in queries:
        t0 = time.perf_counter()
        results.append(fn(q))
        times.append(time.perf_counter() - t0)
    return times, results


def interleaved(fa, fb, queries) -> tuple[list[float], list, list[float], list]:
    """Time fa and fb on each query in turn, so load from other processes hits both alike."""
    ta, ra, tb, rb = [], [], [], []
    for i, q in enumerate(queries):
        order = ((fa, ta, ra), (fb, tb, rb)) if i % 2 == 0 else ((fb, tb, rb), (fa, ta, ra))
        for fn, times, results in order:
            t0 = time.perf_counter()
            results.append(fn(q))
            times.append(time.perf_counter() - t0)
    return ta, ra, tb, rb


def bench_size(n: int, n_queries: int, rng: np.random.Generator, tmp: Path) -> dict:
    mat = unit_rows(rng, n)
    path = tmp / f"bench-{n}.sqlite3"
    bank = MemoryBank(path, QueueEmbedder())
    t0 = time.perf_counter()
    for start in range(0, n, BATCH):
        chunk = mat[start:start + BATCH]
        ops = [MemoryOp("ADD", text=f"memory {start + i} about topic {(start + i) % 97}")
               for i in range(len(chunk))]
        bank.apply(ops, vectors=chunk)
    insert_s = time.perf_counter() - t0
    bank.close()

    t0 = time.perf_counter()
    bank = MemoryBank(path, QueueEmbedder())
    bank.search_by_vector(mat[0], k=K)  # loads the mirror
    open_s = time.perf_counter() - t0

    queries = unit_rows(rng, n_queries)
    for q in queries[:10]:  # warm-up
        bank.search_by_vector(q, k=K)
        numpy_top(mat, q)
    np_times, np_res, bank_times, bank_res = interleaved(
        lambda q: numpy_top(mat, q), lambda q: bank.search_by_vector(q, k=K), queries)
    agree = np.mean([[h.memory.id - 1 for h in hits] == list(ref) for hits, ref in zip(bank_res, np_res)])
    vec_times, _ = timed(lambda q: bank.vec0_search(q, k=K), queries[: max(5, n_queries // 10)])

    extra = unit_rows(rng, 300)
    bank.embedder.pending = list(extra)
    t0 = time.perf_counter()
    for i in range(len(extra)):
        bank.add(f"single add {i}", actor="user")
    add_s = time.perf_counter() - t0
    bank.close()
    row = {
        "p50_ms": round(pct(bank_times, 50), 3), "p95_ms": round(pct(bank_times, 95), 3),
        "numpy_p50_ms": round(pct(np_times, 50), 3), "numpy_p95_ms": round(pct(np_times, 95), 3),
        "vec0_p50_ms": round(pct(vec_times, 50), 3),
        "ratio_p50": round(pct(bank_times, 50) / pct(np_times, 50), 3),
        "same_top60": float(agree),
        "open_ms": round(open_s * 1000, 1),
        "batch_insert_per_s": round(n / insert_s, 1),
        "add_per_s": round(len(extra) / add_s, 1),
    }
    print(f"{n:>7} memories: bank p50 {row['p50_ms']:.2f} ms p95 {row['p95_ms']:.2f} ms | numpy p50 "
          f"{row['numpy_p50_ms']:.2f} ms p95 {row['numpy_p95_ms']:.2f} ms | ratio {row['ratio_p50']:.2f}x | "
          f"vec0 p50 {row['vec0_p50_ms']:.2f} ms | same top-60 {agree:.0%} | open+load {row['open_ms']:.0f} ms | "
          f"insert {row['batch_insert_per_s']:.0f}/s batched, {row['add_per_s']:.0f}/s add()", flush=True)
    return row


def bench_embedding(tmp: Path, n: int = 256) -> dict:
    """Insert throughput with the real embedder: batched apply() and one add() per memory."""
    try:
        from core.embeddings import default_embedder

        emb = default_embedder()
    except Exception as exc:  # noqa: BLE001 - a benchmark reports and goes on
        print(f"embedding insert: skipped ({exc})")
        return {}
    texts = [f"On day {i} Caroline told Melanie about the {w} she saw at the {p}."
             for i, (w, p) in enumerate(zip(["painting", "concert", "parade", "lecture"] * n,
                                            ["museum", "park", "school", "library"] * n))][:n]
    emb.embed(texts[:8])  # load + warm up
    bank = MemoryBank(tmp / "bench-embed.sqlite3", emb)
    t0 = time.perf_counter()
    bank.apply([MemoryOp("ADD", text=t) for t in texts])
    batched = n / (time.perf_counter() - t0)
    single_n = min(64, n)
    t0 = time.perf_counter()
    for t in texts[:single_n]:
        bank.add(t + " (again)")
    single = single_n / (time.perf_counter() - t0)
    bank.close()
    row = {"embedder": emb.name, "batch_insert_per_s": round(batched, 1), "add_per_s": round(single, 1)}
    print(f"with embedding ({emb.name}): {batched:.0f}/s batched apply(), {single:.0f}/s add()", flush=True)
    return row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", default="1000,10000,100000")
    ap.add_argument("--queries", type=int, default=200)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-embedding", action="store_true", help="skip the real-embedder insert figures")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(args.seed)
    out: dict = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in (int(s) for s in args.sizes.split(",")):
            out[str(n)] = bench_size(n, args.queries, rng, tmp)
        if not args.no_embedding:
            out["insert"] = {"with_embedding": bench_embedding(tmp)}
    return finish(out, args.json)


if __name__ == "__main__":
    sys.exit(main())

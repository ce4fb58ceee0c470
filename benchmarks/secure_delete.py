"""What `PRAGMA secure_delete = ON` (on every bank connection) costs (prints figures; not a test).

On a real bank (SQLite + sqlite-vec in a temp dir) of `--size` memories (384-d random unit
vectors, so embedding is not timed), with secure_delete OFF and then ON on the same kind of
bank, it times: `--adds` one-transaction-each `add()` calls; `--edits` `edit()` calls (the old
text's cells are freed, so they are zeroed when on); `--forgets` single `forget()` calls (each
also checkpoints the WAL with TRUNCATE, timed apart); and the purge of a 50-message chat.

    python benchmarks/secure_delete.py [--size 10000] [--adds 1000] [--edits 300] [--forgets 20] [--json]

With `--json` the last line is one JSON object: `{"off": {...}, "on": {...}}` with, per mode,
`adds_s` (total), `add_ms` (p50), `edit_ms` (p50), `forget_ms` (p50 and p95, checkpoint
included), `checkpoint_ms` (p50 of a bare `wal_checkpoint(TRUNCATE)` after one add),
`purge_ms`, and `file_mb`.
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
from core.memory.db import checkpoint  # noqa: E402
from core.types import MemoryOp  # noqa: E402

DIM = 384
BATCH = 5000
WORDS = "tea cat dog Boston Oslo painting guitar sister job moved loves hates visited bought".split()


class RandomEmbedder:
    """Random unit vectors: the storage is timed, not embedding."""

    name = "bench-random"
    dim = DIM

    def __init__(self, seed: int) -> None:
        self.rng = np.random.default_rng(seed)

    def embed(self, texts):
        m = self.rng.standard_normal((len(texts), DIM), dtype=np.float32)
        return m / np.maximum(np.linalg.norm(m, axis=1, keepdims=True), 1e-9)


def text(rng: np.random.Generator, i: int) -> str:
    return f"memory {i}: " + " ".join(rng.choice(WORDS, size=12))


def ms(samples: list[float], q: float) -> float:
    return round(percentile(samples, q, scale=1000.0), 3)


def each(fn, items) -> list[float]:
    times = []
    for item in items:
        t0 = time.perf_counter()
        fn(item)
        times.append(time.perf_counter() - t0)
    return times


def bench(secure: bool, args, tmp: Path) -> dict:
    rng = np.random.default_rng(0)
    path = tmp / f"bench-{'on' if secure else 'off'}.sqlite3"
    bank = MemoryBank(path, RandomEmbedder(1))
    with bank.reader() as conn:
        conn.execute(f"PRAGMA secure_delete = {'ON' if secure else 'OFF'}")
    for start in range(0, args.size, BATCH):
        n = min(BATCH, args.size - start)
        bank.apply([MemoryOp("ADD", text=text(rng, start + i)) for i in range(n)],
                   vectors=bank.embedder.embed([""] * n))
    with bank.reader() as conn:
        checkpoint(conn, "benchmark")
    t0 = time.perf_counter()
    add_times = each(lambda i: bank.add(text(rng, args.size + i)), range(args.adds))
    adds_s = time.perf_counter() - t0
    edit_times = each(lambda mid: bank.edit(mid, text(rng, mid) + " (edited)"), range(1, args.edits + 1))
    cp_times = []
    for i in range(args.forgets):
        bank.add(text(rng, 10 * args.size + i))
        with bank.reader() as conn:
            t0 = time.perf_counter()
            checkpoint(conn, "benchmark")
            cp_times.append(time.perf_counter() - t0)
    forget_ids = list(range(args.edits + 1, args.edits + 1 + args.forgets))
    forget_times = each(bank.forget, forget_ids)
    cid = bank.chats.create_conversation("bench").id
    for i in range(50):
        bank.chats.add_message(cid, "user" if i % 2 == 0 else "assistant", text(rng, i) * 8)
    t0 = time.perf_counter()
    bank.chats.purge_conversation(cid)
    purge_s = time.perf_counter() - t0
    bank.close()
    return {"adds_s": round(adds_s, 3), "add_ms": ms(add_times, 50), "edit_ms": ms(edit_times, 50),
            "forget_ms": ms(forget_times, 50), "forget_p95_ms": ms(forget_times, 95),
            "checkpoint_ms": ms(cp_times, 50), "purge_ms": round(purge_s * 1000, 3),
            "file_mb": round(path.stat().st_size / 1e6, 2)}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=10_000)
    ap.add_argument("--adds", type=int, default=1000)
    ap.add_argument("--edits", type=int, default=300)
    ap.add_argument("--forgets", type=int, default=20)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    result = {}
    with tempfile.TemporaryDirectory() as tmp:
        for mode, secure in (("off", False), ("on", True)):
            result[mode] = bench(secure, args, Path(tmp))
            r = result[mode]
            print(f"secure_delete {mode:>3}: {args.adds} adds {r['adds_s']:.2f} s (p50 {r['add_ms']:.2f} ms), "
                  f"edit p50 {r['edit_ms']:.2f} ms, forget p50 {r['forget_ms']:.2f} ms "
                  f"(p95 {r['forget_p95_ms']:.2f}; checkpoint alone {r['checkpoint_ms']:.2f}), "
                  f"50-message chat purge {r['purge_ms']:.2f} ms, file {r['file_mb']} MB", flush=True)
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

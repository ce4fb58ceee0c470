"""The GGUF embedder against the torch one (prints figures; not a test).

Same all-MiniLM-L6-v2 weights, two runtimes: sentence-transformers/torch and llama.cpp
(`core.llm.embedder`, converted here into a temp data folder). Printed:

1. token ids: llama.cpp's (after `bert_normalize`) against the Hugging Face tokenizer's, with
   truncation to 256, on every text of the set;
2. cosine between the two embeddings of each text: min / p1 / mean (the set: every turn and
   question of the LoCoMo file, plus odd strings: unicode, control characters, > 256 tokens);
3. load time of each embedder and the latency of one query (median of 30, one thread);
4. retrieval without answering: the rag system's raw-turns bank (`build_turn_bank`) built with
   each embedder, then the Answer Agent's retrieval (30 + 30 per speaker, as in the evaluation,
   and 5 + 5) for every scored question: per question, whether an evidence turn is among the
   retrieved turns for each embedder, then the evidence recall of both and the overlap.

    .venv/bin/python benchmarks/embedder_parity.py [--data ../shared/data/locomo/val.json]
        [--limit-texts N] [--quiet] [--json]

`--quiet` leaves out the per-question lines. Run with one thread (OMP/torch threads = 1).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish  # noqa: E402

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "locomo" / "val.json"
ODD_TEXTS = [
    "", " ", "Hello, World!", "naïve café résumé", "Ünïcödé ÀÉÎÕÜ ß ﬁ", "日本語のテキスト 中文 한국어",
    "emoji 😀👍🏽 and ❤️", "tabs\tand\nnewlines\r\n", "don't can't won't", "e-mail: foo.bar@example.com",
    "$100 + 50% = <html> ^_^ ~`|", "[CLS] [SEP] [MASK] in the text", "a" * 150, "x" * 101 + " y",
    "Ωμέγα Ελληνικά Кириллица ΟΔΟΣ", "zero\u200bwidth\u200d joiner \ufeff bom", "control\x00\x01\x07chars",
    "Hindi हिन्दी Thai ภาษาไทย Arabic العربية", "İstanbul Straße", "‘smart’ “quotes” — dash … ellipsis",
    " ".join(["word"] * 300), " ".join(f"token{i}" for i in range(400)),
    "The quick brown fox jumps over the lazy dog. " * 40,
]


def one_thread() -> None:
    try:
        import torch

        torch.set_num_threads(1)
    except Exception:
        pass


def texts_of(samples, limit: int | None) -> list[str]:
    from training.eval.systems import turn_text

    out = list(ODD_TEXTS)
    for s in samples:
        out += [turn_text(t) for t in s.turns]
        out += [q.question for q in s.qa]
    seen: set[str] = set()
    uniq = [t for t in out if not (t in seen or seen.add(t))]
    return uniq[:limit] if limit else uniq


def query_latency(emb, text: str, n: int = 30) -> float:
    emb.embed([text])
    times = []
    for _ in range(n):
        start = time.perf_counter()
        emb.embed([text])
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def retrieval(samples, emb, folder: Path, ks: tuple[int, ...]) -> dict:
    """{(sample_id, qa index): {k: (hit, [memory sources])}} for every scored question."""
    from core.agents.answer import AnswerAgent
    from training.eval.runner import covers
    from training.eval.systems import build_turn_bank

    out: dict = {}
    for s in samples:
        handle = build_turn_bank(s, folder / s.sample_id, emb, max_sessions=None)
        try:
            agent = AnswerAgent(handle.bank, None, k=max(ks))
            for qa in s.scored_qa():
                row = {}
                for k in ks:
                    got = agent.retrieve(qa.question, k=k)
                    row[k] = (covers([m.source for m in got], qa.evidence), [m.source for m in got])
                out[(s.sample_id, qa.index)] = row
        finally:
            handle.close()
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(DEFAULT_DATA), help="a LoCoMo JSON file (default: val.json)")
    ap.add_argument("--limit-texts", type=int, default=None, help="use only the first N texts for the cosines")
    ap.add_argument("--quiet", action="store_true", help="no per-question lines")
    ap.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = ap.parse_args(argv)
    one_thread()
    import numpy as np

    from core.embeddings import SentenceTransformerEmbedder, gguf_embedder
    from core.locomo import load_locomo

    samples = load_locomo(args.data)
    texts = texts_of(samples, args.limit_texts)
    result: dict = {"texts": len(texts)}
    with tempfile.TemporaryDirectory() as tmp:
        base = Path(tmp)
        start = time.perf_counter()
        torch_emb = SentenceTransformerEmbedder()
        result["torch_load_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        gguf_emb = gguf_embedder(base / "home")  # converts first: a fresh data folder
        result["gguf_convert_and_load_s"] = round(time.perf_counter() - start, 3)
        start = time.perf_counter()
        gguf_emb.close()
        gguf_emb = gguf_embedder(base / "home")
        result["gguf_load_s"] = round(time.perf_counter() - start, 3)
        print(f"load: torch {result['torch_load_s']:.2f} s; GGUF {result['gguf_load_s']:.2f} s "
              f"(first time, with the conversion: {result['gguf_convert_and_load_s']:.2f} s)")

        hf_tok = torch_emb._model.tokenizer
        same_ids = sum(gguf_emb.tokenize(t) == hf_tok(t, truncation=True, max_length=256)["input_ids"]
                       for t in texts)
        result["token_ids_equal"] = same_ids
        print(f"token ids: equal on {same_ids} of {len(texts)} texts")

        a = torch_emb.embed(texts)
        b = gguf_emb.embed(texts)
        cos = np.sum(a * b, axis=1)
        worst = int(np.argmin(cos))
        result.update(cos_min=float(cos.min()), cos_p1=float(np.percentile(cos, 1)), cos_mean=float(cos.mean()))
        print(f"cosine torch vs GGUF over {len(texts)} texts: min {cos.min():.6f}  p1 {np.percentile(cos, 1):.6f}"
              f"  mean {cos.mean():.6f}  (worst: {texts[worst][:60]!r})")

        q = "What did Gina say about her dance studio?"
        result["torch_query_ms"] = round(query_latency(torch_emb, q) * 1000, 2)
        result["gguf_query_ms"] = round(query_latency(gguf_emb, q) * 1000, 2)
        print(f"one query: torch {result['torch_query_ms']:.1f} ms, GGUF {result['gguf_query_ms']:.1f} ms "
              "(median of 30)")

        ks = (60, 10)
        start = time.perf_counter()
        rt = retrieval(samples, torch_emb, base / "torch", ks)
        t_torch = time.perf_counter() - start
        start = time.perf_counter()
        rg = retrieval(samples, gguf_emb, base / "gguf", ks)
        t_gguf = time.perf_counter() - start
        print(f"raw-turns banks + retrieval: torch {t_torch:.1f} s, GGUF {t_gguf:.1f} s")
        if not args.quiet:
            print("question  " + "  ".join(f"k={k}: torch gguf" for k in ks) + "  same-top-k")
        for k in ks:
            result[f"recall_torch_k{k}"] = round(sum(rt[key][k][0] for key in rt) / max(1, len(rt)), 4)
            result[f"recall_gguf_k{k}"] = round(sum(rg[key][k][0] for key in rg) / max(1, len(rg)), 4)
            result[f"same_hit_k{k}"] = sum(rt[key][k][0] == rg[key][k][0] for key in rt)
            result[f"same_set_k{k}"] = sum(set(rt[key][k][1]) == set(rg[key][k][1]) for key in rt)
        if not args.quiet:
            for key in rt:
                cells = "  ".join(f"{'hit ' if rt[key][k][0] else 'miss'}  {'hit ' if rg[key][k][0] else 'miss'}"
                                  .rjust(len(f"k={k}: torch gguf")) for k in ks)
                same = ",".join("=" if set(rt[key][k][1]) == set(rg[key][k][1]) else "≠" for k in ks)
                print(f"{key[0]}#{key[1]:<4} {cells}  {same}")
        n = len(rt)
        for k in ks:
            print(f"evidence recall, top {k} ({k // 2} per speaker), {n} questions: torch "
                  f"{result[f'recall_torch_k{k}']:.2%}, GGUF {result[f'recall_gguf_k{k}']:.2%}; "
                  f"same hit/miss on {result[f'same_hit_k{k}']}, same retrieved set on {result[f'same_set_k{k}']}")
        result["questions"] = n
        gguf_emb.close()
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

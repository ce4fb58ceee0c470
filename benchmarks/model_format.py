"""The embedded model's formats side by side (prints figures; no pass/fail): the shipped
SmolLM2-135M-Instruct Q4_1 against Q4_0 (and Q8_0) variants derived from it by
`core.llm.variant.derive_variant` (llama.cpp re-quantisation, one thread).

Per format: file size, derivation seconds, load seconds (Llama() with the runtime's n_batch),
prompt evaluation of a ~1,300-token chat prompt (44 memory lines) in tokens per wall second and
per CPU second (best of --repeats on an emptied KV cache), first-token latency (the same prompt
on an emptied cache until the first streamed token), and a few greedy replies compared with the
shipped format's (same text or not, and the length of the common prefix in characters).

    python benchmarks/model_format.py --threads 1 --out /tmp/work/q40 [--formats Q4_0,Q8_0] [--json]

The variant files stay in --out (default: a temp folder, removed afterwards).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import finish  # noqa: E402
from core.llm.native import import_llama_cpp  # noqa: E402
from core.llm.runtime import N_BATCH  # noqa: E402
from core.llm.variant import derive_variant  # noqa: E402
from core.paths import embedded_gguf  # noqa: E402

NAMES = ["Caroline", "Melanie"]
THINGS = ["painted a lake sunrise", "adopted a dog called Rex", "moved to Lisbon", "started pottery classes",
          "ran a charity race for mental health", "visited her grandmother in Sweden", "bought a blue bicycle",
          "read a book of poetry by Mary Oliver", "joined a hiking club in the hills", "planted tomatoes and basil",
          "learned to bake sourdough bread", "went camping with friends by the lake"]
QUESTIONS = ["What did Caroline paint?", "Where did Melanie move?", "What did Caroline plant?",
             "Which club did Melanie join?"]


def memory_block(lines: int = 60) -> str:
    out = []
    for i in range(lines):
        day = 1 + i % 28
        out.append(f"- [{day} May 2023] {NAMES[i % 2]} {THINGS[i % len(THINGS)]} "
                   f"(session {1 + i // 6}, memory {i + 1}).")
    return "\n".join(out)


def chat_prompt(llm, question: str, memories: str) -> list[int]:
    text = ("<|im_start|>system\nYou answer questions about a conversation using the memories below. "
            "Answer in a few words.<|im_end|>\n"
            f"<|im_start|>user\nMemories:\n{memories}\n\nQuestion: {question}<|im_end|>\n"
            "<|im_start|>assistant\n")
    return llm.tokenize(text.encode(), add_bos=False, special=True)


def load(path: Path, threads: int, n_ctx: int):
    Llama = import_llama_cpp().Llama

    t0 = time.perf_counter()
    llm = Llama(model_path=str(path), n_ctx=n_ctx, n_batch=N_BATCH, n_threads=threads,
                n_threads_batch=threads, seed=0, verbose=False)
    return llm, time.perf_counter() - t0


def prompt_eval(llm, tokens: list[int], repeats: int) -> tuple[float, float]:
    """Best (wall, cpu) seconds to evaluate `tokens` from position 0 (llama-cpp-python drops the
    KV cells past `n_tokens`, 0 after reset)."""
    best_wall = best_cpu = float("inf")
    for _ in range(repeats):
        llm.reset()
        w0, c0 = time.perf_counter(), time.process_time()
        llm.eval(tokens)
        best_wall = min(best_wall, time.perf_counter() - w0)
        best_cpu = min(best_cpu, time.process_time() - c0)
    return best_wall, best_cpu


def first_token(llm, tokens: list[int]) -> float:
    llm.reset()
    t0 = time.perf_counter()
    for _ in llm.create_completion(tokens, max_tokens=1, temperature=0.0, stream=True):
        break
    return time.perf_counter() - t0


def greedy(llm, tokens: list[int], max_tokens: int) -> str:
    """Greedy reply; the memories' KV from the previous prompt is reused (same prefix)."""
    out = llm.create_completion(tokens, max_tokens=max_tokens, temperature=0.0, top_k=1, seed=0)
    return out["choices"][0]["text"]


def common_prefix(a: str, b: str) -> int:
    n = 0
    for x, y in zip(a, b):
        if x != y:
            break
        n += 1
    return n


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--formats", default="Q4_0,Q8_0", help="variants to derive beside the shipped Q4_1")
    ap.add_argument("--out", default=None, help="folder the variants are written to (kept)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--memories", type=int, default=44, help="memory lines (44: a ~1,300-token prompt)")
    ap.add_argument("--max-tokens", type=int, default=32, help="greedy reply length")
    ap.add_argument("--greedy-only", action="store_true", help="only compare greedy replies (no timings)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()

    shipped = embedded_gguf()
    out = Path(args.out) if args.out else Path(tempfile.mkdtemp(prefix="model-format-"))
    out.mkdir(parents=True, exist_ok=True)
    stem = shipped.name.rsplit(".", 2)[0]
    files: dict[str, tuple[Path, float | None]] = {"Q4_1 (shipped)": (shipped, None)}
    for quant in [q.strip().upper() for q in args.formats.split(",") if q.strip()]:
        record = derive_variant(shipped, quant, dest=out / f"{stem}.{quant}.gguf", threads=args.threads)
        files[quant] = (Path(record.path), record.seconds)
        print(f"derived {record.path}  {record.seconds:.2f} s  sha256 {record.sha256}", flush=True)

    memories = memory_block(args.memories)
    results: dict[str, dict] = {}
    replies: dict[str, list[str]] = {}
    for label, (path, derive_s) in files.items():
        llm, load_s = load(path, args.threads, n_ctx=2048)
        tokens = chat_prompt(llm, QUESTIONS[0], memories)
        replies[label] = [greedy(llm, chat_prompt(llm, q, memories), args.max_tokens) for q in QUESTIONS]
        if args.greedy_only:
            continue
        first_token(llm, tokens[:64])  # warm the code paths once
        wall, cpu = prompt_eval(llm, tokens, args.repeats)
        ttft = first_token(llm, tokens)
        results[label] = {"path": str(path), "size_mib": round(path.stat().st_size / 2**20, 1),
                          "derive_s": derive_s, "load_s": round(load_s, 3), "prompt_tokens": len(tokens),
                          "prompt_tok_per_s": round(len(tokens) / wall, 1),
                          "prompt_tok_per_cpu_s": round(len(tokens) / cpu, 1) if cpu > 0 else None,
                          "first_token_s": round(ttft, 3)}
        del llm
        r = results[label]
        print(f"{label:15s} {r['size_mib']:6.1f} MiB  derive {derive_s if derive_s is not None else '-':>6}"
              f"  load {r['load_s']:.2f} s  prompt {r['prompt_tokens']} tok: {r['prompt_tok_per_s']:.0f} tok/s "
              f"({r['prompt_tok_per_cpu_s']} per CPU-s)  first token {r['first_token_s']:.2f} s", flush=True)

    base = replies["Q4_1 (shipped)"]
    for label, texts in replies.items():
        if label == "Q4_1 (shipped)":
            continue
        same = sum(a == b for a, b in zip(base, texts))
        prefixes = [common_prefix(a, b) for a, b in zip(base, texts)]
        results.setdefault(label, {})["greedy_same"] = f"{same}/{len(texts)}"
        results[label]["greedy_common_prefix_chars"] = prefixes
        print(f"greedy replies {label} vs Q4_1: {same}/{len(texts)} identical; common prefix chars {prefixes}")
    for i, q in enumerate(QUESTIONS):
        print(f"  {q}")
        for label, texts in replies.items():
            print(f"    {label:15s} {texts[i].strip()[:90]!r}")
    results_out = {"threads": args.threads, "formats": results,
                   "replies": {k: v for k, v in replies.items()}}
    if not args.out:
        shutil.rmtree(out, ignore_errors=True)
    return finish(results_out, args.json)


if __name__ == "__main__":
    sys.exit(main())

"""Model runtime figures with the embedded SmolLM2-135M (prints them; no pass/fail).

1. Generation tokens/s through `LlamaBackend.complete_text` vs calling the same
   `llama_cpp.Llama` directly (`create_completion`, streamed and not), same prompt, settings
   and seed, interleaved in one run. Target: runtime >= 0.95x direct.
2. Time to first token of a chat reply whose prompt carries 60 memory lines, after a warm-up
   call with the same fixed instruction prefix (different memories). Target <= 1 s on 2 cores.
   Also the cold case (nothing cached) and the case where the previous call had another prefix.
3. Resident memory (RSS) before loading, after loading, and at the end.

    .venv/bin/python benchmarks/runtime.py [--threads N] [--tokens 128] [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import psutil  # noqa: E402

from core.llm.runtime import LlamaBackend  # noqa: E402
from core.types import GenParams  # noqa: E402

STORY = ("<|im_start|>user\nWrite a long, detailed story about a lighthouse keeper who finds "
         "a message in a bottle.<|im_end|>\n<|im_start|>assistant\n")
NAMES = ["Melanie", "Caroline"]
THINGS = ["painted a lake sunrise", "adopted a dog called Rex", "moved to Lisbon", "started pottery",
          "ran a charity race", "visited her grandmother", "bought a blue bicycle", "read a poetry book",
          "joined a hiking club", "planted tomatoes", "learned to bake bread", "went camping with friends"]


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def memory_lines(n: int, salt: int) -> list[str]:
    """`n` short memory lines as the bank formats them (`<time>: <text>`); another `salt`
    gives other lines (other times and pairings), as another question retrieves."""
    out = []
    for i in range(n):
        who, what = NAMES[(i + salt) % 2], THINGS[(i * 7 + salt * 5) % len(THINGS)]
        out.append(f"{1 + (i * 5 + salt) % 28} May, 2023: {who} {what}.")
    return out


def chat_prompt(lines: list[str], question: str) -> list[dict]:
    try:
        from core.agents.prompts import chat_messages

        return chat_messages(question, {"User": lines})
    except Exception:  # prompts module changed: a stand-in with the same layout
        system = "You are a friendly assistant with a long-term memory. " * 8
        return [{"role": "system", "content": system},
                {"role": "user", "content": "Memories:\n" + "\n".join(f"- {m}" for m in lines)
                 + f"\n\nUser: {question}"}]


def ttft(backend: LlamaBackend, messages: list[dict], cpu: list | None = None) -> float:
    """Wall seconds to the first piece; appends the process CPU seconds to `cpu` (with one
    thread that is what the wall time would be on an idle core)."""
    start, start_cpu = time.perf_counter(), time.process_time()
    stream = backend.complete(messages, params=GenParams(temperature=0.7, max_tokens=8, seed=1))
    next(stream)
    elapsed = time.perf_counter() - start
    if cpu is not None:
        cpu.append(time.process_time() - start_cpu)
    stream.close()
    return elapsed


def bench_tokens_per_s(backend: LlamaBackend, n_tokens: int, repeats: int) -> None:
    llm = backend.raw_llama
    settings = dict(temperature=0.7, top_p=0.95, seed=42)
    params = GenParams(max_tokens=n_tokens, **settings)

    def ours():
        return list(backend.complete_text(STORY, params=params))

    def direct_stream():
        return [c["choices"][0]["text"] for c in llm.create_completion(
            STORY, max_tokens=n_tokens, stream=True, **settings)]

    def direct():
        return [llm.create_completion(STORY, max_tokens=n_tokens, **settings)["choices"][0]["text"]]

    runs = {"runtime": ours, "direct (stream)": direct_stream, "direct": direct}
    texts, rates, cpu_rates = {}, {k: [] for k in runs}, {k: [] for k in runs}
    for fn in runs.values():
        fn()  # warm-up: the prompt is then cached for every variant
    for _ in range(repeats):
        for name, fn in runs.items():
            start, start_cpu = time.perf_counter(), time.process_time()
            text = "".join(fn())
            elapsed, cpu = time.perf_counter() - start, time.process_time() - start_cpu
            texts[name] = text
            rates[name].append(backend.count_tokens(text) / elapsed)
            cpu_rates[name].append(backend.count_tokens(text) / cpu)
    print(f"generation ({n_tokens} tokens max, temperature 0.7, seed 42, median of {repeats}; "
          "per wall second, and per CPU second of the process):")
    for name in runs:
        print(f"  {name:<16} {statistics.median(rates[name]):7.1f} tokens/s wall  "
              f"{statistics.median(cpu_rates[name]):7.1f} tokens/CPU-s   (wall runs: "
              + ", ".join(f"{v:.1f}" for v in rates[name]) + ")")
    for label, table in (("wall", rates), ("CPU", cpu_rates)):
        best = max(statistics.median(table["direct (stream)"]), statistics.median(table["direct"]))
        print(f"  runtime / best direct ({label}) = {statistics.median(table['runtime']) / best:.3f}x "
              "(target >= 0.95x)")
    print(f"  same text as direct: {texts['runtime'] == texts['direct']}")


def bench_ttft(backend: LlamaBackend, repeats: int) -> None:
    lines_tokens = backend.count_tokens("\n".join(memory_lines(60, 0)))
    warm = chat_prompt(memory_lines(60, 0), "What did I do in May?")
    total_tokens = backend.count_tokens(backend.apply_chat_template(warm))
    print(f"time to first token, 60 memory lines (~{lines_tokens} tokens; prompt {total_tokens} tokens):")
    backend.reset_cache()  # cold: no prefix is reused
    cpu: list[float] = []
    print(f"  cold (nothing cached)                  {ttft(backend, warm, cpu):.3f} s wall, {cpu[-1]:.3f} s CPU")
    ttft(backend, warm)  # the warm-up call with the fixed instruction prefix
    warm_times, cpu = [], []
    for salt in range(1, repeats + 1):
        warm_times.append(ttft(backend, chat_prompt(memory_lines(60, salt), f"Question number {salt}?"), cpu))
    print(f"  after warm-up, new memories (n={repeats})  median {statistics.median(warm_times):.3f} s wall, "
          f"max {max(warm_times):.3f} s; median {statistics.median(cpu):.3f} s CPU (target <= 1 s)")
    same, cpu = [], []
    ttft(backend, chat_prompt(memory_lines(60, 1), "A first question?"))  # these memories, cached
    for salt in range(1, repeats + 1):
        same.append(ttft(backend, chat_prompt(memory_lines(60, 1), f"Another question {salt}?"), cpu))
    print(f"  same 60 memories, new question         median {statistics.median(same):.3f} s wall, "
          f"{statistics.median(cpu):.3f} s CPU")
    other = [{"role": "system", "content": "A different instruction prefix. " * 30},
             {"role": "user", "content": "Hello"}]
    miss = []
    for salt in range(repeats):
        ttft(backend, other)
        miss.append(ttft(backend, chat_prompt(memory_lines(60, 100 + salt), "And now?")))
    print(f"  previous call had another prefix      median {statistics.median(miss):.3f} s "
          "(why each role gets its own backend)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    before = rss_mb()
    start = time.perf_counter()
    backend = LlamaBackend(n_threads=args.threads, n_ctx=4096)
    load_s = time.perf_counter() - start
    after_load = rss_mb()
    print(f"model: {backend.name}  threads={backend.n_threads}  n_ctx={backend.n_ctx}  "
          f"cores={psutil.cpu_count(logical=False)}/{psutil.cpu_count()}  load {load_s:.2f} s  "
          f"load average {os.getloadavg()[0]:.1f}  OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}")
    bench_tokens_per_s(backend, args.tokens, args.repeats)
    bench_ttft(backend, args.repeats)
    end = rss_mb()
    backend.close()
    print(f"load average at the end {os.getloadavg()[0]:.1f}")
    print(f"RSS: before load {before:.0f} MB, after load {after_load:.0f} MB, after benchmarks "
          f"{end:.0f} MB, after close {rss_mb():.0f} MB")


if __name__ == "__main__":
    main()

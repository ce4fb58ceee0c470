"""Chat first-token time across a scripted 10-turn chat, with and without memories (prints
figures; no pass/fail): the real `Assistant` over a 1,000-memory bank (HashEmbedder), the
embedded SmolLM2-135M for the reply (the manager is a fake that stores nothing). Per turn:
prompt tokens, NEW prompt tokens (not in the previous eval's prefix: llama.cpp re-evaluates
only those), first-visible-token seconds; then p50/p95 of the first token per run and their
ratio. NEW tokens are counted against the previous eval (a reply, or the pipeline's warm-up
of a moved history window during the pause between turns, or a prefill).

`--prefill` runs the chat once per mode (each with and without memories):
- `none`: the message arrives all at once (pasted; or prefill off);
- `draft`: typing paused before Enter, so `Assistant.prefill` evaluated the whole message's
  prompt (what the GUI does DRAFT_PAUSE_MS after the last key) and it finished;
- `partial`: the prefill saw the message without its last word (Enter pressed right after
  typing it): the retrieval for the final text may choose other memories.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile  # noqa: E402
from core.assistant.pipeline import Assistant  # noqa: E402
from core.config import Settings  # noqa: E402
from core.fakes import FakeBackend, HashEmbedder, router  # noqa: E402
from core.llm.runtime import LlamaBackend  # noqa: E402
from core.memory import MemoryBank  # noqa: E402

THINGS = ["painted a lake sunrise", "adopted a dog called Rex", "moved to Lisbon", "started pottery",
          "ran a charity race", "visited her grandmother", "bought a blue bicycle", "read a poetry book",
          "joined a hiking club", "planted tomatoes", "learned to bake bread", "went camping with friends"]
QUESTIONS = ["What did I paint?", "Tell me about my dog.", "Where did I move?", "Do I do pottery?",
             "What race did I run?", "Who did I visit?", "What bike did I buy?", "What did I read?",
             "Which club did I join?", "What did I plant?"]


class Recorder:
    """Wraps the answer backend: remembers the text whose KV the model holds (the last prompt
    and what it generated) and counts each prompt's tokens after their common text prefix."""

    def __init__(self, backend: LlamaBackend) -> None:
        self.backend = backend
        self.n_ctx = backend.n_ctx
        self.cached = ""  # the text whose KV the model holds
        self.log: list[tuple[int, int]] = []

    def __getattr__(self, name):
        return getattr(self.backend, name)

    def complete(self, messages, **kw):
        if kw.get("params") is not None and kw["params"].max_tokens == 1:  # the pipeline's warm-up
            stream = self.backend.complete(messages, **kw)
            # what the KV holds once it ran: a reply that starts meanwhile waits for it
            self.cached = self.backend.apply_chat_template(messages)
            yield from stream
            return
        prompt = self.backend.apply_chat_template(messages)
        common = len(os.path.commonprefix([prompt, self.cached]))
        total = self.backend.count_tokens(prompt)
        self.log.append((total, total - (self.backend.count_tokens(prompt[:common]) if common else 0)))
        pieces = []
        for piece in self.backend.complete(messages, **kw):
            pieces.append(piece)
            yield piece
        self.cached = prompt + "".join(pieces)


def draft_of(question: str, mode: str) -> str | None:
    """What the prefill saw of `question` before it was sent, by mode."""
    if mode == "draft":
        return question
    if mode == "partial":
        return question.rsplit(" ", 1)[0] if " " in question else None
    return None


def run(backend: Recorder, budget: int, turns: int, data: Path, think: float,
        cpus: list[float], mode: str = "none") -> list[float]:
    """The scripted chat; returns each turn's first-token wall seconds and appends to `cpus` the
    process CPU seconds spent until then (on one thread, what a quiet machine's wall time would
    be: the figure to read when other work shares the cores)."""
    bank = MemoryBank(data / f"bank{budget}.sqlite3", HashEmbedder())
    for i in range(1000):
        bank.add(f"User {THINGS[i % len(THINGS)]} (note {i})", speaker="User",
                 observed_at=f"{1 + i % 28} May, 2023")
    manager = FakeBackend(default=router("", facts='{"facts": []}'))
    settings = Settings(max_tokens=24, chat_memory_tokens=budget, prefill_while_typing=mode != "none")
    a = Assistant(bank, backend, manager, settings=settings, user_name="User")
    cid = bank.chats.create_conversation("bench", temporary=budget == 0).id
    firsts = []
    print(f"-- prefill {mode}, chat_memory_tokens={budget}{' (temporary chat: no memories)' if budget == 0 else ''}")
    for t in range(turns):
        draft = draft_of(QUESTIONS[t % len(QUESTIONS)], mode)
        if draft is not None:  # the user typed it during the pause; typing paused, the prefill ran
            a.prefill(cid, draft, temporary=budget == 0)
            a.wait_prefilled()
        start, cpu_start = time.perf_counter(), time.process_time()
        first: list[tuple[float, float]] = []

        def on_token(_piece, first=first, start=start, cpu_start=cpu_start) -> None:
            if not first:
                first.append((time.perf_counter() - start, time.process_time() - cpu_start))

        a.reply(cid, QUESTIONS[t % len(QUESTIONS)], temporary=budget == 0, on_token=on_token)
        total, new = backend.log[-1]
        ft, cpu = first[0] if first else (float("nan"), float("nan"))
        firsts.append(ft)
        cpus.append(cpu)
        print(f"turn {t + 1:2d}: prompt {total:5d} tokens, new {new:5d}, first token {ft:6.2f} s "
              f"({cpu:5.2f} CPU-s)")
        time.sleep(think)  # the user reads and types; the pipeline may warm the next prompt up
    a.close()
    bank.close()
    return firsts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--turns", type=int, default=10)
    parser.add_argument("--budget", type=int, default=Settings().chat_memory_tokens)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--think", type=float, default=5.0, help="seconds between a reply and the next message")
    parser.add_argument("--prefill", default="none,draft",
                        help="comma-separated modes: none, draft, partial (see the module docstring)")
    parser.add_argument("--model", default=None, metavar="PATH",
                        help="GGUF for the reply (default: the embedded SmolLM2-135M; e.g. its Q8_0 copy from "
                             "`memory-r1 models optimize`)")
    args = parser.parse_args()
    modes = [m.strip() for m in args.prefill.split(",") if m.strip()]
    if not modes or any(m not in ("none", "draft", "partial") for m in modes):
        parser.error("--prefill takes none, draft and/or partial")
    backend = Recorder(LlamaBackend(path=args.model, n_threads=args.threads, n_ctx=4096))
    for mode in modes:
        with tempfile.TemporaryDirectory() as tmp:
            cpu_with: list[float] = []
            cpu_without: list[float] = []
            backend.reset_cache()
            backend.cached = ""
            with_mem = run(backend, args.budget, args.turns, Path(tmp), args.think, cpu_with, mode)
            backend.reset_cache()
            backend.cached = ""
            without = run(backend, 0, args.turns, Path(tmp), args.think, cpu_without, mode)
        print(f"== prefill {mode}")
        report(with_mem, without, cpu_with, cpu_without)


def report(with_mem: list[float], without: list[float], cpu_with: list[float], cpu_without: list[float]) -> None:
    for name, v in (("with", with_mem), ("without", without)):
        empty = sum(1 for x in v if x != x)
        if empty:
            print(f"{empty} of {len(v)} replies {name} memories showed no visible token (left out below)")
    for unit, w, wo in (("s", with_mem, without), ("CPU-s", cpu_with, cpu_without)):
        w, wo = [x for x in w if x == x], [x for x in wo if x == x]  # NaN: no visible token
        p = {name: (percentile(v, 50), percentile(v, 95)) for name, v in (("with", w), ("without", wo))}
        for name, (p50, p95) in p.items():
            print(f"first token {name} memories: p50 {p50:.2f} {unit}, p95 {p95:.2f} {unit}")
        print(f"ratio with/without ({unit}): p50 {p['with'][0] / p['without'][0]:.2f}, "
              f"p95 {p['with'][1] / p['without'][1]:.2f}")


if __name__ == "__main__":
    main()

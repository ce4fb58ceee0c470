"""Seconds per SFT training example of the Answer Agent on this machine (prints figures; not a test).

Builds an answer prompt shaped as the `memory-r1` evaluation sends it (the sources prompt:
30 + 30 memory lines with quotes of their turns, `core.agents.evidence.layout` within the
4096-token context's character budget) from LoCoMo train conv-26's own turns as the
memories, and a distillation target (a few selected lines, then `**Answer:**`). Then, on
the real embedded SmolLM2-135M with the SFT loop's LoRA (training/sft/loop.py: the same
encoding, loss, gradient checkpointing and AdamW step), times one optimizer step of one
example at the full prompt and at prompts cut to shorter lengths (the first tokens kept:
only the length matters for the time).

    python benchmarks/sft_speed.py [--data ../shared/data/locomo/train.json] [--threads 1]
                                   [--lengths full,2048,1024,512] [--repeats 3] [--json]

Figures depend on what else runs on the CPU: the load average is printed with them, and the
CPU time of the step beside its wall time (with one thread, what the step takes on a free core).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import finish  # noqa: E402


def answer_pair(data: Path) -> dict:
    """A sources answer prompt over conv-26's turns and a distillation target."""
    from core.agents import evidence, prompts
    from core.agents.answer import ANSWER_PARAMS, CHARS_PER_TOKEN
    from core.locomo import load_locomo
    from core.types import Memory, MemorySource

    sample = load_locomo(data)[0]
    turns = sample.turns_upto(None)
    mems, links = [], {}
    for i, t in enumerate(turns[:200]):
        m = Memory(i + 1, f"{t.speaker} said: {t.full_text}"[:160], speaker=t.speaker, observed_at=t.time,
                   source=f"locomo:{sample.sample_id}/{t.dia_id}")
        mems.append(m)
        links[m.id] = [MemorySource(i + 1, "turn", "added", t.full_text, t.speaker, t.time, m.source)]
    speakers = list(sample.speakers)
    per = {s: [m for m in mems if m.speaker == s][:30] for s in speakers}
    retrieved = [m for s in speakers for m in per[s]]
    question = sample.scored_qa()[0].question
    # AnswerAgent.build_prompt's budget for a 4096-token context
    fixed = len(prompts.ANSWER_SYSTEM) + len(question) + 200 + len(prompts.ANSWER_SOURCES_NOTE)
    budget = int(max(256, 4096 - ANSWER_PARAMS.max_tokens) * CHARS_PER_TOKEN) - fixed
    lay = evidence.layout(retrieved, links, k=60, speakers=speakers, budget_chars=budget)
    messages = prompts.answer_messages(question, lay.groups, distill=True, sources=True)
    target = ("**Memories selected as relevant:**\n" + "\n".join(f"- {m.prompt_line()}" for m in lay.used[:3])
              + f"\n**Answer:** {sample.scored_qa()[0].answer}")
    return {"id": "bench", "messages": messages, "completion": target}


def main(argv=None) -> int:
    from core.paths import repo_root

    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=str(repo_root().parent / "shared" / "data" / "locomo" / "train.json"))
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--lengths", default="full,2048,1024,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-checkpointing", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
    import torch
    from peft import get_peft_model

    from training.models import load_base
    from training.sft.loop import Encoded, SFTConfig, encode_pair, lora_config, token_loss

    torch.set_num_threads(args.threads)
    config = SFTConfig(threads=args.threads, gradient_checkpointing=not args.no_checkpointing)
    pair = answer_pair(Path(args.data))
    t0 = time.perf_counter()
    model, tok, _ = load_base("embedded", bf16=False)
    load_s = time.perf_counter() - t0
    enc, _ = encode_pair(tok, pair, config)
    assert enc is not None
    model = get_peft_model(model, lora_config(config))
    if config.gradient_checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    model.config.use_cache = False
    model.train()
    params = [p for p in model.parameters() if p.requires_grad]
    optim = torch.optim.AdamW(params, lr=1e-4)
    completion = len(enc.ids) - enc.prompt_len
    result = {"threads": args.threads, "load_s": round(load_s, 1), "full_prompt_tokens": enc.prompt_len,
              "completion_tokens": completion, "checkpointing": config.gradient_checkpointing,
              "load_average": os.getloadavg()[0], "lengths": {}}
    print(f"base loaded in {load_s:.1f}s; prompt {enc.prompt_len} tokens, target {completion} tokens; "
          f"{args.threads} thread(s); load average {os.getloadavg()[0]:.1f}", flush=True)
    for name in args.lengths.split(","):
        n = enc.prompt_len if name == "full" else min(int(name), enc.prompt_len)
        cut = Encoded(enc.ids[:n] + enc.ids[enc.prompt_len:], [-100] * n + enc.labels[enc.prompt_len:], n)
        times, cpu = [], []
        for _ in range(args.repeats + 1):  # the first is a warm-up
            t, c = time.perf_counter(), time.process_time()
            optim.zero_grad(set_to_none=True)
            loss, k = token_loss(model, [cut], tok.pad_token_id, torch.device("cpu"))
            (loss / k).backward()
            optim.step()
            times.append(time.perf_counter() - t)
            cpu.append(time.process_time() - c)
        best, med, med_cpu = min(times[1:]), statistics.median(times[1:]), statistics.median(cpu[1:])
        result["lengths"][str(n)] = {"median_s": round(med, 2), "min_s": round(best, 2), "cpu_s": round(med_cpu, 2)}
        print(f"prompt {n:5d} + {completion} target tokens: {med:.2f} s/example wall (median of {args.repeats}, "
              f"min {best:.2f}), {med_cpu:.2f} s CPU time", flush=True)
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

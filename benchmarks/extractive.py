"""Extractive facts with the embedded model as the chooser: the facts and seconds per turn.

    .venv/bin/python benchmarks/extractive.py          # printed
    .venv/bin/python benchmarks/extractive.py --json   # last line: one JSON object

Each turn goes through `core.agents.extractive.extract_facts` with `model_chooser` over the
shipped SmolLM2-135M (greedy, grammar-constrained by `choice_schema`). Small talk has no
candidates, so it costs no model call. Printed per turn: the candidates, the model's raw
choice, the facts and the wall/CPU seconds (wall time on a shared machine mostly measures
waiting for a core). A few seconds of CPU in all (the first call evaluates the fixed prompt).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.agents.extractive import candidates, extract_facts, keep_all, model_chooser  # noqa: E402

TIME = "1:56 pm on 8 May, 2023"
SPEAKER = "Maria"
TURNS = [
    "I adopted a dog from the shelter last week, his name is Buddy",
    "I moved to Lisbon in March",
    "I got a beagle named Scout",
    "I started learning the guitar",
    "Hey Jon, I went hiking yesterday and I loved it! We're planning a trip next month.",
    "Haha ok.",
    "Sure, sounds good!",
    "Hi John! How are you?",
]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    args = ap.parse_args(argv)

    from core.config import ModelSpec
    from core.llm.runtime import load_backend

    t0 = time.perf_counter()
    backend = load_backend(ModelSpec(n_ctx=2048))
    load_s = time.perf_counter() - t0
    print(f"model loaded in {load_s:.2f} s; speaker {SPEAKER}, time {TIME}\n")
    rows = []
    try:
        for turn in TURNS:
            raw: list[str] = []
            wall, cpu = time.perf_counter(), time.process_time()
            facts = extract_facts(turn, SPEAKER, TIME, model_chooser(backend, SPEAKER, TIME, on_raw=raw.append))
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            cands = candidates(turn)
            rows.append({"turn": turn, "candidates": cands, "raw": raw[0] if raw else None,
                         "facts": facts, "keep_all": extract_facts(turn, SPEAKER, TIME, keep_all),
                         "wall_s": round(wall, 3), "cpu_s": round(cpu, 3)})
            print(f"turn: {turn}")
            print(f"  candidates: {cands}")
            print(f"  model: {raw[0].strip() if raw else '(not called)'}")
            print(f"  facts: {facts}")
            print(f"  {wall:.2f} s wall, {cpu:.2f} s CPU\n")
    finally:
        backend.close()
    called = [r for r in rows if r["raw"] is not None]
    mean_wall = sum(r["wall_s"] for r in called) / max(1, len(called))
    mean_cpu = sum(r["cpu_s"] for r in called) / max(1, len(called))
    print(f"{len(called)} of {len(rows)} turns called the model: mean {mean_wall:.2f} s wall, "
          f"{mean_cpu:.2f} s CPU per call")
    if args.json:
        print(json.dumps({"load_s": round(load_s, 3), "turns": rows}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

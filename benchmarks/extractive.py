"""Extractive facts with the embedded model as the chooser: the facts and seconds per turn.

    .venv/bin/python benchmarks/extractive.py          # printed
    .venv/bin/python benchmarks/extractive.py --json   # last line: one JSON object
    .venv/bin/python benchmarks/extractive.py --locomo # the filler filter on LoCoMo, no model

`--locomo` (no model, a few seconds): the candidates of every turn of LoCoMo train (conv-26,
where the filter was tuned) and val (conv-30, held out), read in place from
../shared/data/locomo, with and without `extractive.FILTER_FILLER`. A candidate *matches* when
its rewrite (`rewrite`, the turn's speaker and time) has token F1 >= 0.5
(training/eval/metrics.py) with a gold `observation` fact citing that turn; a gold fact is
*covered* when some candidate of its turn matches it. Printed per split: candidates, matching
candidates, gold facts covered and turns with a candidate (a model call each), before/after,
and what the filter drops (by reason) and how many matching candidates it loses.

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

from core.agents import extractive  # noqa: E402
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


MATCH_F1 = 0.5


def _gold_by_turn(raw: dict) -> dict[str, list[str]]:
    """dia_id -> the gold observation facts citing it."""
    import re

    out: dict[str, list[str]] = {}
    for per_speaker in (raw.get("observation") or {}).values():
        for items in (per_speaker or {}).values():
            for item in items or []:
                if isinstance(item, (list, tuple)) and len(item) > 1 and isinstance(item[0], str):
                    for dia in re.findall(r"D\d+:\d+", str(item[1])):
                        out.setdefault(dia, []).append(item[0])
    return out


def locomo_split(path: Path, examples: int = 0) -> dict:
    """The filter's figures on one LoCoMo file (see the module docstring)."""
    from collections import Counter

    from core.locomo import parse_sample
    from training.eval.metrics import f1_score

    raw = json.loads(path.read_text(encoding="utf-8"))
    raw = raw[0] if isinstance(raw, list) else raw
    sample, gold = parse_sample(raw), _gold_by_turn(raw)
    saved = extractive.FILTER_FILLER
    try:
        extractive.FILTER_FILLER = False
        before = {t.dia_id: candidates(t.full_text) for t in sample.turns}
        extractive.FILTER_FILLER = True
        after = {t.dia_id: candidates(t.full_text) for t in sample.turns}
    finally:
        extractive.FILTER_FILLER = saved
    turns = {t.dia_id: t for t in sample.turns}

    def score(dia: str, cand: str) -> tuple[float, int]:
        t = turns[dia]
        fact = extractive.rewrite(cand, t.speaker, t.time)
        scores = [f1_score(fact, g) for g in gold.get(dia, [])]
        best = max(scores, default=0.0)
        return best, (scores.index(best) if scores else -1)

    def figures(cands: dict[str, list[str]]) -> dict:
        n = matched = 0
        covered: set[tuple[str, int]] = set()
        for dia, cs in cands.items():
            for c in cs:
                best, which = score(dia, c)
                n += 1
                if best >= MATCH_F1:
                    matched += 1
                    covered.add((dia, which))
        return {"candidates": n, "matching": matched, "gold_covered": len(covered),
                "turns_with_candidates": sum(bool(cs) for cs in cands.values())}

    dropped: Counter[str] = Counter()
    lost: Counter[str] = Counter()
    shown: list[str] = []
    for dia, cs in before.items():
        kept = set(after[dia])
        for c in cs:
            if c in kept:
                continue
            why = extractive.filler(c) or "other"
            dropped[why] += 1
            if score(dia, c)[0] >= MATCH_F1:
                lost[why] += 1
                shown.append(f"lost ({why}): {c}")
            elif len(shown) < examples:
                shown.append(f"dropped ({why}): {c}")
    return {"sample": sample.sample_id, "turns": len(sample.turns),
            "gold_facts": sum(len(v) for v in gold.values()),
            "before": figures(before), "after": figures(after),
            "dropped": dict(dropped.most_common()), "matching_lost": dict(lost.most_common()), "examples": shown}


def locomo(args) -> int:
    from benchmarks.grounding import DEFAULT_DATA

    data = args.data or DEFAULT_DATA
    report = {"match_f1": MATCH_F1, "max_content": extractive.FILLER_MAX_CONTENT}
    for split in ("train", "val"):
        r = report[split] = locomo_split(data / f"{split}.json", args.examples)
        b, a = r["before"], r["after"]
        print(f"{split} ({r['sample']}, {r['turns']} turns, {r['gold_facts']} gold fact citations)")
        for key in ("candidates", "matching", "gold_covered", "turns_with_candidates"):
            print(f"  {key:22s} {b[key]:5d} -> {a[key]:5d}")
        print(f"  dropped by reason: {r['dropped']}; matching candidates lost: {r['matching_lost'] or 0}")
        for line in r["examples"]:
            print(f"    {line}")
    if args.json:
        print(json.dumps(report))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--locomo", action="store_true", help="the filler filter on LoCoMo train/val (no model)")
    ap.add_argument("--data", type=Path, default=None, help="the LoCoMo folder (default ../shared/data/locomo)")
    ap.add_argument("--examples", type=int, default=0, help="with --locomo: print this many dropped candidates")
    args = ap.parse_args(argv)
    if args.locomo:
        return locomo(args)

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

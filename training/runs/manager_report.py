"""Figures for the Memory Manager's training states and reward, printed.

    .venv/bin/python -m training.runs.manager_report --states DIR [--max-states N]
        [--answer-adapter PATH] [--answer-tokens 160] [--f1-weight W] [--threads N] [--json]
    .venv/bin/python -m training.runs.manager_report --states DIR --decisions [--manager-adapter PATH]

`DIR` is a states folder (`memory-r1 train manager-states`, or <out>/states/states-* of a run).
Prints:
1. the states per kind and the operations the CURRENT manager applied at them (ADD / UPDATE /
   DELETE / NOOP), over all states and over the decision states (where the model is called);
2. the reward of three decisions per trainable state, scored by the frozen answerer (the
   embedded model through llama.cpp, or --answer-adapter): what the current manager did
   (`app_decision`), doing nothing (`{"memory": []}`), and ADDing every new fact; mean rewards;
3. the reward's cost per sample in seconds on this machine: uncached (every answer generated),
   and a repeat of the same samples (served by the caches).
With --decisions [--manager-adapter PATH] instead: the greedy, grammar-constrained decisions the
app would make at the decision states (op counts, new facts shown), e.g. before/after training.

Timings depend on the machine's load: the line with `load average` says what it was.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time


def candidates(state) -> dict[str, str]:
    """Decisions scored per state: the current manager's, nothing, ADD every fact."""
    n = len(state.shown_ids)
    add_all = {"memory": [{"id": str(n + i), "text": f, "event": "ADD"} for i, f in enumerate(state.decision_facts)]}
    out = {"current manager": state.app_decision or json.dumps({"memory": []}),
           "nothing": json.dumps({"memory": []}), "add all facts": json.dumps(add_all)}
    return out


def measure(states, answerer) -> dict:
    rows = []
    for s in states:
        for name, text in candidates(s).items():
            g0 = answerer.stats["generations"]
            d = answerer.score(text, s)
            rows.append({"state": s.id, "kind": s.kind, "decision": name, "reward": d.reward, "valid": d.valid,
                         "seconds": d.seconds, "generations": answerer.stats["generations"] - g0,
                         "questions": len(s.questions), "answers": d.answers})
    t0 = time.perf_counter()
    for s in states:  # the same samples again: caches only
        for text in candidates(s).values():
            answerer.score(text, s)
    cached = (time.perf_counter() - t0) / max(1, 3 * len(states))
    gen = [r for r in rows if r["generations"]]
    per_gen = [r["seconds"] / r["generations"] for r in gen]
    return {
        "rows": rows,
        "mean_reward": {name: round(statistics.mean(r["reward"] for r in rows if r["decision"] == name), 4)
                        for name in ("current manager", "nothing", "add all facts")},
        "seconds_per_sample": {"all": _stats([r["seconds"] for r in rows]),
                               "with_generation": _stats([r["seconds"] for r in gen]),
                               "per_generated_answer": _stats(per_gen), "cached_repeat": round(cached, 4)},
        "answerer": dict(answerer.stats), "answerer_seconds": {k: round(v, 2) for k, v in answerer.seconds.items()},
    }


def _stats(xs) -> dict:
    if not xs:
        return {"n": 0}
    return {"n": len(xs), "mean": round(statistics.mean(xs), 3), "p50": round(statistics.median(xs), 3),
            "max": round(max(xs), 3)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m training.runs.manager_report", description=__doc__.split("\n\n")[0])
    p.add_argument("--states", required=True, help="a states folder")
    p.add_argument("--max-states", type=int, help="score only the first N trainable states")
    p.add_argument("--selection", default="with-facts", choices=("decision", "with-facts"))
    p.add_argument("--answer-adapter", help="GGUF LoRA of a trained answerer")
    p.add_argument("--answer-tokens", type=int, default=160, help="greedy tokens per answer (default 160)")
    p.add_argument("--f1-weight", type=float, default=0.0,
                   help="add the answerer's token F1 x W to the EM reward (as reward_f1_weight; default 0)")
    p.add_argument("--threads", type=int, help="llama.cpp threads")
    p.add_argument("--json", action="store_true", help="also print one JSON object as the last line")
    p.add_argument("--decisions", action="store_true",
                   help="instead of rewards: the greedy, grammar-constrained decisions (as the app makes them) "
                        "of the manager (embedded, or --manager-adapter) at the decision states")
    p.add_argument("--manager-adapter", help="with --decisions: GGUF LoRA of a trained manager")
    args = p.parse_args(argv)
    if args.decisions:
        return _decisions(args)

    from training.data.manager import load_states, op_distribution
    from training.grpo.manager import select_states
    from training.rewards.manager import FrozenAnswerer

    states = load_states(args.states)
    dist = op_distribution(states)
    print(f"{len(states)} states; per kind: {json.dumps(dist['kinds'])}")
    print(f"ops of the current manager at the decision states: {json.dumps(dist['decision_states'])}")
    print(f"ops at all states: {json.dumps(dist['all_states'])}")
    chosen = select_states(states, args.selection)[: args.max_states]
    t0 = time.perf_counter()
    answerer = FrozenAnswerer.load(adapter=args.answer_adapter, threads=args.threads, max_tokens=args.answer_tokens,
                                   f1_weight=args.f1_weight)
    load_s = time.perf_counter() - t0
    try:
        figures = measure(chosen, answerer)
    finally:
        answerer.close()
    print(f"answerer loaded in {load_s:.1f} s; {len(chosen)} states scored, {sum(len(s.questions) for s in chosen)} "
          f"linked questions; load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs")
    print(f"mean reward (EM{f' + {args.f1_weight} x F1' if args.f1_weight else ''}): "
          f"{json.dumps(figures['mean_reward'])}")
    print(f"reward seconds per sample: {json.dumps(figures['seconds_per_sample'])}")
    print(f"answerer counters: {json.dumps(figures['answerer'])} {json.dumps(figures['answerer_seconds'])}")
    for r in figures["rows"]:
        print(f"  {r['state']:<14} {r['kind']:<10} {r['decision']:<16} reward {r['reward']:.2f} "
              f"{r['seconds']:6.2f}s  answers {r['answers']}")
    if args.json:
        print(json.dumps({"ops": dist, **{k: v for k, v in figures.items() if k != "rows"}}))
    return 0


def _decisions(args) -> int:
    from core.config import ModelSpec
    from core.embeddings import default_embedder
    from core.llm.runtime import load_backend
    from training.data.manager import load_states
    from training.grpo.manager import select_states
    from training.rewards.manager import greedy_decisions

    chosen = select_states(load_states(args.states), "decision")[: args.max_states]
    backend = load_backend(ModelSpec(adapter=args.manager_adapter, n_threads=args.threads))
    try:
        d = greedy_decisions(chosen, backend, default_embedder())
    finally:
        backend.close()
    print(f"manager {args.manager_adapter or 'embedded, no adapter'}: {d['states']} decision states, ops "
          f"{json.dumps(d['ops'])} for {d['facts']} new facts shown; failed: {d['failed']}")
    for r in d["rows"]:
        print(f"  {r['state']:<14} {r.get('error') or r['ops']}")
    if args.json:
        print(json.dumps({k: v for k, v in d.items() if k != "rows"}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

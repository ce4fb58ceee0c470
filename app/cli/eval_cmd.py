"""`memory-r1 eval locomo ...`, `memory-r1 eval extraction ...` and `memory-r1 eval compare DIR...`.

Registration imports nothing heavy: the evaluation (training/, llama.cpp, matplotlib) is
imported inside the command functions. Models default to the embedded SmolLM2-135M, not the
user's settings, so that a run is reproducible from the command line alone.
"""

from __future__ import annotations

import sys

from app.cli.options import (EXTRACTION_CHOICES, check_model_files, model_spec, add_cache_option, add_command,
                             add_command_group, add_data_option,
                             add_max_sessions_option, add_model_options, add_progress_option, add_samples_option,
                             add_threads_option, positive, samples_of)


def register(sub) -> None:
    esub = add_command_group(sub, "eval", help="evaluate memory on LoCoMo and compare runs",
                             description="Evaluate the assistant's memory on LoCoMo (Memory-R1's protocol).")

    lp = add_command(esub, run_locomo_cmd,
        "locomo", help="run the LoCoMo evaluation",
        description="Build the memory bank of each conversation with the Memory Manager, answer its "
                    "questions (categories 1-4) with the Answer Agent, score F1 / BLEU-1 / EM (and a "
                    "judge), and write predictions.jsonl, summary.json, report.md and plots. Banks are "
                    "cached; an interrupted run resumes when re-run with the same options.")
    add_data_option(lp, help="LoCoMo JSON file (e.g. val.json)")
    add_samples_option(lp)
    lp.add_argument("--max-questions", type=positive, metavar="N", help="evaluate only the first N questions")
    add_max_sessions_option(lp)
    lp.add_argument("--system", default="memory-r1", metavar="NAME",
                    help="memory-r1 | no-distill | rag | full-context, a comma-separated list, or 'all' "
                         "(several systems: one sub-folder each plus a comparison)")
    add_model_options(lp, title="models", default="the embedded SmolLM2-135M", n_ctx_default=4096, judge=True,
                      gate=True)
    lp.add_argument("--no-sources", action="store_true",
                    help="answer from the memories alone, without quotes of their source turns (the paper's "
                         "answer prompt)")
    lp.add_argument("--out", metavar="DIR", help="output folder (default: <data dir>/eval/<data>-<options>[/<system>])")
    add_cache_option(lp)
    lp.add_argument("--fresh", action="store_true", help="discard earlier predictions in the output folder")
    add_progress_option(lp)

    xp = add_command(esub, run_extraction_cmd, "extraction", help="score the fact extractor alone against gold facts",
                     description="Run only the Memory Manager's fact extraction (no decisions, no answers) over "
                                 "the turns of a LoCoMo file and print precision and recall of the facts against "
                                 "the gold facts (`observation`) cited to the same turn (a match: token F1 >= "
                                 "0.5). In extractive mode also the 'keep all candidates' and the gold-choice "
                                 "(oracle) baselines, which need no model.")
    add_data_option(xp, help="LoCoMo JSON file with observations (e.g. val.json)")
    add_samples_option(xp)
    xp.add_argument("--max-turns", type=positive, metavar="N", help="only the first N turns")
    add_max_sessions_option(xp)
    g = xp.add_argument_group("model")
    g.add_argument("--manager-model", metavar="PATH", help="GGUF of the extractor (default: the embedded SmolLM2-135M)")
    g.add_argument("--manager-adapter", metavar="PATH", help="GGUF LoRA adapter for it")
    g.add_argument("--manager-extraction", choices=EXTRACTION_CHOICES, default="auto", metavar="free|extractive|auto",
                   help="extraction mode (default auto: extractive for a model under 1B parameters)")
    g.add_argument("--n-ctx", type=positive, default=4096, metavar="N", help="context size in tokens (default 4096)")
    add_threads_option(g)
    xp.add_argument("--no-baselines", action="store_true", help="skip the keep-all and oracle baselines")
    xp.add_argument("--out", metavar="FILE", help="also write the scores and every turn's facts as JSON")
    add_progress_option(xp)

    cp = add_command(esub, run_compare_cmd, "compare", help="compare evaluation runs side by side",
                         description="Print a side-by-side table of evaluation output folders and write "
                                     "comparison.md and comparison.png.")
    cp.add_argument("dirs", nargs="+", metavar="DIR", help="output folders of `eval locomo`")
    cp.add_argument("--out", metavar="DIR", help="where to write the comparison (default: the first DIR's parent)")


def _config(args):
    from training.eval.runner import EvalConfig, parse_systems

    samples = samples_of(args)
    return EvalConfig(
        data=args.data, systems=parse_systems(args.system), samples=samples or None,
        max_questions=args.max_questions, max_sessions=args.max_sessions, out=args.out,
        cache_dir=args.cache_dir, answer_model=model_spec(args, "answer"),
        manager_model=model_spec(args, "manager"), judge_model=args.judge_model,
        manager_extraction=args.manager_extraction or "auto", gate=not args.no_gate, sources=not args.no_sources,
        fresh=args.fresh, progress=not args.no_progress)


def run_locomo_cmd(args) -> int:
    check_model_files(args)  # before the evaluation (training, llama.cpp) is imported
    from training.eval.runner import run_locomo, system_out

    config = _config(args)
    results = run_locomo(config)
    for system, summary in results.items():
        o = summary["overall"]
        judge = f"  judge {100 * o['judge']:.2f}" if o.get("judge") is not None else ""
        ing = summary.get("ingestion") or {}
        bank = ""
        if ing.get("kind") == "memory":
            audit = ing.get("audit") or {}
            share = audit.get("unsupported_share")
            bank = (f"  memories {ing['memories']}  rejected {ing.get('rejected', 0)}  unsupported "
                    f"{'-' if share is None else f'{100 * share:.1f}%'}")
            ex = ing.get("extraction")
            if ex:
                bank += f"  kept facts P {_pct(ex['precision'], 1)} R {_pct(ex['recall'], 1)}"
        recall = summary.get("evidence_recall")
        evidence = "" if recall is None else f"  evidence {100 * recall:.1f}%"
        print(f"{system:13s} n={o['n']:4d}  F1 {100 * o['f1']:6.2f}  BLEU-1 {100 * o['bleu1']:6.2f}  "
              f"EM {100 * o['em']:6.2f}{judge}{evidence}{bank}  -> {system_out(config, system)}")
    return 0


def _pct(x, digits: int = 2) -> str:
    return "-" if x is None else f"{100 * x:.{digits}f}%"


def run_extraction_cmd(args) -> int:
    check_model_files(args)  # before llama.cpp is imported
    import time

    from app.cli.options import check_input_file
    from core.fileio import atomic_write_json
    from core.llm import runtime
    from training.data.gold_facts import load_gold
    from training.eval.extraction import run_extraction

    samples = load_gold(check_input_file(args.data, "LoCoMo file"), samples_of(args) or None)
    spec = model_spec(args, "manager")
    start = time.perf_counter()
    backend = runtime.load_backend(spec)
    load_s = time.perf_counter() - start
    bar = None
    try:
        if not args.no_progress:
            from tqdm import tqdm

            total = sum(len(s.turns_upto(args.max_sessions)) for s, _ in samples)
            bar = tqdm(total=min(total, args.max_turns or total), desc="extract", unit="turn", dynamic_ncols=True)
        result = run_extraction(samples, backend, extraction=args.manager_extraction, max_turns=args.max_turns,
                                max_sessions=args.max_sessions, baselines=not args.no_baselines,
                                on_turn=(lambda: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
        backend.close()
    first = result["model"]
    print(f"extraction {result['extraction']}: {first['turns']} turns, {first['turns_with_gold']} with gold "
          f"facts ({first['gold']} gold facts; match {first['match']}); model loaded in {load_s:.1f} s")
    for name, label in (("model", "model"), ("keep_all", "keep all"), ("oracle", "oracle")):
        s = result.get(name)
        if s is None:
            continue
        print(f"{label:9s} P {_pct(s['precision']):>7s} ({s['correct']}/{s['proposed']})  R {_pct(s['recall']):>7s} "
              f"({s['recalled']}/{s['gold']})  F1 {_pct(s['f1']):>7s}  {s['seconds']:.1f} s"
              + (f"  failures {s['failures']}" if s["failures"] else ""))
    if args.out:
        atomic_write_json(args.out, {**result, "load_s": round(load_s, 3), "data": str(args.data)})
        print(f"wrote {args.out}")
    return 0


def run_compare_cmd(args) -> int:
    from pathlib import Path

    from training.eval.report import compare_runs

    out = args.out or str(Path(args.dirs[0]).resolve().parent)
    table, files = compare_runs(args.dirs, out)
    sys.stdout.write(table)
    print("wrote " + ", ".join(str(f) for f in files))
    return 0

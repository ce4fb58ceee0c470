"""`memory-r1 train manager ...` and `memory-r1 train manager-states ...`.

`register_manager(train_subparsers)` adds both to the `train` group. Registration imports
nothing heavy: torch, trl, peft and llama_cpp load inside the command functions.

    memory-r1 train manager --data FILE --base embedded|PATH --out DIR [--answer-adapter PATH]
                            [--init-adapter DIR] [--max-steps N] [--config FILE]
    memory-r1 train manager-states --data FILE --out DIR [--max-states N]

`--data` is a LoCoMo JSON (the states are built with the current manager, cached) or a states
folder written by `train manager-states`. Export the result with `memory-r1 export --adapter
<out>/best --out manager-lora.gguf` and use it with `--manager-adapter`.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.cli.options import (check_model_files, model_spec, add_command, add_data_option, add_max_sessions_option,
                             add_progress_option,
                             add_samples_option, add_threads_option, add_training_options, positive, samples_of,
                             time_budget_s, validation_path)


def _state_args(p) -> None:
    p.add_argument("--manager-model", metavar="PATH",
                   help="GGUF of the manager that builds the states' banks (default: embedded)")
    p.add_argument("--manager-adapter", metavar="PATH", help="GGUF LoRA adapter of that manager")
    add_max_sessions_option(p)
    p.add_argument("--max-states", type=positive, metavar="N",
                   help="stop each conversation's pass at its N-th evidence turn (quick CPU runs)")
    add_samples_option(p)
    add_threads_option(p)
    add_progress_option(p)


def register_manager(tsub) -> None:
    """Add `manager` and `manager-states` to the `train` sub-commands."""
    mp = add_command(tsub, run_train_manager,
        "manager", help="train a LoRA adapter for the Memory Manager",
        description="GRPO + LoRA on the Memory Manager's decisions at the evidence turns of a LoCoMo "
                    "file (reward: exact match of a frozen Answer Agent after applying the sampled "
                    "operations to a copy of the bank). Writes <out>/best and <out>/final (PEFT "
                    "adapters), log.csv, log.json, curve.png and summary.json.")
    add_data_option(mp, help="LoCoMo JSON (e.g. train.json; states are built and cached) or a states folder")
    add_training_options(mp, what="states folder",
                         config_help="JSON file of ManagerTrainConfig settings (training/config.py + "
                                     "training/grpo/manager.py)",
                         budget_help="stop (cleanly, with validation and saving) after MIN minutes of training "
                                     "(validation time not counted)")
    mp.add_argument("--answer-adapter", metavar="PATH",
                    help="GGUF LoRA adapter of a trained Answer Agent for the frozen answerer "
                         "(default: the untrained embedded model, as in the paper's first stage)")
    mp.add_argument("--init-adapter", metavar="DIR",
                    help="start from this PEFT LoRA adapter folder (e.g. `train sft --role manager`'s "
                         "<out>/best), trained further; its meta must name this base, the manager role and "
                         "the current prompts. The KL reference is this start (TRL keeps a frozen copy of it)")
    mp.add_argument("--eval-states", type=positive, metavar="N",
                    help="validation states per evaluation (default: the config's; 0 there = all)")
    mp.add_argument("--states-cache", metavar="DIR", help="where states are built (default: <out>/states)")
    _state_args(mp)

    sp = add_command(tsub, run_manager_states,
        "manager-states", help="build the Memory Manager's training states",
        description="One pass of the current manager over each conversation, snapshotting the bank at "
                    "every evidence turn of a scored question; prints the states per kind and the "
                    "operations the manager applied there.")
    add_data_option(sp)
    sp.add_argument("--out", required=True, metavar="DIR", help="states cache folder")
    _state_args(sp)


def _states(path: str, args, cache: Path):
    from training.data.manager import states_from

    check_model_files(args)  # before the data is read or any model loads
    spec = model_spec(args, "manager")
    return states_from(path, cache=cache, manager_model=spec, samples=samples_of(args),
                       max_sessions=args.max_sessions, max_states=args.max_states, progress=not args.no_progress)


def run_manager_states(args) -> int:
    from training.data.manager import op_distribution

    states, reports = _states(args.data, args, Path(args.out))
    dist = op_distribution(states)
    seconds = sum(r.seconds for r in reports)
    turns = sum(r.turns for r in reports)
    print(f"{len(states)} states from {turns} turns ({seconds:.0f} s of manager time) in {args.out}")
    print("states per kind: " + json.dumps(dist["kinds"]))
    print("ops the current manager applied at the decision states: " + json.dumps(dist["decision_states"]))
    print("ops at all states: " + json.dumps(dist["all_states"]))
    return 0


def run_train_manager(args) -> int:
    from training.grpo.manager import config_from

    config = config_from(args.config, max_steps=args.max_steps, threads=args.threads,
                         eval_max_questions=args.eval_states)
    if args.init_adapter:  # a bad warm-start folder is said before any data or model loads
        from training.grpo.loop import adapter_meta

        adapter_meta(args.init_adapter)
    out = Path(args.out)
    cache = Path(args.states_cache) if args.states_cache else out / "states"
    train, _ = _states(args.data, args, cache)
    val_path = validation_path(args, folders=True)
    val = _states(str(val_path), args, cache)[0] if val_path else []
    from training.grpo.manager import train_manager

    result = train_manager(config, train, val, out_dir=out, base=args.base, answer_adapter=args.answer_adapter,
                           progress=not args.no_progress, time_budget_s=time_budget_s(args),
                           init_adapter=args.init_adapter)

    def fmt(s):
        if not s or s.get("f1") is None:
            return "n/a"
        return (f"answer F1 {100 * s['f1']:.2f}, EM {100 * s['em']:.2f}, valid {100 * s['valid']:.0f}% "
                f"(step {s.get('step')})")

    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; validation before: "
          f"{fmt(result.baseline)}; best: {fmt(result.best)}")
    from training.grpo.loop import describe_signal

    print(f"reward: {json.dumps(result.reward_stats)}")
    if args.init_adapter:
        print(f"warm start: {args.init_adapter}")
    print(describe_signal(result.summary))
    has_best = (result.best_dir / "adapter_config.json").is_file()
    chosen = result.best_dir if has_best else result.final_dir
    print(f"adapters: {f'{result.best_dir} (best), ' if has_best else ''}{result.final_dir} (final); "
          f"logs: {out / 'log.csv'}, {out / 'curve.png'}")
    print(f"export: memory-r1 export --adapter {chosen} --out {out / 'manager-lora.gguf'}")
    print("use it: memory-r1 chat --manager-adapter manager-lora.gguf")
    return 0

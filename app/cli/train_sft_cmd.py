"""`memory-r1 train sft --role answer|manager ...`: the supervised LoRA warm start (issue 16).

`register_sft(train_subparsers)` adds it to the `train` group. Registration imports nothing
heavy: torch and peft load inside the command function.

    memory-r1 train sft --role answer --data FILE --out DIR [--val FILE | --val-data FILE | --no-val]
                        [--config FILE] [--time-budget MIN] [--threads N] [--max-examples N]
                        [--max-empty-share X] [--match-threshold F]   (--role manager)

`--role answer`: `--data` is a LoCoMo JSON (banks built/cached as `train data` does) or the
examples .jsonl `memory-r1 train data` writes; the pairs are `training.data.sft_answer`'s
(the evaluation's exact answer prompt with source quotes; the evidence turns' memories as the
selection, then the gold answer). `--role manager`: the pairs come from
`training.data.sft_manager.build_pairs` (the extraction choices; `--max-empty-share` drops
empty choices beyond that share of the training and validation pairs, `--match-threshold` sets
the gold-match F1). Export the result
with `memory-r1 export --adapter <out>/best --out <role>-sft-lora.gguf`.
"""

from __future__ import annotations

import json
from pathlib import Path

from app.cli.options import (add_command, add_threads_option, add_training_options, fraction_above_zero, positive,
                             share, time_budget_s)


def register_sft(tsub) -> None:
    """Add `sft` to the `train` sub-commands."""
    from app.cli.train_cmd import data_args

    sp = add_command(tsub, run_train_sft,
        "sft", help="supervised LoRA warm start of the answer agent or the memory manager",
        description="Supervised fine-tuning (LoRA) on LoCoMo's gold targets in the app's exact prompts: "
                    "--role answer trains the answer agent on the evidence memories then the gold answer; "
                    "--role manager the memory manager's extraction/decisions. Loss on the target tokens "
                    "only; validation loss on --val selects <out>/best and stops. Writes <out>/best, "
                    "<out>/final, log.csv, log.json and summary.json.")
    sp.add_argument("--role", required=True, choices=("answer", "manager"), help="the agent to train")
    sp.add_argument("--data", required=True, metavar="FILE",
                    help="LoCoMo JSON (e.g. train.json) or, for --role answer, examples .jsonl from `train data`")
    add_training_options(sp, what="examples .jsonl",
                         config_help="JSON file of SFTConfig settings (training/sft/loop.py; e.g. "
                                     "training/configs/sft_cpu.json)",
                         budget_help="stop cleanly after MIN minutes of training (validation time not counted)")
    sp.add_argument("--val-data", dest="val", metavar="FILE", help="the same as --val")
    sp.add_argument("--max-examples", type=positive, metavar="N",
                    help="train on the first N pairs only (quick runs)")
    sp.add_argument("--no-evidence", choices=("empty", "skip"), default="empty",
                    help="--role answer, a question whose shown memories hold no evidence turn: the empty "
                         "selection then the gold answer (default) or leave it out")
    sp.add_argument("--max-empty-share", type=share, metavar="X",
                    help="--role manager: keep empty choices {\"keep\": []} to at most this share (0..1) of the "
                         "pairs, the rest dropped (a seeded sample kept; default: the config's, 1 = all)")
    sp.add_argument("--match-threshold", type=fraction_above_zero, metavar="F",
                    help="--role manager: token F1 from which a candidate matches a gold fact (default: the "
                         "config's, 0.5)")
    add_threads_option(sp, "torch CPU threads")
    data_args(sp)


def _answer_pairs(path: str, args, data_dir: Path) -> tuple[list[dict], dict]:
    from app.cli.train_cmd import answer_examples

    from training.config import TrainConfig
    from training.data.sft_answer import answer_pairs

    k = args.k or TrainConfig().retrieve_k
    pairs, counts = answer_pairs(answer_examples(path, args, k, data_dir), no_evidence=args.no_evidence)
    return pairs, counts.to_dict()


def _manager_pairs(path: str, args, config) -> tuple[list[dict], dict]:
    from app.cli.options import samples_of
    from training.data.sft_manager import balance_empty, build_pairs

    stats: dict = {"match_threshold": config.match_threshold}
    pairs = build_pairs(path, samples=samples_of(args), max_sessions=args.max_sessions,
                        threshold=config.match_threshold, stats=stats)
    pairs, stats["balance"] = balance_empty(pairs, config.max_empty_share, config.seed)
    return pairs, stats


def run_train_sft(args) -> int:
    from app.cli.options import check_input_file, check_model_files, validation_path
    from app.cli.train_cmd import offline

    offline()
    check_model_files(args)  # a bad --manager-model is said before anything loads
    check_input_file(args.data, "data file")
    from training.sft.loop import SFTConfig

    config = SFTConfig.from_file(args.config) if args.config else SFTConfig()
    config = config.with_overrides(role=args.role, base=args.base, threads=args.threads,
                                   max_steps=args.max_steps, time_budget_s=time_budget_s(args),
                                   max_empty_share=args.max_empty_share, match_threshold=args.match_threshold)
    if args.role != "manager" and (args.max_empty_share is not None or args.match_threshold is not None):
        from core.errors import InvalidInputError

        raise InvalidInputError("--max-empty-share and --match-threshold are for --role manager only.")
    val_path = validation_path(args)
    out = Path(args.out)
    data_dir = out / "data"
    if args.role == "answer":
        pairs, counts = _answer_pairs(args.data, args, data_dir)
        val, val_counts = _answer_pairs(str(val_path), args, data_dir) if val_path else ([], {})
    else:
        pairs, counts = _manager_pairs(args.data, args, config)
        val, val_counts = _manager_pairs(str(val_path), args, config) if val_path else ([], {})
    if args.max_examples:
        pairs = pairs[:args.max_examples]
    print(f"{len(pairs)} training pairs ({json.dumps(counts)}), {len(val)} validation pairs")
    from training.sft.loop import train_sft

    notes = {"train": counts, "val": val_counts, "max_examples": args.max_examples}
    res = train_sft(config, pairs, out, val_pairs=val, progress=not args.no_progress, data_notes=notes)
    from core.fileio import atomic_write_json

    atomic_write_json(out / "data" / "pair_counts.json", {"train": counts, "val": val_counts})
    best = (res.get("validation") or {}).get("best") or {}
    base = (res.get("validation") or {}).get("baseline") or {}
    secs = res["seconds"]
    print(f"trained {res['steps']} steps ({res['examples_seen']} examples, stop: {res['stop']}) in "
          f"{secs['train'] / 60:.1f} min ({res['seconds_per_example']} s/example); loss {res['first_loss']} -> "
          f"{res['last_loss']}; validation loss {base.get('val_loss', 'n/a')} -> best {best.get('val_loss', 'n/a')} "
          f"(step {best.get('step', 'n/a')})")
    chosen = res["best_dir"] or res["final_dir"]
    print(f"adapters: {res['best_dir'] or '(no validation)'} (best), {res['final_dir']} (final); "
          f"logs: {out / 'log.csv'}, {out / 'summary.json'}")
    print(f"export: memory-r1 export --adapter {chosen} --out {out / (args.role + '-sft-lora.gguf')}")
    return 0

"""`memory-r1 train answer|data ...` and `memory-r1 export ...`.

Registration imports nothing heavy: torch, transformers, trl, peft and llama_cpp are imported
inside the command functions (training is never loaded by chatting).

    memory-r1 train answer --data FILE --base embedded|PATH --out DIR [--init-adapter DIR]
                          [--max-steps N] [--config FILE]
    memory-r1 train data --data FILE --out FILE.jsonl
    memory-r1 train sft --role answer|manager --data FILE --out DIR   (app/cli/train_sft_cmd.py)
    memory-r1 export --adapter DIR --out FILE.gguf [--lora | --merge --quant Q4_K_M]

Several GPUs: `accelerate launch --config_file training/accelerate/multi_gpu.yaml
-m app train answer ...` (the same entry point; see training/accelerate/README.md).
"""

from __future__ import annotations

from pathlib import Path

from app.cli.options import (check_model_files, add_cache_option, add_command, add_command_group, add_data_option,
                             add_max_sessions_option, add_progress_option, add_samples_option, add_threads_option,
                             add_training_options, positive, samples_of, time_budget_s, validation_path)


def data_args(p) -> None:
    p.add_argument("--bank", choices=("memory", "turns"), default="memory",
                   help="memories from the Memory Manager's bank (default, as the paper) or the raw "
                        "dialogue turns (a quick CPU shortcut: no manager model is run)")
    p.add_argument("--k", type=positive, default=None, metavar="N",
                   help="memories retrieved per question (default: the config's retrieve_k, 60)")
    add_max_sessions_option(p)
    add_samples_option(p)
    add_cache_option(p)
    p.add_argument("--manager-model", metavar="PATH", help="GGUF of the Memory Manager (default: embedded)")
    add_progress_option(p)


def register(sub) -> None:
    tsub = add_command_group(sub, "train", help="train the Answer Agent with GRPO + LoRA",
                             description="Reinforcement-learning training of the Answer Agent (Memory-R1, GRPO).")

    ap = add_command(tsub, run_train_answer,
        "answer", help="train a LoRA adapter for the Answer Agent",
        description="GRPO + LoRA on the answer prompts of a LoCoMo file (reward: exact match of the "
                    "answer after **Answer:**). Writes <out>/best and <out>/final (PEFT adapters), "
                    "log.csv, log.json, curve.png and summary.json. Export with `memory-r1 export`.")
    add_data_option(ap, help="LoCoMo JSON (e.g. train.json; banks are built/cached) or examples .jsonl "
                         "from `train data`")
    add_training_options(ap, what="examples .jsonl",
                         config_help="JSON file of TrainConfig settings (training/config.py)",
                         budget_help="stop cleanly (final validation, saving) after MIN minutes of training "
                                     "(validation time not counted)")
    ap.add_argument("--eval-questions", type=positive, metavar="N",
                    help="validation questions per evaluation (default: the config's; 0 there = all)")
    ap.add_argument("--init-adapter", metavar="DIR",
                    help="start from this PEFT LoRA adapter folder (e.g. `train sft`'s <out>/best), trained "
                         "further; its meta must name this base, the answer role and the current prompts. "
                         "The KL reference is this start (TRL keeps a frozen copy of it)")
    add_threads_option(ap, "torch CPU threads")
    data_args(ap)

    dp = add_command(tsub, run_train_data, "data", help="build the Answer Agent's training examples (JSONL)",
                         description="Build the memory banks (cached) and write one answer-prompt "
                                     "example per question of categories 1-4.")
    add_data_option(dp)
    dp.add_argument("--out", required=True, metavar="FILE", help="examples .jsonl to write")
    data_args(dp)

    ep = add_command(sub, run_export,
        "export", help="export a trained adapter to GGUF for llama.cpp",
        description="Write a trained LoRA adapter as a GGUF LoRA adapter (default; served with the "
                    "base GGUF) or, with --merge, as one merged model file quantised with llama.cpp. "
                    "A <name>.meta.json is written beside the export.")
    ep.add_argument("--adapter", required=True, metavar="DIR", help="adapter folder (e.g. <train out>/best)")
    ep.add_argument("--out", required=True, metavar="FILE.gguf", help="GGUF file to write")
    mode = ep.add_mutually_exclusive_group()
    mode.add_argument("--lora", action="store_true", help="a GGUF LoRA adapter (default)")
    mode.add_argument("--merge", action="store_true", help="one model file: base + adapter, quantised")
    ep.add_argument("--quant", default="Q4_K_M", choices=("Q4_K_M", "Q5_K_M", "Q8_0", "F16"),
                    help="merged model type (default Q4_K_M; must differ from the base's)")
    ep.add_argument("--base", metavar="embedded|PATH",
                    help="base model (default: the one recorded by the trainer)")
    ep.add_argument("--dtype", choices=("f32", "f16"), default="f32", help="adapter tensor type (default f32)")
    ep.add_argument("--threads", type=positive, metavar="N", help="quantisation threads")
    from app.cli import train_manager_cmd, train_sft_cmd

    train_manager_cmd.register_manager(tsub)  # `train manager`, `train manager-states`
    train_sft_cmd.register_sft(tsub)  # `train sft`


def answer_examples(path: str, args, k: int, cache_folder: Path | None):
    """The Answer Agent's examples of `path` (a LoCoMo JSON, built and cached in
    `cache_folder`, or an examples .jsonl) with the command line's bank options."""
    from core.config import ModelSpec
    from training.data.answer import examples_from

    p = Path(path)
    cache = None
    if cache_folder is not None and p.suffix != ".jsonl":
        tag = f"{p.stem}-{args.bank}-k{k}" + (f"-s{args.max_sessions}" if args.max_sessions else "")
        if args.samples:
            tag += "-" + "+".join(samples_of(args))
        cache = cache_folder / f"{tag}.jsonl"
    return examples_from(p, cache=cache, k=k, bank=args.bank, samples=samples_of(args),
                         max_sessions=args.max_sessions, cache_dir=args.cache_dir,
                         manager_model=ModelSpec(path=args.manager_model), progress=not args.no_progress)


def offline() -> None:
    """Training and export never use the network (set before transformers/peft are imported)."""
    import os

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def run_train_answer(args) -> int:
    offline()
    check_model_files(args)  # a bad --manager-model is said before anything loads
    from training.config import TrainConfig

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.with_overrides(max_steps=args.max_steps, threads=args.threads, retrieve_k=args.k,
                                   eval_max_questions=args.eval_questions)
    if args.init_adapter:  # a bad warm-start folder is said before any data or model loads
        from training.grpo.loop import adapter_meta

        adapter_meta(args.init_adapter)
    out = Path(args.out)
    data_dir = out / "data"
    train = answer_examples(args.data, args, config.retrieve_k, data_dir)
    val_path = validation_path(args)
    val = answer_examples(str(val_path), args, config.retrieve_k, data_dir) if val_path else []
    from training.grpo.answer import train_answer_agent

    result = train_answer_agent(config, train, val, out_dir=out, base=args.base, progress=not args.no_progress,
                                time_budget_s=time_budget_s(args), init_adapter=args.init_adapter)
    b, best = result.baseline, result.best

    def fmt(s):
        return "n/a" if not s or s.get("f1") is None else f"F1 {100 * s['f1']:.2f} (step {s.get('step')})"

    from training.grpo.loop import describe_signal

    print(f"trained {result.steps} steps in {result.seconds / 60:.1f} min; validation before: {fmt(b)}, "
          f"best: {fmt(best)}")
    if args.init_adapter:
        print(f"warm start: {args.init_adapter}")
    print(describe_signal(result.summary))
    print(f"adapters: {result.best_dir} (best), {result.final_dir} (final); logs: {out / 'log.csv'}, "
          f"{out / 'curve.png'}")
    print(f"export: memory-r1 export --adapter {result.best_dir} --out {out / 'answer-lora.gguf'}")
    return 0


def run_train_data(args) -> int:
    offline()
    check_model_files(args)
    from training.data.answer import save_examples
    from training.config import TrainConfig

    k = args.k or TrainConfig().retrieve_k
    examples = answer_examples(args.data, args, k, None)
    path = save_examples(examples, args.out)
    with_evidence = sum(1 for e in examples if e.get("evidence_retrieved"))
    mean_mem = sum(len(e["memories"]) for e in examples) / max(1, len(examples))
    print(f"{len(examples)} examples ({mean_mem:.1f} memories each, evidence retrieved for {with_evidence}) "
          f"-> {path}")
    return 0


def run_export(args) -> int:
    offline()
    from training.export.gguf import export_lora, export_merged, meta_path

    if args.merge:
        out = export_merged(args.adapter, args.out, base=args.base, quant=args.quant, threads=args.threads)
    else:
        out = export_lora(args.adapter, args.out, base=args.base, dtype=args.dtype)
    import json

    size = out.stat().st_size / 1e6
    print(f"wrote {out} ({size:.1f} MB) and {meta_path(out)}")
    role = json.loads(meta_path(out).read_text(encoding="utf-8")).get("role") or "answer"
    if not args.merge:
        print(f"use it: memory-r1 chat --{role}-adapter {out}   (with the base model it was trained on)")
    else:
        print(f"use it: memory-r1 chat --{role}-model {out}")
    return 0

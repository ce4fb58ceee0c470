"""The paper's staged training chain (method.md §2, step 4), end to end.

    .venv/bin/python -m training.runs.staged --out runs/staged [--max-states N] [--max-sessions N]
        [--manager-config FILE] [--answer-config FILE] [--threads N] [--eval]
    run_staged(["--smoke", "--out", "/tmp/smoke"], stand_ins=SmokeStandIns(...))  # CPU, tiny model, ~1-2 min

1. Manager states from the training conversation, built by the CURRENT (untrained) manager
   (`training.data.manager`), for train and (unless --no-val) validation.
2. The Memory Manager trained with GRPO + LoRA against the FROZEN UNTRAINED answerer
   (`training.grpo.manager.train_manager`), exported to `<out>/manager-lora.gguf`.
3. The Answer Agent trained with GRPO + LoRA (`training.grpo.answer.train_answer_agent`) on banks
   built by the TRAINED manager (base GGUF + manager-lora.gguf, through llama.cpp), exported to
   `<out>/answer-lora.gguf`.
4. With --eval: the paper's ablation on the validation conversation (full pipeline F1/BLEU-1
   for untrained, answer-only, manager-only, both), via `training.eval.runner.run_locomo`.
`<out>/staged.json` records every path, figure and time.

--smoke runs the same chain on a synthetic two-speaker conversation (no LoCoMo text) with a
random-weight 2-layer LLaMA that uses the real SmolLM2 tokenizer (`training.models.tiny_llama`),
written as a GGUF for llama.cpp, and the stand-ins the caller passes (`SmokeStandIns`: a fast
embedder and a backend scripted with `scripted_manager` for the "current manager" of stage 1; a
random model extracts no facts, so it would leave nothing to train). The test suite passes the
project's fakes (tests/training/grpo/test_manager_training.py); training never imports them.
Everything else is real: TRL, PEFT, the GGUF export, llama.cpp answering and ingesting with the
trained adapter. It checks the plumbing, not learning (rewards are 0 on a random model).

Runs in the calling thread; UserError subclasses for bad input.
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- the smoke world

SMOKE_TIME = "10:00 am on 3 March, 2024"
SMOKE_TURNS = [
    ("Ann", "I adopted a puppy named Biscuit."),
    ("Bob", "Congrats! I moved to Lisbon for a job at a bank."),
    ("Ann", "Biscuit loves fetch in the park."),
    ("Bob", "I started surfing lessons in Lisbon."),
    ("Ann", "My sister Clara is a nurse in Porto."),
    ("Bob", "I ran a half marathon last week."),
]
SMOKE_QA = [
    {"question": "What is the name of Ann's puppy?", "answer": "Biscuit", "evidence": ["D1:1"], "category": 4},
    {"question": "Where did Bob move?", "answer": "Lisbon", "evidence": ["D1:2"], "category": 4},
    {"question": "What does Biscuit love?", "answer": "fetch", "evidence": ["D1:3"], "category": 4},
    {"question": "What is Clara's job?", "answer": "nurse", "evidence": ["D1:5"], "category": 1},
]


def smoke_sample(sample_id: str) -> dict:
    return {"sample_id": sample_id, "qa": SMOKE_QA, "conversation": {
        "speaker_a": "Ann", "speaker_b": "Bob", "session_1_date_time": SMOKE_TIME,
        "session_1": [{"speaker": s, "dia_id": f"D1:{i + 1}", "text": t} for i, (s, t) in enumerate(SMOKE_TURNS)]}}


def scripted_manager(messages, schema) -> str:
    """The smoke's stand-in manager: one fact per message; NONE for shown memories, ADD for facts."""
    import re

    from core.agents import prompts
    user = messages[-1]["content"]
    if messages[0]["content"] == prompts.FACT_EXTRACTION_SYSTEM:
        speaker = re.search(r"Speaker: (.*)", user).group(1).strip()
        said = re.search(r"Message: (.*)", user).group(1).strip()
        return json.dumps({"facts": [f"{speaker} said: {said}"]})
    shown = json.loads(re.search(r"Existing memories:\n(.*)\n", user).group(1))
    facts = json.loads(re.search(r"New facts:\n(.*)", user).group(1))
    items = [{"id": m["id"], "text": m["text"], "event": "NONE"} for m in shown]
    items += [{"id": str(len(shown) + i), "text": f, "event": "ADD"} for i, f in enumerate(facts)]
    return json.dumps({"memory": items})


# --------------------------------------------------------------------------- environments


@dataclass
class SmokeStandIns:
    """What the smoke run takes from its caller: an `Embedder` and a zero-argument factory of
    the `ChatBackend` that plays stage 1's current manager (scripted with `scripted_manager`)."""

    embedder: object
    manager_backend: Callable[[], object]


@dataclass
class Env:
    """What differs between the real chain and the smoke: data, models, embedder, settings."""

    train_data: Path
    val_data: Path | None
    embedder: object
    manager_config: object  # ManagerTrainConfig
    answer_config: object  # TrainConfig
    base: str  # what the trainers load ("embedded", a GGUF or an HF folder)
    base_gguf: Path  # the GGUF llama.cpp runs (adapters are exported against it)
    states_backend: Callable[[], object] | None  # None: the manager model via llama.cpp
    manager_id: str | None
    model_factory: Callable[[], tuple] | None  # None: the trainers load `base`
    base_meta: dict | None
    threads: int | None
    answerer_factory: Callable[[str | None, str | None], object] | None  # (manager_adapter, answer_adapter)


def real_env(args) -> Env:
    from core.embeddings import default_embedder
    from core.paths import embedded_gguf, repo_root
    from training.config import TrainConfig
    from training.grpo.manager import ManagerTrainConfig

    data = repo_root().parent / "shared" / "data" / "locomo"
    mc = ManagerTrainConfig.from_file(args.manager_config) if args.manager_config else ManagerTrainConfig()
    ac = TrainConfig.from_file(args.answer_config) if args.answer_config else TrainConfig()
    mc = mc.with_overrides(threads=args.threads, max_steps=args.manager_steps)
    ac = ac.with_overrides(threads=args.threads, max_steps=args.answer_steps)
    return Env(Path(args.data or data / "train.json"), None if args.no_val else Path(args.val or data / "val.json"),
               default_embedder(), mc, ac, args.base, Path(args.base_gguf) if args.base_gguf else embedded_gguf(),
               None, None, None, None, args.threads, None)


def smoke_env(out: Path, stand_ins: SmokeStandIns) -> Env:
    from core.paths import embedded_gguf
    from core.llm.runtime import LlamaBackend
    from training.config import TrainConfig
    from training.export.gguf_io import write_hf_model_gguf
    from training.grpo.manager import ManagerTrainConfig
    from training.rewards.manager import FrozenAnswerer
    from training.models import tiny_llama

    out.mkdir(parents=True, exist_ok=True)
    train, val = out / "smoke-train.json", out / "smoke-val.json"
    train.write_text(json.dumps([smoke_sample("smoke-train")]), encoding="utf-8")
    val.write_text(json.dumps([smoke_sample("smoke-val")]), encoding="utf-8")
    model, tok = tiny_llama(layers=2, hidden=64, seed=0)
    gguf = write_hf_model_gguf(model, out / "tiny-f32.gguf", tokenizer_gguf=embedded_gguf(), dtype="f32")
    embedder = stand_ins.embedder
    small = dict(num_generations=2, prompts_per_step=2, max_steps=1, max_completion_length=12, eval_every=0,
                 eval_max_new_tokens=8, eval_batch_size=2, lora_r=4, lora_alpha=8, threads=1, seed=1)
    mc = ManagerTrainConfig(max_prompt_length=1200, answer_max_tokens=12, answer_n_ctx=1024, **small)
    ac = TrainConfig(max_prompt_length=800, retrieve_k=10, **small)

    def answerer(manager_adapter, answer_adapter):
        backend = LlamaBackend(path=gguf, adapter=answer_adapter, n_ctx=1024, n_threads=1)
        return FrozenAnswerer(backend, embedder, k=mc.retrieve_k, max_tokens=mc.answer_max_tokens)

    return Env(train, val, embedder, mc, ac, str(gguf), gguf, stand_ins.manager_backend,
               "scripted-smoke-manager", lambda: (copy.deepcopy(model), tok), {"kind": "gguf", "path": str(gguf)},
               1, answerer)


# --------------------------------------------------------------------------- stages


def stage_states(env: Env, args, out: Path) -> tuple[list, list, dict]:
    from training.data.manager import op_distribution, states_from

    t0 = time.perf_counter()
    kw: dict = dict(cache=out / "states", embedder=env.embedder, backend_factory=env.states_backend,
              manager_id=env.manager_id, max_sessions=args.max_sessions, max_states=args.max_states,
              progress=not args.no_progress)
    if env.states_backend is None:
        from core.config import ModelSpec

        kw["manager_model"] = ModelSpec(n_threads=env.threads)
    train, _ = states_from(env.train_data, **kw)
    val = states_from(env.val_data, **kw)[0] if env.val_data else []
    return train, val, {"train_states": len(train), "val_states": len(val), "ops_before": op_distribution(train),
                        "seconds": round(time.perf_counter() - t0, 1)}


def _model(env: Env):
    return env.model_factory() if env.model_factory else (None, None)


def _adapter_dir(result) -> Path:
    """The best adapter (by validation), or the final one when there was no validation."""
    return result.best_dir if (result.best_dir / "adapter_config.json").is_file() else result.final_dir


def stage_manager(env: Env, args, out: Path, train, val) -> tuple[Path, dict]:
    from training.export.gguf import export_lora
    from training.grpo.manager import train_manager

    model, tok = _model(env)
    answerer = env.answerer_factory(None, None) if env.answerer_factory else None
    try:
        res = train_manager(env.manager_config, train, val, out_dir=out / "manager", base=env.base,
                            answerer=answerer, embedder=env.embedder, model=model, tokenizer=tok,
                            base_meta=env.base_meta, progress=not args.no_progress)
    finally:
        if answerer is not None:
            answerer.close()
    adapter = export_lora(_adapter_dir(res), out / "manager-lora.gguf", base=env.base_gguf)
    return adapter, {"steps": res.steps, "seconds": round(res.seconds, 1), "baseline": res.baseline,
                     "best": res.best, "reward_stats": res.reward_stats, "adapter": str(adapter)}


def _components(env: Env, manager_adapter: Path):
    """The trained manager (base + its adapter) builds the banks; the answer role is the plain
    base (the answer agent is what this stage trains)."""
    from core.config import ModelSpec
    from core.llm.modelset import ModelSet
    from training.eval.runner import Components
    from training.models import model_id

    n_ctx = 2048 if env.model_factory else 4096
    manager = ModelSpec(path=str(env.base_gguf), adapter=str(manager_adapter), n_ctx=n_ctx, n_threads=env.threads)
    answer = ModelSpec(path=str(env.base_gguf), n_ctx=n_ctx, n_threads=env.threads)
    models = ModelSet.from_specs({"manager": manager, "answer": answer})
    return Components(env.embedder, models=models, ids={"manager": model_id(manager), "answer": model_id(answer)})


def stage_answer(env: Env, args, out: Path, manager_adapter: Path) -> tuple[Path, dict]:
    from training.data.answer import build_examples
    from training.export.gguf import export_lora
    from training.grpo.answer import train_answer_agent

    comps = _components(env, manager_adapter)
    kw = dict(k=env.answer_config.retrieve_k, bank="memory", max_sessions=args.max_sessions,
              cache_dir=out / "eval-cache", components=comps, progress=not args.no_progress)
    try:
        train = build_examples(env.train_data, **kw)
        val = build_examples(env.val_data, **kw) if env.val_data else []
    finally:
        comps.close()
    model, tok = _model(env)
    res = train_answer_agent(env.answer_config, train, val, out_dir=out / "answer", base=env.base, model=model,
                             tokenizer=tok, base_meta=env.base_meta, progress=not args.no_progress)
    adapter = export_lora(_adapter_dir(res), out / "answer-lora.gguf", base=env.base_gguf)
    memories = sum(len(e["memories"]) for e in train) / max(1, len(train))
    return adapter, {"steps": res.steps, "seconds": round(res.seconds, 1), "baseline": res.baseline,
                     "best": res.best, "train_examples": len(train), "memories_per_example": round(memories, 1),
                     "adapter": str(adapter)}


def stage_eval(env: Env, args, out: Path, manager_adapter: Path, answer_adapter: Path) -> dict:
    """The paper's ablation on the validation conversation (full pipeline)."""
    from core.config import ModelSpec
    from training.eval.runner import EvalConfig, run_locomo

    combos = {"untrained": (None, None), "answer-only": (None, answer_adapter),
              "manager-only": (manager_adapter, None), "both": (manager_adapter, answer_adapter)}
    results = {}
    for name, (m, a) in combos.items():
        spec = lambda ad: ModelSpec(path=str(env.base_gguf), adapter=str(ad) if ad else None,  # noqa: E731
                                    n_threads=env.threads)
        summary = run_locomo(EvalConfig(data=str(env.val_data), systems=("memory-r1",), out=str(out / "eval" / name),
                                        cache_dir=str(out / "eval-cache"), manager_model=spec(m),
                                        answer_model=spec(a), max_sessions=args.max_sessions,
                                        progress=not args.no_progress))["memory-r1"]
        results[name] = {k: summary["overall"].get(k) for k in ("f1", "bleu1", "em")}
    return results


def eval_commands(env: Env, manager_adapter: Path, answer_adapter: Path) -> list[str]:
    base = f"memory-r1 eval locomo --data {env.val_data} --system memory-r1"
    return [base, f"{base} --answer-adapter {answer_adapter}", f"{base} --manager-adapter {manager_adapter}",
            f"{base} --manager-adapter {manager_adapter} --answer-adapter {answer_adapter}"]


# --------------------------------------------------------------------------- entry point


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m training.runs.staged", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", required=True, help="output folder (everything of the run goes there)")
    p.add_argument("--smoke", action="store_true", help="the CPU smoke variant on a tiny random model")
    p.add_argument("--data", help="training LoCoMo JSON (default ../shared/data/locomo/train.json)")
    p.add_argument("--val", help="validation LoCoMo JSON (default ../shared/data/locomo/val.json)")
    p.add_argument("--no-val", action="store_true", help="no validation (adapters: the final ones)")
    p.add_argument("--base", default="embedded", help="base model the trainers load (default: embedded)")
    p.add_argument("--base-gguf", help="its GGUF for llama.cpp (default: the embedded GGUF)")
    p.add_argument("--manager-config", help="ManagerTrainConfig JSON")
    p.add_argument("--answer-config", help="TrainConfig JSON for the answer agent")
    p.add_argument("--manager-steps", type=int, help="max optimizer steps of stage 2")
    p.add_argument("--answer-steps", type=int, help="max optimizer steps of stage 3")
    p.add_argument("--max-states", type=int, help="stop each conversation's state pass at its N-th evidence turn")
    p.add_argument("--max-sessions", type=int, help="only the first N sessions (states, banks, evaluation)")
    p.add_argument("--threads", type=int, help="CPU threads for torch and llama.cpp")
    p.add_argument("--eval", action="store_true", help="run the 4-way validation ablation at the end")
    p.add_argument("--no-progress", action="store_true")
    return p.parse_args(argv)


def run_staged(argv=None, *, stand_ins: SmokeStandIns | None = None) -> dict:
    """Run the chain; returns (and writes to <out>/staged.json) its record. `--smoke` needs
    `stand_ins` (InvalidInputError without them)."""
    args = parse_args(argv)
    if args.smoke and stand_ins is None:
        from core.errors import InvalidInputError

        raise InvalidInputError("--smoke needs the test stand-ins: run it with "
                                "pytest -m slow tests/training/grpo/test_manager_training.py -k staged")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = smoke_env(out, stand_ins) if args.smoke else real_env(args)
    record: dict = {"smoke": args.smoke, "argv": list(argv or sys.argv[1:]), "started": time.strftime("%F %T")}

    def save():
        (out / "staged.json").write_text(json.dumps(record, indent=1, default=str), encoding="utf-8")

    train, val, record["states"] = stage_states(env, args, out)
    save()
    manager_adapter, record["manager"] = stage_manager(env, args, out, train, val)
    save()
    answer_adapter, record["answer"] = stage_answer(env, args, out, manager_adapter)
    record["eval_commands"] = eval_commands(env, manager_adapter, answer_adapter) if env.val_data else []
    if args.eval and not args.smoke and env.val_data:
        record["ablation"] = stage_eval(env, args, out, manager_adapter, answer_adapter)
    record["finished"] = time.strftime("%F %T")
    save()
    return record


def main(argv=None) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("core.llm.runtime.native").setLevel(logging.WARNING)
    record = run_staged(argv)
    print(json.dumps({k: record[k] for k in ("states", "manager", "answer") if k in record}, indent=1, default=str))
    for cmd in record.get("eval_commands", []):
        print(cmd)
    return 0


if __name__ == "__main__":
    sys.exit(main())

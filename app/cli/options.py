"""Argument types and option blocks shared by the `eval`, `train` and `train manager` commands.

Registration-time only: nothing here imports torch, llama.cpp or training (the CLI's help and
parsing stay light). `validation_path`, `check_model_files` and `check_input_file` raise
`InvalidInputError` (a UserError): commands call them before any model, embedder or bank loads.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path


def number(kind: type, low: float | None = None, high: float | None = None, *, above: bool = False,
           what: str | None = None):
    """An argparse type: `kind(value)` (int or float) from `low` (excluded with `above`) to
    `high`; a bad value gets argparse's usage error with the reason.

    >>> number(float, 0, 1)("0.25")
    0.25
    >>> number(int, 0, 65535, what="a port number")("70000")
    Traceback (most recent call last):
    argparse.ArgumentTypeError: must be between 0 and 65535
    """
    noun = what or ("a whole number" if kind is int else "a number")

    def convert(value: str):
        try:
            n = kind(value)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not {noun}: {value!r}") from None
        if low is not None and high is not None and not above and not low <= n <= high:
            raise argparse.ArgumentTypeError(f"must be between {low} and {high}")
        if low is not None and (n <= low if above else n < low):
            raise argparse.ArgumentTypeError(f"must be more than {low}" if above else f"must be at least {low}")
        if high is not None and n > high:
            raise argparse.ArgumentTypeError(f"must be at most {high}")
        return n

    convert.__name__ = kind.__name__  # argparse names the type in its "invalid <name> value" fallback
    return convert


positive = number(int, 1)
"""argparse type: a whole number >= 1."""
minutes = number(float, 0, above=True)
"""argparse type: a number of minutes > 0."""
port = number(int, 0, 65535, what="a port number")
"""argparse type: a TCP port, 0 (pick a free one) to 65535."""
share = number(float, 0, 1)
"""argparse type: a number from 0 to 1."""
fraction_above_zero = number(float, 0, 1, above=True)
"""argparse type: a number above 0, at most 1."""


def add_command(sub, func, name: str, **kw) -> argparse.ArgumentParser:
    """A sub-command parser (`add_parser(name, **kw)`) that runs `func(args)`."""
    p = sub.add_parser(name, **kw)
    p.set_defaults(func=func)
    return p


def add_command_group(sub, name: str, *, help: str, description: str):
    """A command with sub-commands (`eval`, `train`): returns its sub-parsers; the command
    alone prints its help and exits 2."""
    p = sub.add_parser(name, help=help, description=description)
    group = p.add_subparsers(dest=f"{name}_command", metavar="SUBCOMMAND")
    p.set_defaults(func=lambda args: (p.print_help(), 2)[1])
    return group


def samples_of(args) -> tuple[str, ...] | None:
    """The `--samples a,b` ids as a tuple (None when not given or empty).

    >>> samples_of(argparse.Namespace(samples=" conv-26, ,conv-30"))
    ('conv-26', 'conv-30')
    """
    if not args.samples:
        return None
    return tuple(s.strip() for s in args.samples.split(",") if s.strip()) or None


def add_data_option(p, help: str = "LoCoMo JSON file") -> None:
    p.add_argument("--data", required=True, metavar="FILE", help=help)


def add_cache_option(p) -> None:
    p.add_argument("--cache-dir", metavar="DIR",
                   help="memory-bank cache, shared by eval and train (default: <data dir>/eval-cache)")


def add_samples_option(p) -> None:
    p.add_argument("--samples", metavar="IDS", help="comma-separated sample ids (default: all in the file)")


def add_max_sessions_option(p) -> None:
    p.add_argument("--max-sessions", type=positive, metavar="N",
                   help="use only the first N sessions and the questions whose evidence lies in them")


def add_threads_option(p, what: str = "CPU threads") -> None:
    p.add_argument("--threads", type=positive, metavar="N", help=f"{what} (default: physical cores)")


EXTRACTION_CHOICES = ("free", "extractive", "auto")  # core.agents.manager.EXTRACTIONS


def add_model_options(p, *, title: str, default: str, n_ctx_default: int | None = None,
                      shipped: bool = False, judge: bool = False, gate: bool = False) -> None:
    """The model options shared by chat/ingest/ask and eval, in one argument group: a GGUF and a
    GGUF LoRA adapter per role (`default` says what is used without them), the manager's
    extraction mode, the context size and threads; `shipped` adds --no-shipped-adapters,
    `judge` --judge-model, `gate` --no-gate."""
    g = p.add_argument_group(title)
    g.add_argument("--answer-model", metavar="PATH", help=f"GGUF for the answer agent (default: {default})")
    g.add_argument("--manager-model", metavar="PATH", help=f"GGUF for the memory manager (default: {default})")
    g.add_argument("--answer-adapter", metavar="PATH", help="GGUF LoRA adapter for the answer agent")
    g.add_argument("--manager-adapter", metavar="PATH", help="GGUF LoRA adapter for the memory manager")
    g.add_argument("--manager-extraction", choices=EXTRACTION_CHOICES, metavar="free|extractive|auto",
                   help="how the memory manager finds a turn's facts: 'free' (the model writes them), "
                        "'extractive' (it chooses among the turn's own sentences) or 'auto' (extractive "
                        "for a manager model under 1B parameters; default: settings, else auto)")
    if gate:
        g.add_argument("--no-gate", action="store_true",
                       help="write the manager's facts without the grounding gate (the paper's path)")
    if shipped:
        g.add_argument("--no-shipped-adapters", action="store_true",
                       help="do not attach the trained adapters shipped with the app (assets/adapters)")
    if judge:
        g.add_argument("--judge-model", metavar="PATH",
                       help="GGUF of a local judge model (CORRECT/WRONG); default none")
    n_ctx_help = "context size in tokens" + (f" (default {n_ctx_default})" if n_ctx_default else "")
    g.add_argument("--n-ctx", type=positive, default=n_ctx_default, metavar="N", help=n_ctx_help)
    add_threads_option(g)


def model_spec(args, role: str, base=None):
    """The `core.config.ModelSpec` of `role` ("answer" or "manager"): `base` (default: the
    embedded model's spec) with the command line's --<role>-model, --<role>-adapter, --n-ctx
    and --threads where given (a command without one of these options leaves it alone).
    Raises InvalidInputError for an invalid result."""
    import dataclasses

    from core.config import ModelSpec

    spec = dataclasses.replace(base) if base is not None else ModelSpec()
    changes = {"path": getattr(args, f"{role}_model", None), "adapter": getattr(args, f"{role}_adapter", None),
               "n_ctx": getattr(args, "n_ctx", None), "n_threads": getattr(args, "threads", None)}
    spec = dataclasses.replace(spec, **{k: v for k, v in changes.items() if v})
    spec.validate()
    return spec


# (argument, what it must be): the model and adapter options of add_model_options and the trainers
MODEL_FILE_OPTIONS = (("answer_model", "model"), ("manager_model", "model"), ("judge_model", "model"),
                      ("answer_adapter", "adapter"), ("manager_adapter", "adapter"))


def check_input_file(path, what: str = "file") -> Path:
    """`path` as a Path when it is an existing readable file; InvalidInputError otherwise."""
    from core.errors import InvalidInputError

    p = Path(path).expanduser()
    if not p.is_file():
        raise InvalidInputError(f"The {what} {p} does not exist (or is not a file).")
    if not os.access(p, os.R_OK):
        raise InvalidInputError(f"The {what} {p} cannot be read (permission denied).")
    return p


def check_model_files(args) -> None:
    """Every model/adapter path given on the command line (MODEL_FILE_OPTIONS present in
    `args`) is an existing GGUF of the right kind: a model option a model, an adapter option a
    LoRA adapter. Only the GGUF header is read (milliseconds, even for an 8B file); raises
    InvalidInputError (one sentence) before any model loads."""
    from core.errors import InvalidInputError, ModelLoadError
    from core.llm.gguf_info import read_gguf_info

    for dest, kind in MODEL_FILE_OPTIONS:
        path = getattr(args, dest, None)
        if not path:
            continue
        option = "--" + dest.replace("_", "-")
        p = check_input_file(path, f"{kind} file")
        try:
            info = read_gguf_info(p)
        except ModelLoadError as exc:
            raise InvalidInputError(f"{option}: {exc}") from None
        if kind == "model" and info.is_adapter:
            raise InvalidInputError(f"{option}: {p} is a LoRA adapter, not a model; give it with "
                                    f"--{dest.split('_')[0]}-adapter, next to its base model.")
        if kind == "adapter" and not info.is_adapter:
            raise InvalidInputError(f"{option}: {p} is a model, not a LoRA adapter; give it with "
                                    f"--{dest.split('_')[0]}-model.")


def add_progress_option(p) -> None:
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


# --------------------------------------------------------------------------- training runs


def default_val_path() -> Path:
    """The shared LoCoMo validation split beside the checkout (`../shared/data/locomo/val.json`)."""
    from core.paths import repo_root

    return repo_root().parent / "shared" / "data" / "locomo" / "val.json"


def add_training_options(p, *, what: str, config_help: str, budget_help: str) -> None:
    """--base, --out, --val/--no-val, --config, --max-steps and --time-budget of a trainer;
    `what` names the validation data's other form ("examples .jsonl", "states folder")."""
    p.add_argument("--base", default="embedded", metavar="embedded|PATH",
                   help="base model to train: 'embedded' (SmolLM2-135M, read from its GGUF), a GGUF file or "
                        "an HF model folder")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder")
    p.add_argument("--val", metavar="FILE",
                   help=f"validation LoCoMo JSON or {what} (default: ../shared/data/locomo/val.json "
                        "when present)")
    p.add_argument("--no-val", action="store_true", help="train without validation")
    p.add_argument("--config", metavar="FILE", help=config_help)
    p.add_argument("--max-steps", type=positive, metavar="N", help="stop after N optimizer steps")
    p.add_argument("--time-budget", type=minutes, metavar="MIN", help=budget_help)


def validation_path(args, *, folders: bool = False) -> Path | None:
    """The validation data of a trainer's `--val`/`--no-val` (None with --no-val); `folders`:
    a folder is accepted too. Raises InvalidInputError when there is no such file (or folder)."""
    from core.errors import InvalidInputError

    if args.no_val:
        return None
    path = Path(args.val) if args.val else default_val_path()
    if not (path.exists() if folders else path.is_file()):
        raise InvalidInputError(f"validation data {path} not found: pass --val FILE or --no-val")
    return path


def time_budget_s(args) -> float | None:
    """`--time-budget` minutes in seconds (None when not given)."""
    return args.time_budget * 60 if args.time_budget else None

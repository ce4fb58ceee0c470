"""The scenario set with the real embedded model: how many scenarios hold, which fail and why.

    .venv/bin/python benchmarks/scenarios.py                           # the manager's defaults
    .venv/bin/python benchmarks/scenarios.py --set updates=false       # without the update rules
    .venv/bin/python benchmarks/scenarios.py --set gate=false --set extraction=free
    .venv/bin/python benchmarks/scenarios.py --only move,kids --json   # some scenarios; JSON last line
    .venv/bin/python benchmarks/scenarios.py --session-5                # without the session-6 rules

Each scenario (tests/core/agents/scenarios.py) runs on a fresh bank (real SQLite + sqlite-vec,
all-MiniLM-L6-v2) through `MemoryManager.process_turn` with the shipped SmolLM2-135M
(greedy, grammar-constrained); the bank is checked after every turn against the scenario's
expectation. `--set key=value` overrides any `ManagerConfig` field by name (true/false,
numbers, none, or text), so the same command works whatever fields the manager has.
`--session-5` switches off the session-6 module flags (`SESSION_6_FLAGS`: the extractive
filler filter, the gate's greeting rule, the update rules' "we", "now", leading dates, pronoun
corrections and ordinal children) for a before/after on the same code. When the
bank does not yet mark superseded memories itself (an ADD's `supersedes` leaves the old one
active), the runner emulates it by deleting the old one, and says so.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from benchmarks.common import finish  # noqa: E402


def parse_value(text: str, default: object) -> object:
    """A `--set` value as the type of the field's default (bool, int, float), else by its look.

    >>> parse_value("false", True), parse_value("3", 5), parse_value("0.7", None), parse_value("free", "x")
    (False, 3, 0.7, 'free')
    """
    low = text.strip().lower()
    if low in ("none", "null"):
        return None
    if isinstance(default, bool) or low in ("true", "false", "on", "off", "yes", "no"):
        if low not in ("true", "false", "on", "off", "yes", "no", "1", "0"):
            raise ValueError(f"{text!r} is not true or false")
        return low in ("true", "on", "yes", "1")
    for kind in (int, float):
        if isinstance(default, kind) or default is None:
            try:
                return kind(text)
            except ValueError:
                continue
    return text


def manager_config(pairs: list[str]):
    """A `ManagerConfig` with the `key=value` overrides; SystemExit naming the known fields
    for an unknown one."""
    from core.agents.manager import ManagerConfig

    config = ManagerConfig()
    fields = {f.name: f for f in dataclasses.fields(ManagerConfig)}
    changes = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        key = key.strip()
        if not sep or key not in fields:
            raise SystemExit(f"--set {pair!r}: expected key=value with a ManagerConfig field: {', '.join(fields)}")
        try:
            changes[key] = parse_value(value, getattr(config, key))
        except ValueError as exc:
            raise SystemExit(f"--set {pair!r}: {exc}") from None
    return dataclasses.replace(config, **changes)


SESSION_6_FLAGS = (("core.agents.extractive", "FILTER_FILLER"), ("core.agents.grounding_text", "STRIP_ADDRESS"),
                   ("core.agents.updates", "WE_INCLUDES_SPEAKER"), ("core.agents.updates", "PRONOUN_CORRECTIONS"),
                   ("core.agents.updates", "ORDINAL_CHILDREN"), ("core.agents.updates", "LEADING_TIME"),
                   ("core.agents.updates", "LEADING_NOW"))


def session_5() -> None:
    """Switch the session-6 rules off (module flags, this process only)."""
    import importlib

    for module, name in SESSION_6_FLAGS:
        mod = importlib.import_module(module)
        assert isinstance(getattr(mod, name), bool), (module, name)
        setattr(mod, name, False)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a ManagerConfig override (repeatable)")
    ap.add_argument("--only", default="", help="comma-separated scenario names")
    ap.add_argument("--threads", type=int, default=None, help="llama.cpp CPU threads")
    ap.add_argument("--json", action="store_true", help="end with one JSON line")
    ap.add_argument("--session-5", action="store_true", help="the session-6 rules off (SESSION_6_FLAGS)")
    args = ap.parse_args(argv)
    if args.session_5:
        session_5()

    from core.agents.manager import MemoryManager
    from core.config import ModelSpec
    from core.embeddings import default_embedder
    from core.llm.runtime import load_backend
    from core.memory import MemoryBank
    from tests.core.agents.scenarios import SCENARIOS, run_scenario

    config = manager_config(args.overrides)
    only = {n.strip() for n in args.only.split(",") if n.strip()}
    scenarios = [s for s in SCENARIOS if not only or s.name in only]
    if only - {s.name for s in scenarios}:
        raise SystemExit(f"unknown scenarios: {sorted(only - {s.name for s in scenarios})}")
    embedder = default_embedder()
    backend = load_backend(ModelSpec(n_ctx=4096, n_threads=args.threads))
    print(f"{len(scenarios)} scenarios; overrides: {args.overrides or 'none'}"
          + ("; session-6 rules off" if args.session_5 else ""))
    held: list[str] = []
    failed: dict[str, list[str]] = {}
    emulated: set[int] = set()
    n_emulated = 0
    start = time.perf_counter()
    try:
        with tempfile.TemporaryDirectory() as tmp:
            for n, scenario in enumerate(scenarios):
                bank = MemoryBank(Path(tmp) / f"s{n}.sqlite3", embedder)
                try:
                    emulated.clear()
                    bad = run_scenario(scenario, bank, lambda step, _b=bank: MemoryManager(_b, backend, config=config),
                                       emulated=emulated)
                    n_emulated += len(emulated)
                    final = [m.text for m in bank.list()]
                except Exception as exc:  # a failed model call is a failed scenario, reported
                    bad, final = [f"{type(exc).__name__}: {exc}"], []
                finally:
                    bank.close()
                if bad:
                    failed[scenario.name] = bad
                    print(f"FAIL {scenario.name} ({scenario.kind}): {'; '.join(bad[:3])}\n     bank: {final}")
                else:
                    held.append(scenario.name)
                    print(f"ok   {scenario.name} ({scenario.kind})")
    finally:
        backend.close()
    secs = time.perf_counter() - start
    kinds = sorted({s.kind for s in scenarios})
    by_kind = {k: f"{sum(s.name in held for s in scenarios if s.kind == k)}/{sum(s.kind == k for s in scenarios)}"
               for k in kinds}
    print(f"\n{len(held)} of {len(scenarios)} scenarios hold ({secs:.0f} s); by kind: "
          + ", ".join(f"{k} {v}" for k, v in by_kind.items()))
    if n_emulated:
        print(f"note: the bank left {n_emulated} superseded memories active: emulated (deleted)")
    return finish({"held": len(held), "total": len(scenarios), "failed": failed, "by_kind": by_kind,
                   "overrides": args.overrides,
                   "session_5": args.session_5, "emulated": n_emulated, "seconds": round(secs, 1)}, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

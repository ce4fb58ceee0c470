"""Start-up of the desktop app and the wall time of the memory commands, each a fresh process.

Each launch runs `memory-r1 gui --timings FILE --exit-when-ready` (the real app: bank, settings,
both embedded models and the embedder loaded in the background; the window closes itself once
the input is enabled) in a temporary MEMORY_R1_HOME, under QT_QPA_PLATFORM=offscreen (or
`xvfb-run -a` with --xvfb when it is installed), one CPU thread per model. It prints, per launch
and as median/max, the seconds from process start to each phase (app/gui/timings.py): the
window shown (target <= 1 s) and the window usable (target <= 3 s), and the process's CPU
seconds at each (`cpu_s`: on a busy machine the wall time stretches, the CPU time much less). Then the wall time of
`memory-r1 memory add "x"`, `memory list` and `memory search "x"` (subprocesses in the same
temporary home; target <= 1 s each).

    python benchmarks/startup.py [--launches 5] [--commands 3] [--xvfb] [--first-run] [--json]

With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.common import finish  # noqa: E402

WINDOW_TARGET_S = 1.0
USABLE_TARGET_S = 3.0
COMMAND_TARGET_S = 1.0
TIMEOUT_S = 300


def _env(home: Path, xvfb: bool) -> dict:
    env = dict(os.environ)
    env.update(MEMORY_R1_HOME=str(home), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", OMP_NUM_THREADS="1",
               OPENBLAS_NUM_THREADS="1", MKL_NUM_THREADS="1", PYTHONPATH=str(ROOT))
    if not xvfb:
        env["QT_QPA_PLATFORM"] = "offscreen"
    return env


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "app", *args]


def _write_settings(home: Path, first_run: bool) -> None:
    from core.config import ModelSpec, Settings

    settings = Settings(welcome_shown=not first_run, answer_model=ModelSpec(n_threads=1),
                        manager_model=ModelSpec(n_threads=1))
    settings.save(home / "settings.json")


def launch(home: Path, xvfb: bool) -> dict:
    """One start of the app; its phases (seconds since the process start) and the exit code."""
    out = home / "timings.json"
    out.unlink(missing_ok=True)
    cmd = _cli("gui", "--timings", str(out), "--exit-when-ready")
    if xvfb:
        cmd = ["xvfb-run", "-a", *cmd]
    started = time.perf_counter()
    proc = subprocess.run(cmd, env=_env(home, xvfb), capture_output=True, text=True, timeout=TIMEOUT_S)
    wall = time.perf_counter() - started
    if not out.exists():
        raise SystemExit(f"the app wrote no timings (exit {proc.returncode}):\n{proc.stderr[-3000:]}")
    data = json.loads(out.read_text())
    return {"phases": data["phases"], "cpu_s": data.get("cpu_s", {}), "exit_code": proc.returncode,
            "process_wall_s": round(wall, 3)}


def command(home: Path, *args: str) -> float:
    """Wall seconds of one `memory-r1 <args>` (it must succeed)."""
    started = time.perf_counter()
    proc = subprocess.run(_cli(*args), env=_env(home, False), capture_output=True, text=True, timeout=TIMEOUT_S)
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise SystemExit(f"`memory-r1 {' '.join(args)}` failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return wall


def _summary(values: list[float]) -> dict:
    return {"median": round(statistics.median(values), 3), "max": round(max(values), 3),
            "min": round(min(values), 3)} if values else {}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--launches", type=int, default=5, help="app starts to time")
    parser.add_argument("--commands", type=int, default=3, help="runs of each memory command")
    parser.add_argument("--xvfb", action="store_true", help="run the app under xvfb-run (when installed)")
    parser.add_argument("--first-run", action="store_true", help="with the first-run card (welcome not shown)")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    xvfb = bool(args.xvfb and shutil.which("xvfb-run"))
    if args.xvfb and not xvfb:
        print("xvfb-run is not installed: using QT_QPA_PLATFORM=offscreen")
    home = Path(tempfile.mkdtemp(prefix="startup-bench-"))
    try:
        _write_settings(home, args.first_run)
        launches = []
        for i in range(args.launches):
            run = launch(home, xvfb)
            launches.append(run)
            ph = run["phases"]
            cpu = run["cpu_s"]
            print(f"launch {i + 1}: " + "  ".join(
                f"{name} {at:.3f}s" + (f" (cpu {cpu[name]:.3f}s)" if name in cpu else "") for name, at in ph.items())
                  + f"  (exit {run['exit_code']}, process {run['process_wall_s']:.2f}s)", flush=True)
        windows = [r["phases"]["window_shown"] for r in launches if "window_shown" in r["phases"]]
        usable = [r["phases"]["input_enabled"] for r in launches if "input_enabled" in r["phases"]]
        phase_names = list(dict.fromkeys(name for r in launches for name in r["phases"]))
        phases = {name: _summary([r["phases"][name] for r in launches if name in r["phases"]])
                  for name in phase_names}
        cpu = {name: _summary([r["cpu_s"][name] for r in launches if name in r["cpu_s"]]) for name in phase_names}
        commands: dict[str, list[float]] = {"memory add": [], "memory list": [], "memory search": []}
        for i in range(args.commands):
            commands["memory add"].append(command(home, "memory", "add", f"x {i}"))
            commands["memory list"].append(command(home, "memory", "list"))
            commands["memory search"].append(command(home, "memory", "search", "x"))
        result = {
            "launches": args.launches,
            "platform": "xvfb" if xvfb else "offscreen",
            "window_shown_s": _summary(windows),
            "usable_s": _summary(usable),
            "failed_launches": args.launches - len(usable),
            "phases_s": phases,
            "cpu_s": {name: summary for name, summary in cpu.items() if summary},
            "commands_s": {name: _summary(values) for name, values in commands.items()},
            "targets_s": {"window": WINDOW_TARGET_S, "usable": USABLE_TARGET_S, "command": COMMAND_TARGET_S},
        }
    finally:
        shutil.rmtree(home, ignore_errors=True)
    w, u = result["window_shown_s"], result["usable_s"]
    print(f"window shown: median {w.get('median')} s, max {w.get('max')} s (target <= {WINDOW_TARGET_S:.0f} s)")
    print(f"usable (models + embedder loaded, input enabled): median {u.get('median')} s, max {u.get('max')} s "
          f"(target <= {USABLE_TARGET_S:.0f} s); failed launches: {result['failed_launches']}")
    for name, summary in result["phases_s"].items():
        used = result["cpu_s"].get(name)
        print(f"  {name:<22} median {summary['median']:.3f} s  max {summary['max']:.3f} s"
              + (f"  (cpu median {used['median']:.3f} s)" if used else ""))
    for name, summary in result["commands_s"].items():
        print(f"`memory-r1 {name}`: median {summary['median']:.2f} s, max {summary['max']:.2f} s "
              f"(target <= {COMMAND_TARGET_S:.0f} s)")
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

"""Start-up phase timings of the desktop app (`memory-r1 gui --timings`).

One process-wide recorder (`RECORDER`; `mark(phase)`) takes the seconds since the process was
created (psutil's create time, so the interpreter's own start counts; else the time this module
was first imported) at each phase, in the order they happen:

    process_start -> imports_done -> window_shown -> answer_model_loaded / manager_model_loaded /
    embedder_loaded (in parallel, in whatever order they finish) -> input_enabled

(`load_failed` instead of `input_enabled` when no model could be loaded.) A phase is recorded
once (the first mark wins), with the process's CPU seconds so far (`time.process_time()`, all
threads, the interpreter's start included): on a busy machine the wall time stretches, the CPU
time much less. `report(dest)` prints them on stderr (`dest` "-") or writes them as one JSON
object to a file (atomically): `{"phases": {phase: s}, "cpu_s": {phase: s}, "pid": ...}`.
Qt-free and cheap: it is imported before Qt. Any thread.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
from pathlib import Path

PHASES = ("process_start", "imports_done", "window_shown", "answer_model_loaded", "manager_model_loaded",
          "embedder_loaded", "input_enabled")
END_PHASES = ("input_enabled", "load_failed")
_IMPORTED_AT = time.time()


def _proc_start_time() -> float:
    """Linux: the process's start from /proc (no psutil import on the start-up path)."""
    with open("/proc/self/stat", "rb") as f:
        fields = f.read().rsplit(b")", 1)[1].split()
    started_ticks = int(fields[19])  # field 22 (starttime), counted from after "(comm)"
    with open("/proc/stat", "rb") as f:
        btime = next(int(line.split()[1]) for line in f if line.startswith(b"btime"))
    return btime + started_ticks / os.sysconf("SC_CLK_TCK")


def process_start_time() -> float:
    """The process's creation time (epoch seconds), or this module's import time."""
    if sys.platform.startswith("linux"):
        try:
            return _proc_start_time()
        except (OSError, ValueError, IndexError, StopIteration):
            pass
    try:
        import psutil

        return float(psutil.Process().create_time())
    except Exception:  # noqa: BLE001 - no psutil, or no /proc: the import time is close enough
        return _IMPORTED_AT


class Timings:
    """Phases with their seconds since the process start; see the module docstring."""

    def __init__(self, start: float | None = None) -> None:
        self._lock = threading.Lock()
        self.start = process_start_time() if start is None else start
        self._phases: dict[str, float] = {"process_start": 0.0}
        self._cpu: dict[str, float] = {"process_start": 0.0}
        self.dest: str | None = None  # where `finish` reports: "-" (stderr), a file path, or None
        self._reported = False

    def mark(self, phase: str) -> float:
        """Record `phase` now (once); returns its seconds since the process start."""
        now = round(time.time() - self.start, 4)
        cpu = round(time.process_time(), 4)
        with self._lock:
            if phase not in self._phases:
                self._phases[phase], self._cpu[phase] = now, cpu
            at = self._phases[phase]
        if phase in END_PHASES:
            self.finish()
        return at

    def phases(self) -> dict[str, float]:
        """The recorded phases in the order they happened."""
        with self._lock:
            return dict(sorted(self._phases.items(), key=lambda kv: kv[1]))

    def cpu(self) -> dict[str, float]:
        """The process's CPU seconds at each recorded phase, in the order of `phases`."""
        with self._lock:
            return {name: self._cpu[name] for name in sorted(self._phases, key=self._phases.__getitem__)}

    def get(self, phase: str) -> float | None:
        with self._lock:
            return self._phases.get(phase)

    def reset(self, start: float | None = None) -> None:
        """Forget every phase (tests; a second window in one process)."""
        with self._lock:
            self.start = time.time() if start is None else start
            self._phases = {"process_start": 0.0}
            self._cpu = {"process_start": 0.0}
            self._reported = False

    def finish(self) -> None:
        """Report once to `dest` (if set): called when the window became usable or failed to."""
        with self._lock:
            if self.dest is None or self._reported:
                return
            self._reported = True
        report(self.phases(), self.dest, self.cpu())


def report(phases: dict[str, float], dest: str, cpu: dict[str, float] | None = None) -> None:
    """`phases` (and the CPU seconds `cpu` at each) on stderr (one line each) or, for a path, as
    JSON in that file."""
    cpu = cpu or {}
    if dest == "-":
        previous = 0.0
        for name, at in phases.items():
            used = f"  cpu {cpu[name] * 1000:6.0f} ms" if name in cpu else ""
            print(f"memory-r1 timings: {name:<22} {at * 1000:8.0f} ms  (+{(at - previous) * 1000:.0f} ms){used}",
                  file=sys.stderr, flush=True)
            previous = at
        return
    from core.fileio import atomic_write_text

    path = Path(dest)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(path, json.dumps({"phases": phases, "cpu_s": cpu, "pid": os.getpid()}, indent=2) + "\n")


RECORDER = Timings()


def mark(phase: str) -> float:
    """`RECORDER.mark(phase)`."""
    return RECORDER.mark(phase)


__all__ = ["PHASES", "END_PHASES", "Timings", "RECORDER", "mark", "report", "process_start_time"]

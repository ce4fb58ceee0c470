"""The longest GUI event-loop stall while a long reply streams and the memory manager runs.

A 10 ms QTimer on the GUI thread records how late each tick fires; the stall is the worst
lateness (target <= 50 ms). The window is the real `MainWindow` over a real bank (SQLite +
sqlite-vec; HashEmbedder unless --real-embedder) pre-filled with memories, so the memory panel
redraws while the manager adds to it. By default the models are scripted fakes streaming fast
(thousands of tokens per second: a worst case for repaint batching) and the manager extracts
several facts per turn; --real-model uses the embedded GGUF for both roles instead.

    QT_QPA_PLATFORM=offscreen python benchmarks/gui_stall.py [--turns 3] [--words 6000] [--json]

Prints the figures; with --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from app.cli.gui_cmd import limit_blas_threads  # noqa: E402  (what `memory-r1 gui` does, before numpy)
from benchmarks.common import finish  # noqa: E402

limit_blas_threads()

TICK_MS = 10
TARGET_MS = 50.0


_WORDS = ("kayaking", "Lisbon", "violin", "sourdough", "chess", "Kyoto", "marathon", "orchids", "pottery",
          "astronomy", "salsa", "Norway", "beekeeping", "sushi", "climbing", "tango", "origami", "Peru")


def _fact(n: int) -> str:
    a, b, c = (_WORDS[(n * k + k) % len(_WORDS)] for k in (1, 5, 7))
    return f"User enjoys {a} and {b}, and plans a trip about {c} (note {n})"


def _manager_script(facts_per_turn: int, work_s: float):
    """Fact extraction that takes `work_s` of wall time (like a model call) and returns facts."""
    from core.fakes import add_every_fact, router

    counter = iter(range(10**9))
    route = router(facts=lambda _: [_fact(next(counter)) for _ in range(facts_per_turn)], decide=add_every_fact)

    def script(messages, schema):
        time.sleep(work_s)  # a model call: the GIL is free, as in llama.cpp's native eval
        return route(messages, schema)

    return script


class _StackSampler:
    """--trace: every 5 ms, if the GUI thread's last tick is over 30 ms old, record where each
    thread's Python stack is (the innermost frames): what the GUI thread was busy with, and
    which worker was running Python (holding the GIL) meanwhile."""

    def __init__(self, since_tick_ms) -> None:
        import collections
        import threading

        self._since, self._gui = since_tick_ms, threading.get_ident()
        self._seen: collections.Counter = collections.Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-sampler", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import threading
        import traceback

        me = threading.get_ident()
        names = {}
        while not self._stop.wait(0.005):
            if self._since() > 30:
                for ident, frame in sys._current_frames().items():
                    if ident == me:
                        continue
                    if ident not in names:
                        names = {t.ident: t.name for t in threading.enumerate()}
                    stack = traceback.extract_stack(frame)[-3:]
                    where = " <- ".join(f"{Path(f.filename).name}:{f.lineno} {f.name}" for f in reversed(stack))
                    who = "GUI thread" if ident == self._gui else f"thread {names.get(ident, ident)}"
                    self._seen[f"{who}: {where}"] += 1

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def top(self, n: int = 5) -> list[tuple[str, int]]:
        return self._seen.most_common(n)


def build(args, home: Path):
    from core.config import Settings
    from core.embeddings import default_embedder
    from core.fakes import FakeBackend, HashEmbedder
    from core.memory.bank import MemoryBank
    from app.gui.app import build_assistant

    bank = MemoryBank(home / "memory.sqlite3", default_embedder() if args.real_embedder else HashEmbedder())
    for start in range(0, args.memories, 500):
        from core.types import MemoryOp

        bank.apply([MemoryOp("ADD", text=f"Seed memory {i} about hobby {i % 97} and city {i % 31}", speaker="User")
                    for i in range(start, min(args.memories, start + 500))], actor="import")
    settings = Settings(welcome_shown=True, max_tokens=32768)
    if args.real_model:
        from core.config import ModelSpec
        from core.llm.runtime import load_backend

        settings.max_tokens = args.words
        spec = ModelSpec(n_threads=args.threads)
        answer, manager = load_backend(spec), load_backend(spec)
    else:
        text = "\n\n".join(
            f"Paragraph {p}: " + " ".join(f"**word{p}_{i}**" if i % 17 == 0 else f"word{p}_{i}" for i in range(60))
            for p in range(max(1, args.words // 60)))
        answer = FakeBackend(default=text, chunk=4, delay=args.token_delay)
        manager = FakeBackend(default=_manager_script(args.facts, args.manager_s))
    # built as `memory-r1 gui` builds it (its manager thread runs at a lower OS priority)
    from core.llm.modelset import ModelSet

    models = ModelSet.of(answer=answer, manager=manager)
    return bank, (lambda s, progress: build_assistant(bank, models, s)), settings


def measure(args) -> dict:
    from PySide6.QtCore import QElapsedTimer, QEventLoop, QTimer

    from app.gui.app import init_qt_app
    from app.gui.main_window import MainWindow

    app = init_qt_app()
    home = Path(tempfile.mkdtemp(prefix="gui-stall-"))
    os.environ["MEMORY_R1_HOME"] = str(home)
    bank, factory, settings = build(args, home)
    window = MainWindow(bank, settings, assistant_factory=factory, settings_file=home / "settings.json")
    window.show()
    while window.assistant is None:
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    assistant = window.assistant
    gaps: list[float] = []
    clock = QElapsedTimer()
    timer = QTimer(interval=TICK_MS)
    last = [0.0]

    marks: list[tuple[float, str]] = []  # (ms, what happened) to name the worst stalls
    stalls: list[tuple[float, float]] = []  # (lateness ms, at ms)

    def mark(what: str) -> None:
        marks.append((clock.nsecsElapsed() / 1e6, what))

    sched = [_schedstat()]  # the GUI thread's (ran ms, waited for a CPU ms) at the last tick
    threads = [_threads_cpu()] if args.trace else [{}]  # every thread's CPU ms at the last tick (--trace)
    majflt = [_major_faults()]
    causes: list[tuple[float, float, float, str]] = []  # per stall: lateness, ran, waited, busiest threads

    def tick():
        now = clock.nsecsElapsed() / 1e6
        stat = _schedstat()
        cpu = _threads_cpu() if args.trace else {}
        faults = _major_faults()
        gaps.append(now - last[0])
        if now - last[0] - TICK_MS > 20:
            stalls.append((now - last[0] - TICK_MS, last[0]))
            if stat is not None and sched[0] is not None:
                before = threads[0]
                busy = sorted(((cpu[t][0] - before[t][0], t) for t in cpu if t in before), reverse=True)[:3]
                waiting = sorted(((cpu[t][1] - before[t][1], t) for t in cpu if t in before), reverse=True)[:3]
                on_cpu = ", ".join(f"{t} {ms:.0f} ms" for ms, t in busy if ms >= 1)
                on_cpu += "; waiting for a CPU meanwhile: " + ", ".join(
                    f"{t} {ms:.0f} ms" for ms, t in waiting if ms >= 5)
                if faults > majflt[0]:
                    on_cpu += f"; GUI thread major page faults: {faults - majflt[0]}"
                causes.append((now - last[0] - TICK_MS, stat[0] - sched[0][0], stat[1] - sched[0][1], on_cpu))
        last[0] = now
        sched[0] = stat
        threads[0] = cpu
        majflt[0] = faults

    timer.timeout.connect(tick)
    sampler = _StackSampler(lambda: clock.nsecsElapsed() / 1e6 - last[0]) if args.trace else None
    loop = QEventLoop()
    state = {"turn": 0, "chars": 0, "notices": 0, "t0": time.perf_counter(), "stream_s": 0.0}

    def send_next(_reply=None):
        if _reply is not None:
            state["chars"] += len(_reply.text)
            state["stream_s"] += time.perf_counter() - state["sent"]
        if state["turn"] >= args.turns:
            QTimer.singleShot(0, loop.quit)
            return
        state["turn"] += 1
        mark(f"send {state['turn']}")
        state["sent"] = time.perf_counter()
        window.chat.input.setPlainText(f"Turn {state['turn']}: tell me a long story about my hobbies")
        window.chat.submit()

    window.replyFinished.connect(lambda *_: mark("reply finished"))
    # the next message is typed in a later event, as a person would (not inside the reply's slot)
    window.replyFinished.connect(lambda reply: QTimer.singleShot(100, lambda: send_next(reply)))
    window.memoryNotice.connect(lambda *_: state.__setitem__("notices", state["notices"] + 1))
    window.memoryNotice.connect(lambda ch, _t: mark(f"memory notice ({ch.summary()})"))
    window.memory.loaded.connect(lambda: mark("memory panel reloaded"))
    baseline: list[float] = []

    def start_chat():
        baseline.extend(gaps[1:])  # the idle window under the same machine load: the noise floor
        gaps.clear()
        gaps.append(0.0)
        stalls.clear()
        send_next()

    clock.start()
    timer.start()
    QTimer.singleShot(int(args.baseline_s * 1000), start_chat)
    loop.exec()
    # the manager's last turn(s): keep the event loop (and the measurement) running, no polling
    end = QEventLoop()
    window.memoryNotice.connect(lambda *_: state["notices"] >= args.turns and QTimer.singleShot(500, end.quit))
    window.bridge.pipeline_error.connect(lambda *_: QTimer.singleShot(500, end.quit))
    QTimer.singleShot(300_000, end.quit)
    if state["notices"] < args.turns:
        end.exec()
    timer.stop()
    names = _thread_names()
    measured = sorted(max(0.0, g - TICK_MS) for g in gaps[1:])
    if measured:  # before closing: the manager may take long to stop on a busy machine
        print(f"measured: longest stall {measured[-1]:.1f} ms, p99 {measured[int(0.99 * (len(measured) - 1))]:.1f} ms "
              f"over {len(measured)} ticks; closing…", flush=True)
        for ms, ran, wait, busy in sorted(causes, reverse=True)[:5]:
            print(f"  stall {ms:.1f} ms: GUI thread on a CPU {ran:.1f} ms, waiting for a CPU {wait:.1f} ms, "
                  f"blocked {max(0.0, ms + TICK_MS - ran - wait):.1f} ms; {_named(busy, names)}", flush=True)
    if sampler is not None:
        sampler.stop()
    window.close()
    while window.isVisible():
        app.processEvents(QEventLoop.ProcessEventsFlag.AllEvents, 50)
    assistant.close()
    bank.close()
    worst = sorted(stalls, reverse=True)[:5]
    named = [f"{ms:.0f} ms at {at / 1000:.2f} s after " + next((f"{w} (+{(at - t) / 1000:.2f} s)"
             for t, w in reversed(marks) if t <= at), "start") for ms, at in worst]
    late = [max(0.0, g - TICK_MS) for g in gaps[1:]]
    late_sorted = sorted(late)
    return {
        "max_stall_ms": round(max(late), 1) if late else None,
        "idle_baseline_max_stall_ms": round(max((max(0.0, g - TICK_MS) for g in baseline), default=0.0), 1),
        "p99_stall_ms": round(late_sorted[int(0.99 * (len(late) - 1))], 1) if late else None,
        "median_tick_ms": round(statistics.median(gaps[1:]), 2) if len(gaps) > 1 else None,
        "ticks": len(gaps),
        "turns": args.turns,
        "reply_chars": state["chars"],
        "stream_chars_per_s": round(state["chars"] / state["stream_s"]) if state["stream_s"] else None,
        "memory_notices": state["notices"],
        "memories": bank_count(home),
        "target_ms": TARGET_MS,
        "platform": app.platformName(),
        "worst": named,
        # where the worst stalls' time went (Linux schedstat of the GUI thread over the gap):
        # "ran" = on a CPU (our own GUI work), "cpu_wait" = runnable but the OS ran others (a busy
        # machine), the rest = blocked (waiting for the GIL or a lock held by a worker)
        "worst_causes": [{"stall_ms": round(ms, 1), "ran_ms": round(ran, 1), "cpu_wait_ms": round(wait, 1),
                          "blocked_ms": round(max(0.0, ms + TICK_MS - ran - wait), 1),
                          "other_threads": _named(busy, names)}
                         for ms, ran, wait, busy in sorted(causes, reverse=True)[:5]],
        "gui_thread_during_stalls": sampler.top() if sampler is not None else [],
    }


def _schedstat() -> tuple[float, float] | None:
    """The calling thread's CPU time and run-queue wait so far, in ms (Linux), else None."""
    try:
        with open("/proc/thread-self/schedstat") as f:
            ran, waited = f.read().split()[:2]
        return int(ran) / 1e6, int(waited) / 1e6
    except (OSError, ValueError):
        return None


def _major_faults() -> int:
    """The calling thread's major page faults so far (waits for the disk; Linux), else 0."""
    try:
        with open("/proc/thread-self/stat", "rb") as f:
            return int(f.read().rsplit(b")", 1)[1].split()[9])
    except (OSError, ValueError, IndexError):
        return 0


def _threads_cpu() -> dict[int, tuple[float, float]]:
    """(CPU ms, run-queue wait ms) so far of every thread of this process, by native id
    (Linux; else empty)."""
    out = {}
    try:
        tids = os.listdir("/proc/self/task")
    except OSError:
        return out
    for tid in tids:
        try:
            with open(f"/proc/self/task/{tid}/schedstat") as f:
                ran, waited = f.read().split()[:2]
            out[int(tid)] = (int(ran) / 1e6, int(waited) / 1e6)
        except (OSError, ValueError):
            continue
    return out


def _thread_names() -> dict[str, str]:
    """Native thread id (as text) -> the Python thread's name, else the OS's (comm)."""
    import threading

    names = {str(t.native_id): t.name for t in threading.enumerate() if t.native_id is not None}
    for tid in _threads_cpu():
        if str(tid) not in names:
            try:
                with open(f"/proc/self/task/{tid}/comm") as f:
                    names[str(tid)] = f.read().strip()
            except OSError:
                pass
    return names


def _named(text: str, names: dict[str, str]) -> str:
    import re

    return re.sub(r"\b(\d{3,})\b(?= \d+ ms)", lambda m: names.get(m.group(1), m.group(1)), text)


def bank_count(home: Path) -> int:
    import sqlite3

    with sqlite3.connect(home / "memory.sqlite3") as conn:
        return int(conn.execute("SELECT count(*) FROM memories").fetchone()[0])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--turns", type=int, default=3, help="chat turns, each a long streamed reply")
    parser.add_argument("--words", type=int, default=1500, help="words per reply (fake model; ~2000 tokens)")
    parser.add_argument("--token-delay", type=float, default=0.0002, help="seconds between 4-char pieces")
    parser.add_argument("--facts", type=int, default=5, help="facts the fake manager extracts per turn")
    parser.add_argument("--manager-s", type=float, default=0.5, help="seconds per fake manager model call")
    parser.add_argument("--memories", type=int, default=2000, help="memories in the bank beforehand")
    parser.add_argument("--baseline-s", type=float, default=3.0, help="idle measurement before the chat")
    parser.add_argument("--real-model", action="store_true", help="the embedded GGUF for both roles")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per real model (--real-model)")
    parser.add_argument("--real-embedder", action="store_true", help="all-MiniLM-L6-v2 instead of HashEmbedder")
    parser.add_argument("--trace", action="store_true", help="name where the GUI thread was during stalls")
    parser.add_argument("--json", action="store_true", help="print one JSON object as the last line")
    args = parser.parse_args()
    os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = measure(args)
    print(f"longest GUI stall: {result['max_stall_ms']} ms (target <= {TARGET_MS:.0f} ms; "
          f"p99 {result['p99_stall_ms']} ms, median tick {result['median_tick_ms']} ms over {result['ticks']} ticks)")
    print(f"idle window, same machine, {args.baseline_s:.0f} s before the chat: longest stall "
          f"{result['idle_baseline_max_stall_ms']} ms (the machine's noise floor)")
    print(f"streamed {result['reply_chars']} chars in {result['turns']} replies "
          f"({result['stream_chars_per_s']} chars/s); manager notices: {result['memory_notices']}; "
          f"memories now: {result['memories']}; platform: {result['platform']}")
    for line in result["worst"]:
        print("  stall:", line)
    for c in result["worst_causes"]:
        print(f"  stall {c['stall_ms']} ms: GUI thread on a CPU {c['ran_ms']} ms, waiting for a CPU "
              f"{c['cpu_wait_ms']} ms, blocked (GIL/lock) {c['blocked_ms']} ms"
              + (f"; on a CPU meanwhile: {c['other_threads']}" if c["other_threads"] else ""))
    for where, count in result["gui_thread_during_stalls"]:
        print(f"  during stalls ({count} samples): {where}")
    return finish(result, args.json)


if __name__ == "__main__":
    raise SystemExit(main())

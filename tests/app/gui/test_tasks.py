"""The background-task helper: results and errors arrive on the GUI thread, lanes are serial,
cancel flags reach the work, the model lane runs at a lower OS priority (Linux)."""

from __future__ import annotations

import os
import sys
import threading

import pytest

from app.gui.tasks import TaskRunner, TokenBuffer
from core.errors import InvalidInputError


@pytest.fixture
def runner(qtbot):
    r = TaskRunner()
    yield r
    r.shutdown(5_000)


def test_results_and_errors_arrive_on_the_gui_thread(qtbot, runner):
    gui = threading.get_ident()
    got = []
    runner.submit(lambda: (threading.get_ident(), 42), on_done=lambda r: got.append(("done", r, threading.get_ident())))
    runner.submit(lambda: 1 / 0, on_error=lambda e: got.append(("error", type(e).__name__, threading.get_ident())))
    with qtbot.waitSignal(runner.idle, timeout=5_000):
        pass
    qtbot.waitUntil(lambda: len(got) == 2)
    done = [g for g in got if g[0] == "done"][0]
    assert done[1][0] != gui and done[1][1] == 42 and done[2] == gui
    assert ("error", "ZeroDivisionError", gui) in got
    assert not runner.busy()


def test_an_error_without_handler_is_unhandled(qtbot, runner):
    with qtbot.waitSignal(runner.unhandled, timeout=5_000) as blocker:
        runner.submit(lambda: (_ for _ in ()).throw(InvalidInputError("bad")))
    assert isinstance(blocker.args[1], InvalidInputError)


def test_lanes_are_serial_and_independent(qtbot, runner):
    gate = threading.Event()
    order = []
    runner.submit(lambda: gate.wait(5) and order.append("model-1"), lane="model")
    runner.submit(lambda: order.append("model-2"), lane="model")
    runner.submit(lambda: order.append("db"), lane="db")
    qtbot.waitUntil(lambda: order == ["db"])  # the db lane does not wait for a busy model lane
    assert runner.busy("model")
    gate.set()
    qtbot.waitUntil(lambda: order == ["db", "model-1", "model-2"])


def test_cancel_reaches_the_work(qtbot, runner):
    started = threading.Event()

    def work(cancel):
        started.set()
        while not cancel.cancelled:
            threading.Event().wait(0.005)
        return "stopped"

    got = []
    runner.submit(work, pass_cancel=True, lane="model", on_done=got.append)
    started.wait(5)
    runner.cancel_all()
    qtbot.waitUntil(lambda: got == ["stopped"])


def test_results_that_are_bools_survive(qtbot, runner):
    """Results travel packed in a tuple (PySide6 6.12.0 loses references to emitted bools)."""
    got = []
    for _ in range(300):
        runner.submit(lambda: True, on_done=got.append)
    qtbot.waitUntil(lambda: len(got) == 300, timeout=10_000)
    assert got == [True] * 300 and sys.getrefcount(True) > 300


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="per-thread niceness is Linux-only")
def test_the_memory_manager_thread_runs_at_lower_priority(bank):
    """Replies keep normal priority; the pipeline's background manager thread is niced."""
    from app.gui.app import MANAGER_NICE, build_assistant
    from core.config import Settings
    from core.fakes import FakeBackend
    from core.llm.modelset import ModelSet

    base = os.getpriority(os.PRIO_PROCESS, threading.get_native_id())
    assistant = build_assistant(bank, ModelSet.of(answer=FakeBackend(), manager=FakeBackend()), Settings())
    try:
        manager = [t for t in threading.enumerate() if t.name == "memory-manager" and t.is_alive()][-1]
        assert os.getpriority(os.PRIO_PROCESS, manager.native_id) == max(base, MANAGER_NICE)
        assert os.getpriority(os.PRIO_PROCESS, threading.get_native_id()) == base  # caller untouched
    finally:
        assistant.close()


def test_token_buffer_batches():
    buf = TokenBuffer()
    for piece in ("a", "", "b", "c"):
        buf.append(piece)
    assert buf.take() == "abc" and buf.take() == ""

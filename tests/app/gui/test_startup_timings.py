"""Start-up (issue 17 item 5): the window shows before the models load, both models and the
embedder load in parallel, the placeholder and the first-run card say which phase is running,
a failed load is reported with what was loaded closed, and `--timings` records the phases in
order (stderr or a JSON file). Real Qt offscreen, a real bank on HashEmbedder, FakeBackends."""

from __future__ import annotations

import json
import threading

import pytest

from core.config import ModelSpec, Settings
from core.errors import ModelLoadError
from core.fakes import FakeBackend, HashEmbedder
from tests.app.gui.window_helpers import close_window, window_with_factory


class _GatedEmbedder(HashEmbedder):
    """HashEmbedder whose first `embed` waits for `gate` (the embedder's load)."""

    def __init__(self, gate) -> None:
        super().__init__()
        self.gate, self.loaded = gate, False

    def embed(self, texts):
        if not self.loaded:
            self.gate()
            self.loaded = True
        return super().embed(texts)


def test_both_models_and_the_embedder_load_in_parallel_with_the_phase_shown(qtbot, make_bank, data_home):
    from app.gui.app import make_assistant_factory

    # all three loads must be running at the same time to pass the barrier (serial: it times out)
    barrier = threading.Barrier(3, timeout=10)
    release = threading.Event()
    embedder = _GatedEmbedder(lambda: (barrier.wait(), release.wait(10)))
    bank = make_bank(embedder=embedder)
    made = []

    def loader(spec):  # a slow model load
        barrier.wait()
        release.wait(10)
        made.append(FakeBackend(default="hi"))
        return made[-1]

    window = window_with_factory(qtbot, bank, data_home, make_assistant_factory(bank, loader=loader),
                                 Settings(welcome_shown=True))
    assert window.isVisible() and window.assistant is None and window.chat.input.isReadOnly()
    qtbot.waitUntil(lambda: "answer model: loading" in window.chat.input.placeholderText()
                    and "memory manager model: loading" in window.chat.input.placeholderText()
                    and "embedder: loading" in window.chat.input.placeholderText())
    assert window.chat.input.placeholderText().startswith("Loading the models")
    release.set()
    qtbot.waitUntil(lambda: window.assistant is not None, timeout=10_000)
    assert not window.chat.input.isReadOnly()
    assert window.assistant.models.answer is made[0] or window.assistant.models.answer is made[1]
    assert {id(window.assistant.models.answer), id(window.assistant.models.manager)} == {id(m) for m in made}
    assert embedder.loaded
    close_window(qtbot, window, close_models=True)


def test_a_failed_answer_model_closes_the_manager_loaded_meanwhile(qtbot, bank, data_home):
    from app.gui.app import make_assistant_factory

    made = []

    def loader(spec):
        if spec.path == "/manager.gguf":
            made.append(FakeBackend(default="{}"))
            return made[-1]
        raise ModelLoadError(f"cannot load {spec.path or 'the embedded model'}")

    settings = Settings(welcome_shown=True, answer_model=ModelSpec(path="/answer.gguf"),
                        manager_model=ModelSpec(path="/manager.gguf"), use_shipped_adapters=False)
    window = window_with_factory(qtbot, bank, data_home, make_assistant_factory(bank, loader=loader), settings)
    with qtbot.waitSignal(window.models.loadFailed, timeout=10_000) as failed:
        pass
    assert "embedded model" in str(failed.args[0])
    assert "No model could be loaded" in window.chat.input.placeholderText()
    assert window.assistant is None and window.chat.input.isReadOnly()
    assert len(made) == 1 and made[0].closed  # loaded in parallel, never used: closed
    close_window(qtbot, window, close_models=True)


def test_a_failed_embedder_fails_the_load_and_closes_the_models(qtbot, make_bank, data_home):
    from app.gui.app import make_assistant_factory

    def broken():
        raise ModelLoadError("Could not load the embedder from /nowhere")

    bank = make_bank(embedder=_GatedEmbedder(broken))
    made = []

    def loader(spec):
        made.append(FakeBackend(default="hi"))
        return made[-1]

    window = window_with_factory(qtbot, bank, data_home, make_assistant_factory(bank, loader=loader),
                                 Settings(welcome_shown=True))
    with qtbot.waitSignal(window.models.loadFailed, timeout=10_000) as failed:
        pass
    assert "embedder" in str(failed.args[0])
    assert len(made) == 2 and all(m.closed for m in made)
    assert "No model could be loaded" in window.chat.input.placeholderText()
    close_window(qtbot, window, close_models=True)


def test_the_first_run_card_shows_the_load_phase(qtbot, bank, data_home):
    from app.gui.app import make_assistant_factory
    from app.gui.first_run import FirstRunDialog

    release = threading.Event()

    def loader(spec):
        release.wait(10)
        return FakeBackend(default="hi")

    window = window_with_factory(qtbot, bank, data_home, make_assistant_factory(bank, loader=loader), Settings())
    qtbot.waitUntil(lambda: window.findChild(FirstRunDialog) is not None)
    card = window.findChild(FirstRunDialog)
    qtbot.waitUntil(lambda: "answer model: loading" in card.loading.text())
    assert card.loading.isVisible() and "embedder: done" in card.loading.text()  # HashEmbedder: at once
    release.set()
    qtbot.waitUntil(lambda: "you can start chatting" in card.loading.text(), timeout=10_000)
    card.skip_button.click()
    close_window(qtbot, window, close_models=True)


def test_timings_record_the_phases_in_order_and_report_them(tmp_path, capsys):
    from app.gui.timings import END_PHASES, Timings

    rec = Timings(start=0.0)
    for phase in ("imports_done", "window_shown", "embedder_loaded", "answer_model_loaded",
                  "manager_model_loaded"):
        rec.mark(phase)
    first = rec.get("window_shown")
    rec.mark("window_shown")  # once: the first mark stays
    assert rec.get("window_shown") == first
    rec.dest = str(tmp_path / "t.json")
    rec.mark("input_enabled")  # an end phase: reported now
    data = json.loads((tmp_path / "t.json").read_text())
    assert list(data["phases"]) == ["process_start", "imports_done", "window_shown", "embedder_loaded",
                                    "answer_model_loaded", "manager_model_loaded", "input_enabled"]
    values = list(data["phases"].values())
    assert values == sorted(values)
    assert list(data["cpu_s"]) == list(data["phases"])  # the process's CPU seconds at each phase
    cpu = list(data["cpu_s"].values())
    assert cpu == sorted(cpu) and cpu[-1] > 0
    rec.dest = "-"
    rec.reset()
    rec.mark("imports_done")
    rec.mark(END_PHASES[1])
    err = capsys.readouterr().err
    assert "memory-r1 timings: imports_done" in err and "load_failed" in err and " cpu " in err


@pytest.fixture
def gated_app(monkeypatch, data_home):
    """`app.gui.app.run` with the real bank file but HashEmbedder as `default_embedder()` and
    model loads that wait until the window has been shown (`state`)."""
    import app.gui.app as gui_app
    import core.embeddings
    from app.gui import timings

    import time

    state = {"loads": [], "shown_before_load": []}

    def until_shown():  # a slow load: it ends only after the event loop has shown the window
        deadline = time.monotonic() + 10
        while timings.RECORDER.get("window_shown") is None and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.05)

    embedder = _GatedEmbedder(until_shown)
    monkeypatch.setattr(core.embeddings, "default_embedder", lambda: embedder)
    real_factory = gui_app.make_assistant_factory

    def slow_loader(spec):
        state["shown_before_load"].append(timings.RECORDER.get("window_shown") is not None)
        until_shown()
        state["loads"].append(spec)
        return FakeBackend(default="hi")

    monkeypatch.setattr(gui_app, "make_assistant_factory", lambda bank: real_factory(bank, loader=slow_loader))
    timings.RECORDER.reset()
    yield state
    timings.RECORDER.reset()
    timings.RECORDER.dest = None


def test_run_with_timings_shows_the_window_first_and_writes_the_phases(qapp, gated_app, tmp_path, data_home):
    from app.cli import main

    Settings(welcome_shown=True).save(data_home / "settings.json")
    out = tmp_path / "timings.json"
    code = main(["gui", "--timings", str(out), "--exit-when-ready"])
    assert code == 0
    assert len(gated_app["loads"]) == 2
    phases = json.loads(out.read_text())["phases"]
    names = list(phases)
    assert names[:3] == ["process_start", "imports_done", "window_shown"]
    assert set(names[3:6]) == {"answer_model_loaded", "manager_model_loaded", "embedder_loaded"}
    assert names[-1] == "input_enabled"
    assert list(phases.values()) == sorted(phases.values())


# what the first window must not need: the model runtime, numpy, highlighting (issue 17: the
# window shown within 1 s; they load with the models, after it is on screen)
NOT_BEFORE_SHOW = ("numpy", "llama_cpp", "torch", "transformers", "sentence_transformers", "jinja2", "gguf",
                   "pygments", "sqlite_vec", "core.llm", "core.assistant", "core.catalog", "core.agents", "training",
                   "app.server", "app.cli.memory_cmd", "app.cli.chat_cmd")

SHOWN_RUNNER = """
import json, sys
from PySide6.QtCore import QTimer
from PySide6.QtWidgets import QApplication
import app.gui.main_window as main_window

real_show = main_window.MainWindow.show
seen = {{}}

def show(self):
    real_show(self)
    seen["imported"] = [m for m in {names!r} if m in sys.modules]
    seen["input_enabled"] = not self.chat.input.isReadOnly()
    seen["placeholder"] = self.chat.input.placeholderText()
    self._deferred_load = None  # no model load: only what showing the window needed counts

    def first_turn():  # the first-run card, if any, is open now
        from app.gui.first_run import FirstRunDialog

        seen["card"] = self.findChild(FirstRunDialog) is not None
        seen["with_card"] = [m for m in {names!r} + ("urllib.request", "http.client") if m in sys.modules]
        QApplication.instance().quit()

    QTimer.singleShot(0, first_turn)

main_window.MainWindow.show = show
from app.cli import main
code = main(["gui"])
print("RESULT " + json.dumps({{"code": code, **seen}}))
"""


@pytest.mark.parametrize("first_run", [False, True])
def test_the_real_window_is_shown_before_numpy_and_the_model_runtime_are_imported(data_home, first_run):
    import os
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    Settings(welcome_shown=not first_run).save(data_home / "settings.json")
    env = dict(os.environ, PYTHONPATH=str(root), MEMORY_R1_HOME=str(data_home), QT_QPA_PLATFORM="offscreen")
    res = subprocess.run([sys.executable, "-c", SHOWN_RUNNER.format(names=NOT_BEFORE_SHOW)], cwd=root, env=env,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    out = json.loads([x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1][len("RESULT "):])
    assert out["code"] == 0
    assert out["imported"] == [], out["imported"]
    assert out["card"] is first_run
    # the card's offer reads the catalog (and core.llm.gguf_info's sizes); no network code, no runtime
    assert set(out["with_card"]) == ({"core.catalog", "core.llm"} if first_run else set()), out["with_card"]
    assert not out["input_enabled"] and out["placeholder"].startswith("Loading the models")
    assert (data_home / "memory.sqlite3").is_file()  # the real bank (SQLite + sqlite-vec) was opened

"""Settings persist; a bad .gguf is reported and the old model stays; background model loading;
the first-run welcome; the excepthook's crash dialog; `memory-r1` without a display."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from PySide6.QtWidgets import QMessageBox, QWidget

from app.gui.settings_dialog import SettingsDialog
from core.config import ModelSpec, Settings
from core.fakes import FakeBackend
from tests.app.gui.window_helpers import close_window, window_with_factory

ROOT = Path(__file__).resolve().parents[3]


def _visible(window, name):
    return [b for b in window.findChildren(QMessageBox, name) if b.isVisible()]


def _open_settings(window) -> SettingsDialog:
    window.open_settings()
    return [d for d in window.findChildren(SettingsDialog) if d.isVisible()][0]


def test_settings_dialog_persists_and_applies(qtbot, make_window, answer_backend, manager_backend, data_home):
    window = make_window(answer_backend, manager_backend)
    dialog = _open_settings(window)
    assert dialog.findChild(type(dialog.error_label), "dataFolder").text() == str(data_home)
    dialog.temperature.setValue(0.25)
    dialog.max_tokens.setValue(300)
    dialog.top_k.setValue(12)
    dialog.repeat_penalty.setValue(1.1)
    assert dialog.prefill.isChecked()  # on by default
    dialog.prefill.click()
    dialog._ok()
    saved = Settings.load(data_home / "settings.json")
    assert (saved.temperature, saved.max_tokens, saved.top_k, saved.repeat_penalty) == (0.25, 300, 12, 1.1)
    assert (window.assistant.settings.temperature, window.assistant.settings.max_tokens) == (0.25, 300)
    assert saved.prefill_while_typing is False and window.assistant.settings.prefill_while_typing is False
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):
        window.chat.input.setPlainText("hello")
        window.chat.submit()
    params = answer_backend.calls[-1]["params"]
    assert (params.temperature, params.max_tokens, params.top_k, params.repeat_penalty) == (0.25, 300, 12, 1.1)
    # reopening shows the saved values
    again = _open_settings(window)
    assert (again.temperature.value(), again.max_tokens.value()) == (0.25, 300)
    assert not again.prefill.isChecked()
    again.reject()


def test_invalid_values_are_refused_in_the_dialog(qtbot, make_window, answer_backend, manager_backend, data_home):
    window = make_window(answer_backend, manager_backend)
    dialog = _open_settings(window)
    dialog.answer.model.set_value("/models/x.gguf")
    dialog.n_ctx.setValue(256)
    new = dialog.result_settings()
    assert new.answer_model == ModelSpec(path="/models/x.gguf", n_ctx=256)
    new.max_tokens = 0
    dialog.result_settings = lambda: new
    dialog._ok()
    assert dialog.isVisible() and "Max tokens" in dialog.error_label.text()
    assert not (data_home / "settings.json").exists()
    dialog.reject()


def test_bad_gguf_is_reported_and_the_old_model_stays(qtbot, make_window, answer_backend, manager_backend,
                                                      data_home, tmp_path):
    from core.llm.runtime import load_backend

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    window = make_window(answer_backend, manager_backend, backend_loader=load_backend)
    dialog = _open_settings(window)
    dialog.answer.model.set_value(str(bad))
    dialog.temperature.setValue(0.5)
    with qtbot.waitSignal(window.modelsChanged, timeout=20_000) as blocker:
        dialog._ok()
    assert blocker.args == ["failed"]
    box = _visible(window, "userError")[0]
    assert "broken.gguf" in box.text()
    box.close()
    assert window.assistant.models.answer is answer_backend and not answer_backend.closed
    saved = Settings.load(data_home / "settings.json")
    assert saved.answer_model.path is None and saved.temperature == 0.5  # the rest was saved
    assert window.settings.answer_model.path is None
    with qtbot.waitSignal(window.replyFinished, timeout=10_000):  # and chat still works
        window.chat.input.setPlainText("still there?")
        window.chat.submit()


def test_a_good_model_is_swapped_in_and_the_old_one_closed(qtbot, make_window, answer_backend, manager_backend,
                                                           data_home, tmp_path):
    new_backend = FakeBackend(default="From the new model.")
    loaded = []

    def loader(spec):
        loaded.append(spec)
        return new_backend

    window = make_window(answer_backend, manager_backend, backend_loader=loader)
    dialog = _open_settings(window)
    dialog.answer.model.set_value(str(tmp_path / "better.gguf"))
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as blocker:
        dialog._ok()
    assert blocker.args == ["ok"]
    assert [s.path for s in loaded] == [str(tmp_path / "better.gguf")]
    assert window.assistant.models.answer is new_backend and answer_backend.closed
    assert window.assistant.models.manager is manager_backend and not manager_backend.closed
    assert Settings.load(data_home / "settings.json").answer_model.path == str(tmp_path / "better.gguf")
    assert "better.gguf" in window.model_label.text()
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as reply:
        window.chat.input.setPlainText("hi")
        window.chat.submit()
    assert reply.args[0].text == "From the new model."


def test_models_load_in_the_background_with_progress(qtbot, bank, data_home):
    from core.assistant.pipeline import Assistant

    def factory(settings, progress):  # runs on the model worker
        progress("Loading the answer model…")
        return Assistant(bank, FakeBackend(default="hi"), FakeBackend(default='{"facts": []}'), settings=settings)

    window = window_with_factory(qtbot, bank, data_home, factory, Settings())
    assert window.chat.input.isReadOnly()  # until the model is there
    with qtbot.waitSignal(window.assistantReady, timeout=10_000):
        pass
    assert not window.chat.input.isReadOnly() and not window.progress.isVisible()
    # first run: the welcome card, dismissed once and for all
    assert window.chat.welcome.isVisible()
    window.chat.welcome.button.click()
    assert not window.chat.welcome.isVisible()
    assert Settings.load(data_home / "settings.json").welcome_shown is True
    close_window(qtbot, window)


def test_a_failed_first_load_is_reported_and_settings_can_fix_it(qtbot, bank, data_home):
    from core.errors import ModelLoadError
    from core.assistant.pipeline import Assistant

    calls = []

    def factory(settings, progress):
        calls.append(settings.answer_model.path)
        if settings.answer_model.path == "/missing.gguf":
            raise ModelLoadError("The model file /missing.gguf does not exist.")
        return Assistant(bank, FakeBackend(default="ok"), FakeBackend(default='{"facts": []}'), settings=settings)

    settings = Settings(answer_model=ModelSpec(path="/missing.gguf"), welcome_shown=True)
    window = window_with_factory(qtbot, bank, data_home, factory, settings)
    qtbot.waitUntil(lambda: bool(_visible(window, "userError")))
    _visible(window, "userError")[0].close()
    assert window.assistant is None and window.chat.input.isReadOnly()
    fixed = Settings(welcome_shown=True)
    with qtbot.waitSignal(window.assistantReady, timeout=10_000):
        window.apply_settings(fixed)
    assert calls == ["/missing.gguf", None]
    assert not window.chat.input.isReadOnly()
    close_window(qtbot, window)


def test_a_corrupt_custom_model_at_startup_falls_back_to_the_embedded_one(qtbot, bank, data_home, tmp_path, caplog):
    from app.gui.app import make_assistant_factory
    from core.llm.runtime import load_backend

    bad = tmp_path / "broken.gguf"
    bad.write_bytes(b"this is not a GGUF file" * 100)
    embedded = []

    def loader(spec):  # the real runtime refuses the corrupt file; the embedded model is a fake
        if spec.path:
            return load_backend(spec)
        embedded.append(FakeBackend(default="hi"))
        return embedded[-1]

    settings = Settings(welcome_shown=True, answer_model=ModelSpec(path=str(bad)), use_shipped_adapters=False)
    window = window_with_factory(qtbot, bank, data_home, make_assistant_factory(bank, loader=loader), settings)
    with qtbot.waitSignal(window.assistantReady, timeout=10_000):
        pass
    models = window.assistant.models
    assert models.answer is embedded[0] and models.manager is embedded[1]
    assert models.spec("answer").path is None
    assert any("broken.gguf" in r.getMessage() and "Using the embedded model for the answer instead" in r.getMessage()
               for r in caplog.records)
    assert window.errors == []
    close_window(qtbot, window)


def test_excepthook_shows_the_crash_dialog_with_the_log_path(qtbot, make_window, answer_backend, manager_backend,
                                                             data_home):
    from app.gui.dialogs import install_excepthook

    window = make_window(answer_backend, manager_backend)
    log_path = data_home / "logs" / "memory-r1.log"
    hook = install_excepthook(lambda: window, log_path)
    try:
        try:
            raise ValueError("a bug in a slot")
        except ValueError:
            sys.excepthook(*sys.exc_info())
        qtbot.waitUntil(lambda: bool(_visible(window, "crashDialog")))
        box = _visible(window, "crashDialog")[0]
        assert "a bug in a slot" in box.text() and str(log_path) in box.text()
        assert "Traceback" in box.detailedText()
        box.close()
    finally:
        hook.uninstall()


def test_no_display_prints_one_line_and_exits_2():
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    res = subprocess.run([sys.executable, "-m", "app"], cwd=ROOT, env=env, capture_output=True, text=True,
                         timeout=120)
    assert res.returncode == 2, res.stderr
    assert "no display" in res.stderr and "Traceback" not in res.stderr
    assert len(res.stderr.strip().splitlines()) == 1


def test_display_detection():
    from app.cli.gui_cmd import display_available

    assert display_available({"DISPLAY": ":0"}, "linux")
    assert display_available({"WAYLAND_DISPLAY": "wayland-0"}, "linux")
    assert display_available({"QT_QPA_PLATFORM": "offscreen"}, "linux")
    assert not display_available({}, "linux")
    assert not display_available({"QT_QPA_PLATFORM": "xcb"}, "linux")
    assert display_available({}, "win32") and display_available({}, "darwin")


def test_models_dialog_opens_the_model_manager(qtbot, make_window, answer_backend, manager_backend):
    from PySide6.QtWidgets import QDialog

    window = make_window(answer_backend, manager_backend)
    window.open_models()
    dialog = [d for d in window.findChildren(QDialog, "modelsDialog") if d.isVisible()][0]
    page = dialog.findChild(QWidget, "modelsPage")
    assert page is not None
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as blocker:
        changed = Settings(welcome_shown=True, answer_model=ModelSpec(path="/nowhere/model.gguf"))
        page.settings_changed.emit(changed)  # what the page emits after a role change
    assert blocker.args == ["failed"]  # a missing file is reported; the old model stays
    [b.close() for b in window.findChildren(QMessageBox, "userError")]
    dialog.reject()


@pytest.mark.derive  # the real background derivation
def test_the_faster_embedded_model_switch_is_saved_and_reloads_the_embedded_roles(
        qtbot, make_window, answer_backend, manager_backend, data_home, tmp_path, monkeypatch):
    import numpy as np

    from core import fakes
    from core.llm import variant

    # a small real GGUF standing in for the shipped file; a quantiser that writes a Q8_0-typed one
    (tmp_path / "ship").mkdir()
    shipped = fakes.write_gguf(tmp_path / "ship" / "Tiny-Model.Q4_1.gguf",
                               {"token_embd.weight": np.ones(64, dtype=np.float32)}, file_type=3)
    monkeypatch.setenv("MEMORY_R1_EMBEDDED_GGUF", str(shipped))
    monkeypatch.setattr(variant, "_sha_cache", {})
    derived = []

    def quantize(source, dst, quant, *, threads=None, allow_requantize=False):
        derived.append(quant)
        fakes.write_gguf(Path(dst), {"token_embd.weight": np.full(64, 2.0, dtype=np.float32)},
                         file_type=variant.FILE_TYPES[quant])

    monkeypatch.setattr(variant, "quantize_gguf", quantize)
    loaded = []

    def loader(spec):
        loaded.append(spec)
        return FakeBackend(default="From the faster copy." if spec.path else "From the shipped file.")

    # a user who had switched it off (it is on by default)
    window = make_window(answer_backend, manager_backend, backend_loader=loader,
                         settings=Settings(welcome_shown=True, fast_embedded_model=False))
    target = variant.variant_path(shipped)

    # not derived yet: switching it on saves it, makes the copy in the background, reloads nothing
    dialog = _open_settings(window)
    assert not dialog.fast_embedded.isChecked() and dialog.fast_embedded.isVisibleTo(dialog)
    dialog.fast_embedded.click()
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as blocker:
        dialog._ok()
    assert blocker.args == ["ok"] and loaded == []
    assert Settings.load(data_home / "settings.json").fast_embedded_model is True
    qtbot.waitUntil(lambda: variant.check_variant(target, shipped) is None, timeout=10_000)
    assert derived == [variant.FAST_QUANT]
    assert window.assistant.models.answer is answer_backend

    # with the copy there, off and on again each reload both embedded roles at once
    again = _open_settings(window)
    assert again.fast_embedded.isChecked()  # the saved value
    again.fast_embedded.click()
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000):
        again._ok()
    assert [s.path for s in loaded] == [None, None]  # the shipped file
    assert Settings.load(data_home / "settings.json").fast_embedded_model is False
    assert answer_backend.closed and manager_backend.closed
    third = _open_settings(window)
    assert not third.fast_embedded.isChecked()
    third.fast_embedded.click()
    with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as blocker:
        third._ok()
    assert blocker.args == ["ok"]
    assert [s.path for s in loaded[2:]] == [str(target), str(target)]
    assert window.settings.fast_embedded_model is True and window.assistant.settings.fast_embedded_model is True
    assert derived == [variant.FAST_QUANT]  # derived once
    with qtbot.waitSignal(window.replyFinished, timeout=10_000) as reply:
        window.chat.input.setPlainText("hi")
        window.chat.submit()
    assert reply.args[0].text == "From the faster copy."

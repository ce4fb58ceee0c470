"""Shipped adapters (`assets/adapters/<role>/`) are used by default, for the model they were
trained on only; the user's own adapter wins; the setting and `--no-shipped-adapters` turn them
off. Over a temporary assets folder (the real catalog copied in, `core.paths.assets_dir`
patched). One test loads the real embedded SmolLM2 with a real GGUF LoRA adapter shipped this
way; one drives the real main window (status text, a settings change reloading the model)."""

from __future__ import annotations

import json
import logging
import shutil
from pathlib import Path

import numpy as np
import pytest

import core.paths
from core.config import ModelSpec, Settings
from core.errors import InvalidInputError, ModelLoadError
from core.catalog.catalog import load_catalog
from core.catalog.shipped import (base_sha256, effective_spec, is_shipped, shipped_adapter,
                                 with_shipped_adapter)
from core.paths import embedded_gguf

REAL_ASSETS = core.paths.assets_dir()
EMBEDDED_SHA = next(e.sha256 for e in load_catalog(REAL_ASSETS / "catalog.json") if e.embedded)
OTHER_SHA = "c3" * 32


@pytest.fixture
def assets(tmp_path, monkeypatch):
    """A temporary assets folder (with the real catalog, no adapters) that the app uses."""
    root = tmp_path / "assets"
    root.mkdir()
    shutil.copy(REAL_ASSETS / "catalog.json", root / "catalog.json")
    monkeypatch.setattr(core.paths, "assets_dir", lambda: root)
    return root


def export_meta(adapter: Path, base_sha: str | None = EMBEDDED_SHA, **extra) -> dict:
    """The meta.json keys `training.export.gguf.write_meta` writes for a LoRA export."""
    return {"format": "memory-r1-export/1", "kind": "lora", "file": adapter.name, "sha256": "0" * 64,
            "base": {"path": "/train/SmolLM2-135M-Instruct.Q4_1.gguf", "sha256": base_sha},
            "lora": {"r": 4}, "validation": {"f1": 0.3}, "git_revision": None, **extra}


def ship(assets: Path, folder_role: str, name: str, *, content: bytes = b"GGUF adapter stand-in",
         **meta) -> Path:
    """An adapter file + `<name>.meta.json` under assets/adapters/<folder_role>/ (fakes: roles
    read only the meta; the runtime validates the file itself when it loads)."""
    folder = assets / "adapters" / folder_role
    folder.mkdir(parents=True, exist_ok=True)
    adapter = folder / f"{name}.gguf"
    adapter.write_bytes(content)
    adapter.with_suffix(".meta.json").write_text(json.dumps(export_meta(adapter, **meta)))
    return adapter


def test_embedded_sha_comes_from_the_catalog_and_matches_adapter_meta(assets):
    assert base_sha256(embedded_gguf()) == EMBEDDED_SHA  # name + exact size: no 98 MB hashing
    assert base_sha256(assets / "catalog.json") is None  # a file neither catalog nor store knows


def test_matching_adapter_is_the_default_for_its_role_only(assets, caplog):
    caplog.set_level(logging.INFO, logger="core.catalog.shipped")
    adapter = ship(assets, "answer", "answer-v1")
    settings = Settings()
    spec = effective_spec(settings, "answer")
    assert spec.adapter == str(adapter) and spec.path is None
    assert settings.answer_model.adapter is None  # settings untouched: a copy is returned
    assert effective_spec(settings, "manager").adapter is None  # the folder decides the role
    assert any("using the shipped answer adapter" in r.getMessage() and "answer-v1" in r.getMessage()
               for r in caplog.records)
    assert is_shipped(spec.adapter) and not is_shipped(assets / "catalog.json") and not is_shipped(None)
    manager = ship(assets, "manager", "manager-v1", role="manager")
    assert effective_spec(settings, "manager").adapter == str(manager)


def test_adapters_for_another_base_kind_or_role_are_skipped(assets, caplog):
    caplog.set_level(logging.INFO, logger="core.catalog.shipped")
    ship(assets, "answer", "a-other-base", base_sha=OTHER_SHA)
    ship(assets, "answer", "b-merged", kind="merged")
    ship(assets, "answer", "c-manager-role", role="manager")
    assert effective_spec(Settings(), "answer").adapter is None
    reasons = " ".join(r.getMessage() for r in caplog.records)
    assert "another base model" in reasons and "'merged'" in reasons and "manager role" in reasons
    good = ship(assets, "answer", "d-good")  # the first one that matches is used
    assert shipped_adapter("answer", embedded_gguf(), EMBEDDED_SHA) == good
    assert shipped_adapter("answer", embedded_gguf(), "d4" * 32) is None
    # a model of the user's that no catalog or store identifies gets none of them
    custom = ModelSpec(path=str(assets / "mine.gguf"))
    (assets / "mine.gguf").write_bytes(b"GGUF?")
    assert with_shipped_adapter(custom, "answer").adapter is None


def test_setting_off_and_user_adapter_win(assets):
    ship(assets, "answer", "answer-v1")
    off = Settings(use_shipped_adapters=False)
    assert effective_spec(off, "answer") == off.answer_model
    mine = Settings(answer_model=ModelSpec(adapter="/my/adapter.gguf", n_ctx=2048))
    assert effective_spec(mine, "answer") == ModelSpec(adapter="/my/adapter.gguf", n_ctx=2048)


def test_missing_folder_gives_none_without_raising(assets, monkeypatch, tmp_path):
    assert effective_spec(Settings(), "answer").adapter is None  # no assets/adapters at all
    (assets / "adapters").mkdir()
    assert shipped_adapter("manager", embedded_gguf(), EMBEDDED_SHA) is None
    monkeypatch.setattr(core.paths, "assets_dir", lambda: tmp_path / "nowhere")  # no catalog either
    assert effective_spec(Settings(), "answer") == Settings().answer_model
    with pytest.raises(InvalidInputError, match="Unknown role"):
        shipped_adapter("critic", embedded_gguf(), EMBEDDED_SHA)


def test_cli_specs_use_shipped_adapters_unless_told_not_to(assets, data_home):
    from app.cli import build_parser, chat_cmd

    answer, manager = ship(assets, "answer", "answer-v1"), ship(assets, "manager", "manager-v1")
    parser = build_parser()
    _, a, m = chat_cmd._specs(parser.parse_args(["ask", "q"]))
    assert (a.adapter, m.adapter) == (str(answer), str(manager))
    _, a, m = chat_cmd._specs(parser.parse_args(["ingest", "f.jsonl", "--no-shipped-adapters"]))
    assert (a.adapter, m.adapter) == (None, None)
    _, a, m = chat_cmd._specs(parser.parse_args(["chat", "--answer-adapter", "mine.gguf"]))
    assert (a.adapter, m.adapter) == ("mine.gguf", str(manager))  # explicit wins, per role
    Settings(use_shipped_adapters=False).save(data_home / "settings.json")
    _, a, m = chat_cmd._specs(parser.parse_args(["ask", "q"]))
    assert (a.adapter, m.adapter) == (None, None)


def test_gui_load_drops_a_shipped_adapter_that_fails(assets, monkeypatch):
    import core.llm.runtime
    from core.fakes import FakeBackend
    from core.llm.modelset import ModelSet

    adapter = ship(assets, "answer", "broken")
    tried = []
    backend = FakeBackend()

    def load(spec):
        tried.append(spec)
        if spec.adapter:
            raise ModelLoadError("broken.gguf is not a LoRA adapter GGUF.")
        return backend

    monkeypatch.setattr(core.llm.runtime, "load_backend", load)
    progress = []
    models = ModelSet.for_settings(Settings(), roles=("answer",)).load(progress=progress.append)
    assert models.answer is backend
    assert [s.adapter for s in tried] == [str(adapter), None]
    assert "without the shipped adapter" in progress[-1]


def _lora_gguf(path: Path, scale: float) -> bytes:
    """A real GGUF LoRA adapter for SmolLM2-135M (attn_q of its 30 blocks, rank 4)."""
    from core.fakes import write_gguf

    rng = np.random.default_rng(0)
    tensors = {}
    for layer in range(30):
        tensors[f"blk.{layer}.attn_q.weight.lora_a"] = rng.normal(0, 1, (4, 576)).astype(np.float32)
        tensors[f"blk.{layer}.attn_q.weight.lora_b"] = (rng.normal(0, 1, (576, 4)) * scale).astype(np.float32)
    return write_gguf(path, tensors, lora=True, lora_alpha=8.0).read_bytes()


@pytest.mark.slow
def test_real_embedded_model_loads_with_the_shipped_adapter(assets, tmp_path):
    from core.llm.runtime import load_backend
    from core.types import GenParams

    adapter = ship(assets, "answer", "answer-v1", content=_lora_gguf(tmp_path / "lora.gguf", 1.0))
    greedy, hello = GenParams(temperature=0.0, max_tokens=8), [{"role": "user", "content": "Tell me about the sea."}]
    replies = {}
    for on in (True, False):
        spec = effective_spec(Settings(use_shipped_adapters=on), "answer")
        spec.n_ctx, spec.n_threads = 512, 1
        with load_backend(spec) as backend:
            assert backend.adapter_path == (adapter if on else None)
            replies[on] = "".join(backend.complete(hello, params=greedy))
    assert replies[True] != replies[False]  # the adapter is attached, not just named


def test_window_says_shipped_adapter_and_reloads_when_the_setting_changes(qtbot, assets, data_home):
    pytest.importorskip("PySide6")
    from app.gui.main_window import MainWindow
    from core.fakes import HashEmbedder
    from core.fakes import FakeBackend
    from core.memory.bank import MemoryBank
    from core.assistant.pipeline import Assistant

    adapter = ship(assets, "answer", "answer-v1")
    answer, manager, plain = FakeBackend(default="hi"), FakeBackend(default='{"facts": []}'), FakeBackend()
    answer.adapter_path = adapter  # what LlamaBackend reports for the adapter it attached
    loaded = []

    def loader(spec):
        loaded.append(spec)
        return plain

    settings = Settings(welcome_shown=True)
    bank = MemoryBank(data_home / "memory.sqlite3", HashEmbedder())
    assistant = Assistant(bank, answer, manager, settings=settings)
    window = MainWindow(bank, settings, assistant=assistant, backend_loader=loader,
                        settings_file=data_home / "settings.json")
    window.show()
    qtbot.waitUntil(lambda: window.memory.count_label.text() != "")  # its first loads are done
    try:
        assert window.model_label.text().endswith("+ shipped adapter")
        with qtbot.waitSignal(window.modelsChanged, timeout=10_000) as blocker:
            window.apply_settings(Settings(welcome_shown=True, use_shipped_adapters=False))
        assert blocker.args == ["ok"]
        assert [s.adapter for s in loaded] == [None]  # only the answer role had a shipped adapter
        assert window.assistant.models.answer is plain and answer.closed
        assert "adapter" not in window.model_label.text()
        assert Settings.load(data_home / "settings.json").use_shipped_adapters is False
    finally:
        window.close()
        qtbot.waitUntil(lambda: not window.isVisible(), timeout=30_000)
        assistant.close()
        window.deleteLater()
        qtbot.wait(1)
        bank.close()

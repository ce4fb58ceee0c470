"""Roles: a model per role, adapters only for the base model named in their meta.json."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from core.config import Settings, settings_path
from core.errors import InvalidInputError
from core.catalog.roles import (adapter_matches, adapters_for, assign_role, check_adapter,
                               release_model)
from core.catalog.store import ModelStore
from core.paths import embedded_gguf

SHA_A, SHA_B = "a1" * 32, "b2" * 32


def make_adapter(folder: Path, name: str, meta: dict | None, sidecar: bool = False) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    adapter = folder / f"{name}.gguf"
    adapter.write_bytes(b"GGUF adapter stand-in")  # roles only read meta.json
    if meta is not None:
        target = adapter.with_suffix(".meta.json") if sidecar else folder / "meta.json"
        target.write_text(json.dumps(meta))
    return adapter


def test_sha256_decides_when_present(tmp_path):
    base = tmp_path / "base.gguf"
    assert adapter_matches({"base_model": {"path": "/elsewhere/base.gguf", "sha256": SHA_A}},
                           base, SHA_A) == adapter_matches({"base_sha256": SHA_A}, base, SHA_A)
    ok = adapter_matches({"base_model_sha256": SHA_A.upper()}, base, SHA_A)
    assert ok.ok and ok.verified
    # same file name, other hash: refused (a re-quantised file with the same name)
    bad = adapter_matches({"base_model": {"path": str(base), "sha256": SHA_B}}, base, SHA_A)
    assert not bad.ok and "another base model" in bad.reason


def test_name_only_meta_is_a_weaker_match(tmp_path):
    check = adapter_matches({"base_model": "/train/models/base.gguf"}, tmp_path / "base.gguf", SHA_A)
    assert check.ok and not check.verified and "no sha256" in check.reason
    assert not adapter_matches({"base_model": "other.gguf"}, tmp_path / "base.gguf", SHA_A).ok
    assert not adapter_matches({}, tmp_path / "base.gguf", SHA_A).ok
    assert not adapter_matches(None, tmp_path / "base.gguf", SHA_A).ok


def test_adapters_for_lists_only_matching_ones(tmp_path):
    base = tmp_path / "base.gguf"
    good = make_adapter(tmp_path / "adapters" / "answer-v1", "adapter", {"base_model_sha256": SHA_A})
    make_adapter(tmp_path / "adapters" / "other", "adapter", {"base_model_sha256": SHA_B})
    make_adapter(tmp_path / "adapters" / "nometa", "adapter", None)
    side = make_adapter(tmp_path / "adapters", "manager-v2", {"base_sha256": SHA_A}, sidecar=True)
    found = adapters_for(base, SHA_A, dirs=[tmp_path / "adapters", tmp_path / "missing"])
    assert sorted(p for p, _ in found) == sorted([good, side])
    assert all(c.verified for _, c in found)


def test_assign_role_checks_the_adapter_and_keeps_roles_separate(tmp_path):
    settings = Settings()
    model = tmp_path / "qwen.gguf"
    adapter = make_adapter(tmp_path / "a", "lora", {"base_model_sha256": SHA_A})
    assign_role(settings, "answer", model, model_sha256=SHA_A, adapter=adapter)
    assert settings.answer_model.path == str(model) and settings.answer_model.adapter == str(adapter)
    assert settings.manager_model.path is None  # the other role is untouched
    with pytest.raises(InvalidInputError, match="cannot be used with this model"):
        assign_role(settings, "manager", model, model_sha256=SHA_B, adapter=adapter)
    assert settings.manager_model.adapter is None
    with pytest.raises(InvalidInputError, match="Unknown role"):
        assign_role(settings, "critic", model)
    # a model change drops the old adapter; back to the embedded model
    assign_role(settings, "answer", None, embedded=True)
    assert settings.answer_model.path is None and settings.answer_model.adapter is None


def test_release_model_moves_roles_back_to_embedded(tmp_path):
    settings = Settings()
    model = tmp_path / "m.gguf"
    assign_role(settings, "answer", model)
    assign_role(settings, "manager", model)
    assert release_model(settings, model) == ["answer", "manager"]
    assert settings.answer_model.path is None and settings.manager_model.path is None


def test_embedded_model_adapter_by_its_real_hash(data_home, tmp_path):
    store = ModelStore(data_home)
    embedded = store.embedded()
    sha = store.sha256_of(embedded)
    adapter = make_adapter(tmp_path / "ad", "answer", {"base_model": {
        "path": str(embedded_gguf()), "sha256": sha}})
    assert check_adapter(adapter, embedded.path, sha).verified
    assert not check_adapter(tmp_path / "absent.gguf", embedded.path, sha).ok


def test_cli_use_sets_both_roles_and_persists(data_home, tmp_path, capsys):
    import numpy as np

    from app.cli import main
    from core.fakes import write_gguf

    gguf_file = write_gguf(tmp_path / "Pick-Me.gguf", {"token_embd.weight": np.zeros(64, dtype=np.float32)})
    assert main(["models", "import", str(gguf_file), "--link", "--json"]) == 0
    model_id = json.loads(capsys.readouterr().out)["id"]
    assert main(["models", "use", model_id, "--role", "manager"]) == 0
    saved = Settings.load(settings_path())
    assert saved.manager_model.path == str(gguf_file.resolve()) and saved.answer_model.path is None
    bad = make_adapter(tmp_path / "ad", "x", {"base_model_sha256": SHA_B})
    assert main(["models", "use", model_id, "--role", "answer", "--adapter", str(bad)]) == 1
    assert "cannot be used" in capsys.readouterr().err
    assert main(["models", "remove", model_id, "--yes", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["roles_reset_to_embedded"] == ["manager"]
    assert Settings.load(settings_path()).manager_model.path is None

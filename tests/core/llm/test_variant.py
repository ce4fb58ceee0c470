"""The embedded model's derived variant (core.llm.variant) and the setting that uses it
(core.catalog.shipped.effective_spec): derivation is atomic and recorded, a damaged or missing
variant falls back to the shipped file (one log line) and is derived again, the setting switches
the path. Fast tests quantise with a stand-in that writes a small real GGUF; the slow ones run
llama.cpp on the real embedded model."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import pytest

from core import fakes
from core.catalog.shipped import effective_spec
from core.config import Settings
from core.errors import ModelLoadError
from core.fileio import sha256_file
from core.llm import variant
from core.paths import embedded_gguf

pytestmark = pytest.mark.derive  # the real background derivation (tests/conftest.py)


@pytest.fixture(autouse=True)
def _fresh_checksums():
    """Each test is a new process as far as the checksum cache goes."""
    variant._sha_cache.clear()
    yield
    variant._sha_cache.clear()


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch, data_home):
    """A small real GGUF standing in for the shipped Q4_1 file, and a quantiser that writes a
    Q8_0-typed GGUF (llama.cpp is not run)."""
    (tmp_path / "ship").mkdir()
    src = fakes.write_gguf(tmp_path / "ship" / "Tiny-Model.Q4_1.gguf",
                           {"token_embd.weight": np.ones(64, dtype=np.float32)}, file_type=3)
    monkeypatch.setenv("MEMORY_R1_EMBEDDED_GGUF", str(src))
    calls = []

    def quantize(source, dst, quant, *, threads=None, allow_requantize=False):
        calls.append((Path(source), Path(dst), quant, allow_requantize))
        fakes.write_gguf(Path(dst), {"token_embd.weight": np.full(64, len(calls), dtype=np.float32)},
                         file_type=variant.FILE_TYPES[quant])

    monkeypatch.setattr(variant, "quantize_gguf", quantize)
    return src, calls


def _leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def test_the_variant_lives_in_the_data_folder_named_by_its_format(data_home):
    assert variant.variant_path("/x/SmolLM2-135M-Instruct.Q4_1.gguf") == \
        data_home / "models" / "derived" / "SmolLM2-135M-Instruct.Q8_0.gguf"
    assert variant.variant_path("/x/plain.gguf", "q8_0").name == "plain.Q8_0.gguf"
    assert variant.record_path(Path("/d/a.Q8_0.gguf")) == Path("/d/a.Q8_0.json")


def test_derivation_is_recorded_with_both_checksums(fake_shipped, data_home):
    src, calls = fake_shipped
    record = variant.derive_variant()
    target = variant.variant_path(src)
    assert record.path == str(target) and target.is_file()
    assert calls == [(src, calls[0][1], "Q8_0", True)] and calls[0][1] != target  # into a temp file
    saved = json.loads(variant.record_path(target).read_text())
    assert saved["sha256"] == sha256_file(target) and saved["size_bytes"] == target.stat().st_size
    assert saved["source_sha256"] == sha256_file(src) and saved["source_name"] == src.name
    assert saved["quant"] == "Q8_0" and saved["seconds"] >= 0
    assert variant.check_variant(target, src) is None
    assert sorted(p.name for p in target.parent.iterdir()) == ["Tiny-Model.Q8_0.gguf", "Tiny-Model.Q8_0.json", "lock"]


def test_a_derivation_that_fails_half_way_leaves_the_old_variant_whole(fake_shipped, monkeypatch):
    src, _ = fake_shipped
    variant.derive_variant()
    target = variant.variant_path(src)
    before, record_before = target.read_bytes(), variant.record_path(target).read_text()

    def broken(source, dst, quant, **kw):
        Path(dst).write_bytes(b"GGUF half a file")
        raise ModelLoadError("llama.cpp could not quantise it (code 1).")

    monkeypatch.setattr(variant, "quantize_gguf", broken)
    with pytest.raises(ModelLoadError):
        variant.derive_variant()
    assert target.read_bytes() == before and variant.record_path(target).read_text() == record_before
    assert _leftovers(target.parent) == []
    assert variant.check_variant(target, src) is None


def test_a_stale_temp_file_of_a_killed_derivation_is_removed(fake_shipped):
    src, _ = fake_shipped
    target = variant.variant_path(src)
    target.parent.mkdir(parents=True)
    (target.parent / f".{target.name}-abc.gguf").write_bytes(b"partial")
    variant.derive_variant()
    assert _leftovers(target.parent) == []


def test_the_setting_switches_the_embedded_path(fake_shipped):
    src, _ = fake_shipped
    variant.derive_variant()
    off, on = Settings(fast_embedded_model=False), Settings()
    assert on.fast_embedded_model is True  # on by default: val F1 within noise, 1.9x faster prompts
    for role in ("answer", "manager"):
        assert effective_spec(off, role).path is None
        assert effective_spec(on, role).path == str(variant.variant_path(src))
    assert Settings.from_dict(on.to_dict()).fast_embedded_model is True


def test_a_model_of_the_users_own_is_left_alone(fake_shipped, tmp_path):
    variant.derive_variant()
    settings = Settings(fast_embedded_model=True)
    settings.answer_model.path = str(tmp_path / "mine.gguf")
    assert effective_spec(settings, "answer").path == str(tmp_path / "mine.gguf")


def _damage(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage, reason", [
    (_damage, "checksum does not match"),
    (lambda p: p.write_bytes(b"GGUF"), "size does not match"),
    (lambda p: variant.record_path(p).unlink(), "record is missing"),
    (lambda p: (p.unlink(), variant.record_path(p).unlink()), "not derived yet"),
    (lambda p: variant.record_path(p).write_text("{not json"), "record is missing or unreadable"),
])
def test_a_damaged_or_missing_variant_falls_back_with_one_line_and_is_derived_again(
        fake_shipped, caplog, damage, reason):
    src, calls = fake_shipped
    variant.derive_variant()
    target = variant.variant_path(src)
    damage(target)
    variant._sha_cache.clear()  # the next start
    assert reason in (variant.check_variant(target, src) or "")
    with caplog.at_level(logging.INFO, logger="core.llm.variant"):
        assert effective_spec(Settings(fast_embedded_model=True), "answer").path is None  # the shipped file
        thread = variant._bg_thread
        assert thread is not None
        thread.join(10)
    lines = [r for r in caplog.records if r.name == "core.llm.variant" and r.levelno >= logging.INFO
             and "not used" in r.getMessage()]
    assert len(lines) == 1 and reason in lines[0].getMessage() and src.name in lines[0].getMessage()
    # a first start (no copy yet) is expected: info; a damaged copy: a warning
    assert lines[0].levelno == (logging.INFO if reason == variant.NOT_DERIVED else logging.WARNING)
    assert len(calls) == 2 and variant.check_variant(target, src) is None
    assert variant.resolve_embedded(True) == target


def test_a_variant_of_another_source_is_not_used(fake_shipped, tmp_path, monkeypatch):
    src, _ = fake_shipped
    variant.derive_variant()
    (tmp_path / "other").mkdir()
    other = fakes.write_gguf(tmp_path / "other" / src.name, {"token_embd.weight": np.zeros(80, dtype=np.float32)},
                             file_type=3)
    monkeypatch.setenv("MEMORY_R1_EMBEDDED_GGUF", str(other))
    assert variant.check_variant(variant.variant_path(other), other) == "it was derived from another file"
    assert variant.resolve_embedded(True, derive=False) == other


def test_a_header_of_the_wrong_type_is_refused(fake_shipped, monkeypatch):
    def wrong(source, dst, quant, **kw):
        fakes.write_gguf(Path(dst), {"token_embd.weight": np.ones(8, dtype=np.float32)}, file_type=3)

    monkeypatch.setattr(variant, "quantize_gguf", wrong)
    with pytest.raises(ModelLoadError, match="file type 3, not Q8_0"):
        variant.derive_variant()
    assert not variant.variant_path(fake_shipped[0]).exists()


@pytest.mark.slow
def test_the_real_embedded_model_is_requantised_to_a_loadable_q8_0(data_home):
    from core.llm.gguf_info import validate_gguf
    from core.llm.runtime import LlamaBackend

    record = variant.derive_variant(threads=1)
    target = Path(record.path)
    assert target.parent == data_home / "models" / "derived"
    assert record.source_sha256 == sha256_file(embedded_gguf()) and record.sha256 == sha256_file(target)
    assert validate_gguf(target).quantization == "Q8_0"
    assert variant.resolve_embedded(True) == target
    spec = effective_spec(Settings(fast_embedded_model=True), "answer")
    backend = LlamaBackend(spec, n_ctx=256, n_threads=1)
    try:
        assert backend.model_path == target
        assert backend.count_tokens("hello there") > 0
    finally:
        backend.close()


def test_a_background_derivation_keeps_a_copy_another_process_just_made(fake_shipped):
    src, calls = fake_shipped
    variant.derive_variant()
    thread = variant.derive_in_background(src)
    assert thread is not None
    thread.join(10)
    assert len(calls) == 1 and variant.check_variant(variant.variant_path(src), src) is None


def test_an_unchanged_variant_is_checked_without_hashing(fake_shipped, monkeypatch):
    src, _ = fake_shipped
    record = variant.derive_variant()
    target = Path(record.path)
    assert record.mtime_ns == target.stat().st_mtime_ns and record.source_mtime_ns == src.stat().st_mtime_ns
    variant._sha_cache.clear()  # the next start
    hashed = []
    real = variant.sha256_file
    monkeypatch.setattr(variant, "sha256_file", lambda p: (hashed.append(Path(p)), real(p))[1])
    assert variant.check_variant(target, src) is None and hashed == []
    os.utime(target, ns=(target.stat().st_atime_ns, target.stat().st_mtime_ns + 1))  # touched: hashed again
    assert variant.check_variant(target, src) is None and target in hashed

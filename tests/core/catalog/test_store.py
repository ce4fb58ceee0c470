"""Import, remove and fit estimates, with GGUFs the tests write and the real embedded model."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from core import fakes
from core.errors import ConflictError, InvalidInputError, ModelLoadError, NotFoundError
from core.catalog import fit as fitmod
from core.catalog.catalog import load_catalog
from core.catalog.fit import FITS, SLOW, WONT_FIT, estimate_fit, fit_for_entry, fit_for_gguf
from core.catalog import store as store_mod
from core.catalog.store import AlreadyInstalledError, ModelStore, template_family
from core.paths import embedded_gguf


def write_gguf(path: Path, n_floats: int = 50_000, adapter: bool = False) -> Path:
    return fakes.write_gguf(path, {"token_embd.weight": np.zeros(n_floats, dtype=np.float32)},
                            name="Imported Test", context_length=4096, block_count=2, embedding_length=64,
                            head_count=4, head_count_kv=4,
                            chat_template="<|start_header_id|>{{ m }}<|eot_id|>", lora=adapter)


@pytest.fixture
def store(data_home) -> ModelStore:
    return ModelStore(data_home)


@pytest.fixture
def gguf_file(tmp_path) -> Path:
    return write_gguf(tmp_path / "My-Model.Q8_0.gguf")


def test_embedded_model_is_listed_first_and_verified(store):
    [embedded] = store.list_models()
    assert embedded.source == "embedded" and embedded.available
    assert Path(embedded.path) == embedded_gguf()
    assert embedded.verified and embedded.sha256 == load_catalog()[0].sha256
    assert embedded.architecture == "llama" and embedded.chat_template == "chatml"
    assert embedded.context_length == 8192
    with pytest.raises(InvalidInputError, match="cannot be removed"):
        store.remove(embedded.id)


def test_import_copies_reads_metadata_and_lists(store, gguf_file, data_home):
    record = store.import_gguf(gguf_file)
    assert record.managed and Path(record.path).parent == data_home / "models"
    assert Path(record.path).read_bytes() == gguf_file.read_bytes()
    assert record.sha256 == hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    assert (record.architecture, record.context_length, record.chat_template) == ("llama", 4096, "llama3")
    assert record.parameter_count == 50_000 and record.quantization
    assert record.id == "my-model.q8_0" and not record.verified
    # persisted: a new store (a restart) lists it
    assert [r.id for r in ModelStore(data_home).list_models()][1:] == [record.id]
    assert not list((data_home / "models").glob(".import-*"))


def test_import_by_reference_and_remove_keeps_the_file(store, gguf_file):
    record = store.import_gguf(gguf_file, copy=False)
    assert not record.managed and Path(record.path) == gguf_file.resolve()
    with pytest.raises(ConflictError, match="already installed as"):
        store.import_gguf(gguf_file, copy=False)
    store.remove(record.id)
    assert gguf_file.exists() and len(store.list_models()) == 1


def test_remove_deletes_a_copied_file(store, gguf_file):
    record = store.import_gguf(gguf_file)
    store.remove(record.id)
    assert not Path(record.path).exists() and gguf_file.exists()
    with pytest.raises(NotFoundError):
        store.get(record.id)


def test_two_imports_with_the_same_name_get_distinct_ids_and_files(store, gguf_file, tmp_path):
    (tmp_path / "other").mkdir()
    other = write_gguf(tmp_path / "other" / gguf_file.name, n_floats=1000)
    a, b = store.import_gguf(gguf_file), store.import_gguf(other)
    assert a.id != b.id and a.path != b.path
    assert Path(b.path).read_bytes() == other.read_bytes()


def test_import_of_a_non_gguf_is_a_clear_error(store, tmp_path):
    junk = tmp_path / "notes.gguf"
    junk.write_text("this is not a model at all, just some text")
    with pytest.raises(ModelLoadError, match="not a GGUF model file"):
        store.import_gguf(junk)
    assert len(store.list_models()) == 1


def test_import_of_a_truncated_gguf_is_a_clear_error(store, gguf_file, tmp_path):
    cut = tmp_path / "cut.gguf"
    data = gguf_file.read_bytes()
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelLoadError, match="incomplete"):
        store.import_gguf(cut)
    header_only = tmp_path / "header.gguf"
    header_only.write_bytes(data[:40])
    with pytest.raises(ModelLoadError, match="incomplete|cut off"):
        store.import_gguf(header_only)
    assert len(store.list_models()) == 1 and not list((store.models_dir).glob("*.gguf"))


def test_import_of_a_missing_file_or_an_adapter_is_refused(store, tmp_path):
    with pytest.raises(ModelLoadError, match="does not exist"):
        store.import_gguf(tmp_path / "nope.gguf")
    adapter = write_gguf(tmp_path / "lora.gguf", adapter=True)
    with pytest.raises(InvalidInputError, match="LoRA adapter"):
        store.import_gguf(adapter)


def test_import_of_a_catalog_file_is_recognised_as_verified(data_home, gguf_file, tmp_path):
    import dataclasses

    sha = hashlib.sha256(gguf_file.read_bytes()).hexdigest()
    entry = dataclasses.replace(load_catalog()[1], sha256=sha, size_bytes=gguf_file.stat().st_size, verified=True)
    store = ModelStore(data_home, catalog=[load_catalog()[0], entry])
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(gguf_file.read_bytes())
    record = store.import_gguf(copy, copy=False)
    assert record.verified and record.catalog_id == entry.id


def test_a_copy_of_the_embedded_model_is_recognised_not_copied_or_listed_twice(store, tmp_path, monkeypatch):
    copy = tmp_path / "renamed.gguf"
    copy.write_bytes(embedded_gguf().read_bytes())
    for path in (embedded_gguf(), copy):  # the shipped file itself, and the same bytes elsewhere
        for by_copy in (True, False):
            with pytest.raises(AlreadyInstalledError, match="already installed as 'smollm2-135m") as err:
                store.import_gguf(path, copy=by_copy)
            assert err.value.record.source == "embedded"
    assert [r.source for r in store.list_models()] == ["embedded"]
    assert not list(store.models_dir.glob("*.gguf")) and not list(store.models_dir.glob(".import-*"))


def test_the_same_file_imported_twice_is_one_model(store, gguf_file, tmp_path):
    first = store.import_gguf(gguf_file)  # copied into models/
    again = tmp_path / "again" / "other-name.gguf"
    again.parent.mkdir()
    again.write_bytes(gguf_file.read_bytes())
    for path in (gguf_file, again, Path(first.path)):
        with pytest.raises(AlreadyInstalledError, match=f"already installed as '{first.id}'"):
            store.import_gguf(path)
    assert [r.id for r in store.list_models()][1:] == [first.id]
    assert len(list(store.models_dir.glob("*.gguf"))) == 1


def test_a_file_of_the_same_size_but_other_bytes_is_imported_and_hashing_is_only_for_equal_sizes(
        store, gguf_file, tmp_path, monkeypatch):
    first = store.import_gguf(gguf_file)
    data = bytearray(gguf_file.read_bytes())
    data[-1] ^= 0xFF  # the last tensor byte: still a valid GGUF of the same size
    twin = tmp_path / "twin.gguf"
    twin.write_bytes(bytes(data))
    second = store.import_gguf(twin)
    assert second.id != first.id and second.sha256 != first.sha256
    other = write_gguf(tmp_path / "smaller.gguf", n_floats=1000)
    hashed = []
    real = store_mod.sha256_file
    monkeypatch.setattr(store_mod, "sha256_file", lambda p: hashed.append(Path(p)) or real(p))
    store.import_gguf(other, copy=False)  # no installed model has its size: hashed once, to record it
    assert hashed == [other.resolve()]


def test_a_damaged_registry_does_not_stop_the_app(store, gguf_file):
    store.import_gguf(gguf_file)
    store.registry_path.write_text("{ not json")
    assert [r.source for r in store.list_models()] == ["embedded"]


def test_sha256_of_is_cached(store, gguf_file, monkeypatch):
    record = store.import_gguf(gguf_file, copy=False)
    record.sha256 = None
    first = store.sha256_of(record)
    monkeypatch.setattr("core.catalog.store.sha256_file", lambda p: pytest.fail("hashed twice"))
    assert store.sha256_of(record) == first == hashlib.sha256(gguf_file.read_bytes()).hexdigest()


def test_template_family():
    assert template_family("<|im_start|>user") == "chatml"
    assert template_family("<|start_header_id|>") == "llama3"
    assert template_family("[INST] hi") == "mistral"
    assert template_family(None) is None and template_family("{{ x }}") == "other"


# --- fit ---------------------------------------------------------------------------------------
def test_fit_on_the_real_embedded_model_says_fits():
    est = fit_for_gguf(embedded_gguf())
    assert est.verdict == FITS, est.summary()
    assert 80_000_000 < est.weights_bytes < 100_000_000
    assert est.n_ctx == 4096
    assert est.kv_bytes == 2 * 30 * 3 * 64 * 2 * 4096  # layers, kv heads, head dim, f16, tokens
    assert est.need_bytes < est.available_ram
    assert "fits: needs about" in est.summary()


def test_fit_verdicts_follow_the_numbers():
    gb = 1 << 30
    machine = dict(available_ram=8 * gb, total_ram=16 * gb, vram_bytes=None, gpu_offload=False)
    assert estimate_fit(2 * gb, 0, 4096, **machine).verdict == FITS
    assert estimate_fit(10 * gb, 0, 4096, **machine).verdict == SLOW
    assert estimate_fit(20 * gb, 0, 4096, **machine).verdict == WONT_FIT
    # the context length counts: 128 KB per token x 64k tokens = 8 GB of KV cache
    assert estimate_fit(2 * gb, 128 * 1024, 65536, **machine).verdict == SLOW
    gpu = dict(available_ram=2 * gb, total_ram=4 * gb, vram_bytes=24 * gb, gpu_offload=True)
    assert estimate_fit(10 * gb, 0, 4096, **gpu).verdict == FITS
    assert estimate_fit(20 * gb, 0, 4096, **gpu).verdict == SLOW  # split VRAM + RAM
    assert estimate_fit(30 * gb, 0, 4096, **gpu).verdict == WONT_FIT


def test_fit_for_catalog_entries_before_download():
    gb = 1 << 30
    entries = {e.id: e for e in load_catalog()}
    small = fit_for_entry(entries["qwen2.5-1.5b-instruct-q4_k_m"], available_ram=4 * gb,
                          total_ram=8 * gb, vram_bytes=None, gpu_offload=False)
    big = [fit_for_entry(entries["llama-3.1-8b-instruct-q4_k_m"], available_ram=4 * gb,
                         total_ram=total * gb, vram_bytes=None, gpu_offload=False) for total in (8, 6)]
    assert small.verdict == FITS and [b.verdict for b in big] == [SLOW, WONT_FIT]
    big = big[0]
    assert big.kv_bytes == 2 * 32 * 8 * 128 * 2 * 4096


def test_gpu_query_never_raises(monkeypatch):
    offload, vram = fitmod.gpu_memory()
    assert isinstance(offload, bool) and (vram is None or vram > 0)


def test_cli_import_list_and_remove_with_confirmation(gguf_file, data_home, capsys, monkeypatch):
    from app.cli import main

    assert main(["models", "import", str(gguf_file), "--json"]) == 0
    imported = json.loads(capsys.readouterr().out)
    assert imported["architecture"] == "llama"
    assert main(["models", "list", "--json"]) == 0
    listing = json.loads(capsys.readouterr().out)
    ids = [m["id"] for m in listing["installed"]]
    assert ids[1] == imported["id"]
    assert listing["installed"][0]["roles"] == ["answer", "manager"]
    assert listing["installed"][0]["fit"]["verdict"] == FITS
    assert {c["id"] for c in listing["catalog"]} >= {"qwen2.5-3b-instruct-q4_k_m"}
    # no terminal and no --yes: refused, nothing removed
    assert main(["models", "remove", imported["id"]]) == 1
    assert "add --yes" in capsys.readouterr().err
    assert Path(imported["path"]).exists()
    # with a terminal the answer decides
    monkeypatch.setattr("sys.stdin.isatty", lambda: True)
    monkeypatch.setattr("builtins.input", lambda prompt: "n")
    assert main(["models", "remove", imported["id"]]) == 1
    assert Path(imported["path"]).exists()
    monkeypatch.setattr("builtins.input", lambda prompt: "y")
    assert main(["models", "remove", imported["id"]]) == 0
    assert not Path(imported["path"]).exists()


def test_cli_import_errors_are_one_line(tmp_path, capsys):
    from app.cli import main

    junk = tmp_path / "x.gguf"
    junk.write_bytes(b"GGUF\x03\x00\x00\x00")
    assert main(["models", "import", str(junk)]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "incomplete" in err

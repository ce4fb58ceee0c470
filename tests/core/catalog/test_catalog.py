"""The shipped catalog: well-formed, honest about what is verified, and the embedded hash is real."""

from __future__ import annotations

import hashlib
import json

import pytest

from core.errors import InvalidInputError, NotFoundError
from core.catalog.catalog import find_entry, load_catalog
from core.paths import embedded_gguf


def test_catalog_parses_and_covers_the_roles_models():
    entries = load_catalog()
    ids = {e.id for e in entries}
    assert {"qwen2.5-1.5b-instruct-q4_k_m", "qwen2.5-3b-instruct-q4_k_m",
            "qwen2.5-7b-instruct-q4_k_m", "llama-3.2-3b-instruct-q4_k_m",
            "llama-3.1-8b-instruct-q4_k_m", "smollm2-1.7b-instruct-q4_k_m"} <= ids
    assert sum(e.embedded for e in entries) == 1 and entries[0].embedded


def test_every_value_says_where_it_came_from():
    for e in load_catalog():
        assert e.license and e.context_length and e.chat_template and e.quantization, e.id
        if e.sha256:
            assert "sha256" in e.source, e.id
        else:
            assert not e.verified, e.id
        if e.size_approx_bytes:
            assert "size_approx_bytes" in e.source, e.id
        if not e.embedded:
            assert e.repo_id and e.revision and len(e.revision) == 40, e.id  # pinned commit
            assert e.filename.endswith(".gguf") and e.kv is not None, e.id


def test_embedded_hash_and_size_match_the_shipped_file():
    entry = next(e for e in load_catalog() if e.embedded)
    path = embedded_gguf()
    assert path.name == entry.filename
    assert path.stat().st_size == entry.size_bytes
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    assert digest == entry.sha256


def test_embedded_kv_shape_matches_its_header():
    from core.llm.gguf_info import read_gguf_info

    entry = next(e for e in load_catalog() if e.embedded)
    info = read_gguf_info(embedded_gguf())
    assert entry.kv.bytes_per_token() == info.kv_bytes_per_token()
    assert entry.context_length == info.context_length


def test_find_entry_and_unknown_ids():
    assert find_entry("qwen2.5-3b-instruct-q4_k_m").license == "qwen-research"
    with pytest.raises(NotFoundError, match="choose one of"):
        find_entry("gpt-5")


@pytest.mark.parametrize("bad", [
    {"models": [{"id": "x", "filename": "x.bin", "repo_id": "a/b"}]},
    {"models": [{"id": "x", "filename": "x.gguf", "repo_id": "a/b", "sha256": "123"}]},
    {"models": [{"id": "x", "filename": "x.gguf", "repo_id": "a/b", "verified": True}]},
    {"models": [{"id": "x", "filename": "x.gguf"}]},
    {"models": [{"id": "x", "filename": "x.gguf", "repo_id": "a/b"},
                {"id": "x", "filename": "y.gguf", "repo_id": "a/b"}]},
    {"nothing": []},
])
def test_malformed_catalogs_are_rejected(tmp_path, bad):
    path = tmp_path / "catalog.json"
    path.write_text(json.dumps(bad))
    with pytest.raises(InvalidInputError):
        load_catalog(path)


def test_a_missing_or_unreadable_catalog_is_a_clear_error(tmp_path):
    with pytest.raises(NotFoundError, match="missing"):
        load_catalog(tmp_path / "none.json")
    (tmp_path / "bad.json").write_text("{")
    with pytest.raises(InvalidInputError, match="cannot be read"):
        load_catalog(tmp_path / "bad.json")

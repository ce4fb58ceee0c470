"""A faster copy of the embedded model, derived once from the shipped file.

The shipped `SmolLM2-135M-Instruct.Q4_1.gguf` is in llama.cpp's slowest prompt-evaluation
format on x86. Q8_0 evaluates a prompt ~1.9x faster and gave the same greedy replies on the
benchmark's 4 prompts; Q4_0 is faster still (~2.4x, repacked for AVX2 at load) but rounding
the 4-bit weights twice broke the model's replies ("1. 2. 3. ..."), so the copy is Q8_0
(benchmarks/model_format.py, docs/results.md). `derive_variant` re-quantises the shipped file with llama.cpp's
`llama_model_quantize` (allow_requantize) into `<data dir>/models/derived/`, atomically (a
temp file in the same folder, renamed over the target when it is whole and its header reads
back as the wanted type), and records both checksums in a JSON file beside it:
`<name>.Q8_0.gguf` + `<name>.Q8_0.json` {source name/size/sha256, quant, size, sha256, seconds,
llama_cpp version}.

The setting `fast_embedded_model` is on by default since session 7: on LoCoMo val the whole
pipeline on the Q8_0 copy scored F1 -0.89 against Q4_1 (paired 95% interval -2.97 to +1.23, no
measurable drop) and answered in about half the time; the first start uses the shipped file
and derives the copy in the background, later starts load the copy.

`resolve_embedded(enabled)` gives the file the embedded model loads from: the shipped file
when the setting is off; the variant when it is on and sound (record present, source checksum
and size unchanged, its own sha256 matching, GGUF header readable). Otherwise one log line, the
shipped file, and a background re-derivation (`derive_in_background`, one at a time per
process; a folder lock keeps two processes from deriving at once). The record keeps
both files' mtimes: while they and the sizes are unchanged a check hashes nothing (a start
costs a few stats, not ~0.3 s of CPU for 230 MB); otherwise the checksums are compared, once
per process and file (cached on path, size and mtime).

Any thread. Importing this module imports neither llama_cpp nor numpy; `derive_variant` imports
llama_cpp. Raises ModelLoadError (one sentence) for a source llama.cpp cannot quantise,
InvalidInputError for an unknown quantisation.
"""

from __future__ import annotations

import ctypes
import json
import logging
import os
import re
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from core.errors import InvalidInputError, ModelLoadError, UserError
from core.fileio import atomic_path, atomic_write_json, folder_lock, sha256_file

log = logging.getLogger(__name__)

FAST_QUANT = "Q8_0"  # not Q4_0: it breaks this model (module docstring)
NOT_DERIVED = "not derived yet"  # check_variant's reason for a copy that does not exist
# gguf.LlamaFileType / llama_ftype values of the formats `quantize_gguf` writes (the LoRA
# exporter, training/export/gguf.py, uses the K-quants and F16 too) ...
LLAMA_FILE_TYPES = {"F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q4_K_M": 15, "Q5_K_M": 17}
# ... and of those a variant may have.
FILE_TYPES = {q: LLAMA_FILE_TYPES[q] for q in ("Q4_0", "Q4_1", "Q8_0")}
DERIVED_DIR = "derived"
RECORD_VERSION = 1
_QUANT_SUFFIX = re.compile(r"^(I?Q\d\w*|[BF]F?16|F32)$", re.IGNORECASE)


@dataclass(frozen=True)
class VariantRecord:
    """What `derive_variant` wrote: the `.json` beside the variant file."""

    path: str
    quant: str
    size_bytes: int
    sha256: str
    source_name: str
    source_size: int
    source_sha256: str
    seconds: float
    llama_cpp: str
    version: int = RECORD_VERSION
    mtime_ns: int | None = None  # of the variant and the source when derived: while both are
    source_mtime_ns: int | None = None  # unchanged (and sizes match), a start hashes neither

    def to_dict(self) -> dict:
        return asdict(self)


# --------------------------------------------------------------------------- paths

def variant_dir(base: Path | None = None) -> Path:
    """`<data dir>/models/derived` (not created here)."""
    from core import paths

    return (base or paths.data_dir()) / "models" / DERIVED_DIR


def variant_path(source: str | os.PathLike, quant: str = FAST_QUANT, base: Path | None = None) -> Path:
    """Where the `quant` variant of `source` lives: `SmolLM2-135M-Instruct.Q4_1.gguf` ->
    `<data dir>/models/derived/SmolLM2-135M-Instruct.Q8_0.gguf`."""
    quant = _check_quant(quant)
    stem = Path(source).stem
    head, dot, tail = stem.rpartition(".")
    if head and _QUANT_SUFFIX.match(tail):
        stem = head
    return variant_dir(base) / f"{stem}.{quant}.gguf"


def record_path(variant: str | os.PathLike) -> Path:
    """The JSON record beside a variant file (`X.Q8_0.gguf` -> `X.Q8_0.json`)."""
    return Path(variant).with_suffix(".json")


def _check_quant(quant: str) -> str:
    q = str(quant).upper()
    if q not in FILE_TYPES:
        raise InvalidInputError(f"Unknown quantisation {quant!r}; use one of: {', '.join(FILE_TYPES)}.")
    return q


# --------------------------------------------------------------------------- checksums

_sha_cache: dict[tuple[str, int, int], str] = {}
_sha_lock = threading.Lock()


def cached_sha256(path: str | os.PathLike) -> str:
    """sha256 of a whole file, computed once per process for the same path, size and mtime."""
    p = Path(path)
    st = p.stat()
    key = (os.path.realpath(p), st.st_size, st.st_mtime_ns)
    with _sha_lock:
        hit = _sha_cache.get(key)
    if hit is None:
        hit = sha256_file(p)
        with _sha_lock:
            _sha_cache[key] = hit
    return hit


# --------------------------------------------------------------------------- quantising

def quantize_gguf(src: str | os.PathLike, dst: str | os.PathLike, quant: str, *,
                  threads: int | None = None, allow_requantize: bool = False) -> None:
    """llama.cpp's `llama_model_quantize`: `src` GGUF -> `dst` with file type `quant` (one of
    `LLAMA_FILE_TYPES`). `allow_requantize` lets a quantised source be quantised again. Writes
    `dst` directly: callers wanting atomicity pass a temp path. ModelLoadError when llama.cpp
    fails, InvalidInputError for another `quant`. llama.cpp's per-tensor lines go to the app's
    native log (DEBUG), not to stderr."""
    from core.llm.native import import_llama_cpp

    ftype = LLAMA_FILE_TYPES.get(str(quant).upper())
    if ftype is None:
        raise InvalidInputError(f"Unknown quantisation {quant!r}; use one of: {', '.join(LLAMA_FILE_TYPES)}.")
    llama_cpp = import_llama_cpp()

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = int(threads or 0)
    params.allow_requantize = bool(allow_requantize)
    rc = llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params))
    if rc != 0:
        raise ModelLoadError(f"llama.cpp could not quantise {Path(src).name} to {quant} (code {rc}).")


def _llama_cpp_version() -> str:
    try:
        import llama_cpp

        return str(getattr(llama_cpp, "__version__", "?"))
    except ImportError:  # pragma: no cover - llama_cpp is a dependency
        return "?"


def _remove_stale_temps(dest: Path) -> None:
    """Temp files a killed derivation left beside `dest` (atomic_path's `.<name>-*`)."""
    try:
        for p in dest.parent.glob(f".{dest.name}-*"):
            p.unlink(missing_ok=True)
    except OSError as exc:
        log.info("stale temp files beside %s not removed (%s)", dest.name, exc)


def derive_variant(source: str | os.PathLike | None = None, quant: str = FAST_QUANT, *,
                   dest: str | os.PathLike | None = None, threads: int | None = 1,
                   force: bool = True) -> VariantRecord:
    """Quantise `source` (default: the shipped embedded model) to `quant` at `dest` (default
    `variant_path(source, quant)`), atomically, and write its record. Returns the record.

    The new file replaces `dest` only once llama.cpp has finished and its header reads back as
    a `quant` model; the record is written after it (a crash in between leaves a variant
    without a record, which `check_variant` rejects). ModelLoadError for a source that is
    not a sound GGUF or that llama.cpp cannot quantise; DiskFullError when the disk is full.
    With `force` False a sound variant found once the folder lock is held (another process
    derived it meanwhile) is kept and its record returned.
    """
    from core.llm.gguf_info import validate_gguf
    from core.paths import embedded_gguf

    quant = _check_quant(quant)
    src = Path(source) if source is not None else embedded_gguf()
    validate_gguf(src)
    target = Path(dest) if dest is not None else variant_path(src, quant)
    target.parent.mkdir(parents=True, exist_ok=True)
    with folder_lock(target.parent):
        if not force and check_variant(target, src) is None:
            kept = read_record(target)
            if kept is not None:
                return kept
        _remove_stale_temps(target)
        src_sha = cached_sha256(src)
        started = time.perf_counter()
        with atomic_path(target, suffix=".gguf") as tmp:
            quantize_gguf(src, tmp, quant, threads=threads, allow_requantize=True)
            written = _file_type(validate_gguf(tmp))
            if written != FILE_TYPES[quant]:
                raise ModelLoadError(f"llama.cpp wrote {target.name} as file type {written}, not {quant}.")
            sha = sha256_file(tmp)
            size = tmp.stat().st_size
        seconds = time.perf_counter() - started
        record = VariantRecord(path=str(target), quant=quant, size_bytes=size, sha256=sha,
                               source_name=src.name, source_size=src.stat().st_size,
                               source_sha256=src_sha, seconds=round(seconds, 3),
                               llama_cpp=_llama_cpp_version(), mtime_ns=target.stat().st_mtime_ns,
                               source_mtime_ns=src.stat().st_mtime_ns)
        atomic_write_json(record_path(target), record.to_dict(), indent=2)
    log.info("derived %s from %s in %.1f s (%d bytes)", target.name, src.name, seconds, size)
    return record


# --------------------------------------------------------------------------- checking

def _file_type(info) -> int | None:
    """`general.file_type` of a GGUFInfo, or None."""
    value = info.metadata.get("general.file_type")
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def read_record(variant: str | os.PathLike) -> VariantRecord | None:
    """The record beside `variant`, or None when it is missing or unreadable."""
    try:
        raw = json.loads(record_path(variant).read_text(encoding="utf-8"))
        return VariantRecord(**{k: raw[k] for k in VariantRecord.__dataclass_fields__ if k in raw})
    except (OSError, ValueError, TypeError, AttributeError):
        return None


def check_variant(variant: str | os.PathLike, source: str | os.PathLike) -> str | None:
    """Why `variant` may not stand in for `source` (a short reason), or None when it may:
    the file and its record exist, the record names this source (name, size, sha256), the
    file's size and sha256 match the record and its GGUF header reads."""
    from core.llm.gguf_info import validate_gguf

    v, src = Path(variant), Path(source)
    if not v.is_file():
        return NOT_DERIVED
    record = read_record(v)
    if record is None:
        return "its record is missing or unreadable"
    try:
        if record.source_name != src.name or record.source_size != src.stat().st_size:
            return "it was derived from another file"
        if v.stat().st_size != record.size_bytes:
            return "its size does not match its record"
        unchanged = (record.mtime_ns is not None and record.mtime_ns == v.stat().st_mtime_ns
                     and record.source_mtime_ns == src.stat().st_mtime_ns)
        if not unchanged:  # ~0.3 s of CPU for the two files: only when one changed since
            if cached_sha256(v) != record.sha256:
                return "its checksum does not match its record"
            if cached_sha256(src) != record.source_sha256:
                return "the shipped file's checksum changed"
        info = validate_gguf(v)
    except UserError as exc:
        return f"it is not a sound GGUF ({exc})"
    except OSError as exc:
        return f"it is unreadable ({exc.strerror or exc})"
    if info.is_adapter or _file_type(info) != FILE_TYPES.get(record.quant):
        return "its header does not match its record"
    return None


# --------------------------------------------------------------------------- using

_bg_lock = threading.Lock()
_bg_thread: threading.Thread | None = None


def derive_in_background(source: str | os.PathLike | None = None, quant: str = FAST_QUANT,
                         *, threads: int | None = 1) -> threading.Thread | None:
    """Start `derive_variant` in a daemon thread unless one is running in this process; returns
    the thread (None when one was running already). Failures are logged, never raised."""
    global _bg_thread

    def run() -> None:
        try:
            derive_variant(source, quant, threads=threads, force=False)
        except (UserError, OSError) as exc:
            log.warning("the %s variant of the embedded model was not derived (%s)", quant, exc)
        except Exception:  # noqa: BLE001 - a background job must not die silently
            log.exception("deriving the %s variant of the embedded model failed", quant)

    with _bg_lock:
        if _bg_thread is not None and _bg_thread.is_alive():
            return None
        _bg_thread = threading.Thread(target=run, name="derive-variant", daemon=True)
        _bg_thread.start()
        return _bg_thread


def resolve_embedded(enabled: bool, *, quant: str = FAST_QUANT, derive: bool = True) -> Path:
    """The file the embedded model loads from: the shipped one when `enabled` is False; the
    `quant` variant when it is sound; otherwise the shipped file, one log line saying why, and
    (with `derive`) a background re-derivation. ModelLoadError only when nothing is shipped."""
    from core.paths import embedded_gguf

    shipped = embedded_gguf()
    if not enabled:
        return shipped
    variant = variant_path(shipped, quant)
    reason = check_variant(variant, shipped)
    if reason is None:
        return variant
    # the first start has no copy yet (expected: info); a damaged or stale one is worth a warning
    log.log(logging.INFO if reason == NOT_DERIVED else logging.WARNING,
            "embedded %s variant not used (%s): using %s%s", quant, reason, shipped.name,
            "; deriving it in the background" if derive else "")
    if derive:
        derive_in_background(shipped, quant)
    return shipped

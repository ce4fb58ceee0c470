"""Read a GGUF file's header without llama.cpp, and check it before native code sees it.

`read_gguf_info(path)` parses the header (key/values and tensor infos) with a small reader of
our own over a read-only mmap: it never loads tensor data, so it is cheap even for a
multi-gigabyte model. Type sizes and file-type names come from the `gguf` package's constants.
`validate_gguf(path)` adds the checks that turn "llama.cpp crashed" into one sentence:
missing file, not a GGUF, a header cut off, or tensor data that ends past the end of the file
(a truncated download).

Any thread may call these; they hold no state. Importing this module does not import llama_cpp.
"""

from __future__ import annotations

import math
import mmap
import os
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.errors import ModelLoadError

GGUF_MAGIC = b"GGUF"
DEFAULT_ALIGNMENT = 32
_MAX_COUNT = 1 << 24  # more keys/tensors/array items than any real model: the header is damaged
_MAX_DIMS = 8

# GGUFValueType -> struct format of one scalar (8 = string, 9 = array are handled apart)
_SCALAR_FORMATS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?",
                   10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9


class _Truncated(Exception):
    """The header ends before the file does."""


class _Corrupt(Exception):
    """The header holds values no writer produces."""


class _NotGGUF(Exception):
    """The file does not start with the GGUF magic."""


@dataclass(frozen=True)
class GGUFInfo:
    """What the header of one GGUF says. `metadata` keeps scalar and string values; an array
    value is kept as its length (as `"<array of N>"`) except `tokenizer.ggml.tokens`, whose
    length is `vocab_size`."""

    path: Path
    architecture: str | None
    name: str | None
    parameter_count: int  # sum of the tensor shapes (an estimate: tied weights counted once)
    quantization: str | None  # e.g. "Q4_1", "F16"; from general.file_type, else the commonest type
    context_length: int | None
    chat_template: str | None
    file_size: int
    tensor_data_end: int  # byte offset where the last tensor's data ends
    version: int = 3
    tensor_count: int = 0
    data_offset: int = 0
    general_type: str | None = None  # "model", "adapter" or None
    block_count: int | None = None
    embedding_length: int | None = None
    head_count: int | None = None
    head_count_kv: int | None = None
    key_length: int | None = None
    value_length: int | None = None
    vocab_size: int | None = None
    metadata: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def is_adapter(self) -> bool:
        return self.general_type == "adapter" or "adapter.type" in self.metadata

    @property
    def truncated(self) -> bool:
        return self.tensor_data_end > self.file_size

    def kv_bytes_per_token(self, bytes_per_value: int = 2) -> int:
        """Bytes of K and V cache one token of context costs (f16 by default); 0 if unknown."""
        if not (self.block_count and self.embedding_length and self.head_count):
            return 0
        head_dim = self.embedding_length // self.head_count
        n_kv = self.head_count_kv or self.head_count
        k = (self.key_length or head_dim) * n_kv
        v = (self.value_length or head_dim) * n_kv
        return self.block_count * (k + v) * bytes_per_value


class _Reader:
    """Sequential little/big-endian reads over a buffer; raises _Truncated past its end."""

    def __init__(self, buf, endian: str = "<") -> None:
        self.buf = buf
        self.pos = 0
        self.size = len(buf)
        self.endian = endian

    def unpack(self, fmt: str):
        st = struct.Struct(self.endian + fmt)
        if self.pos + st.size > self.size:
            raise _Truncated()
        values = st.unpack_from(self.buf, self.pos)
        self.pos += st.size
        return values[0] if len(values) == 1 else values

    def skip(self, n: int) -> None:
        if n < 0 or self.pos + n > self.size:
            raise _Truncated()
        self.pos += n

    def string(self) -> str:
        n = self.unpack("Q")
        if n > self.size:
            raise _Corrupt(f"a string of {n} bytes")
        start = self.pos
        self.skip(n)
        return bytes(self.buf[start:self.pos]).decode("utf-8", errors="replace")

    def _skip_strings(self, n: int) -> None:
        """Skip `n` length-prefixed strings (vocabularies: tens of thousands of them)."""
        length = struct.Struct(self.endian + "Q")
        unpack_from, buf, pos, size = length.unpack_from, self.buf, self.pos, self.size
        for _ in range(n):
            if pos + 8 > size:
                raise _Truncated()
            pos += 8 + unpack_from(buf, pos)[0]
        if pos > size:
            raise _Truncated()
        self.pos = pos

    def count(self, what: str) -> int:
        n = self.unpack("Q")
        if n > _MAX_COUNT:
            raise _Corrupt(f"{n} {what}")
        return n

    def value(self, vtype: int, keep_array: bool = False) -> Any:
        if vtype in _SCALAR_FORMATS:
            return self.unpack(_SCALAR_FORMATS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item_type = self.unpack("I")
            n = self.count("array items")
            if keep_array:
                return [self.value(item_type) for _ in range(n)]
            if item_type in _SCALAR_FORMATS:
                self.skip(n * struct.calcsize(self.endian + _SCALAR_FORMATS[item_type]))
            elif item_type == _STRING:
                self._skip_strings(n)
            else:
                for _ in range(n):
                    self.value(item_type)
            return _ArrayLen(n)
        raise _Corrupt(f"unknown value type {vtype}")


class _ArrayLen(int):
    """The length of an array value that was skipped, not read."""

    def __repr__(self) -> str:
        return f"<array of {int(self)}>"


def _tensor_nbytes(dims: list[int], ggml_type: int) -> int:
    from gguf.constants import GGML_QUANT_SIZES, GGMLQuantizationType

    try:
        block, type_size = GGML_QUANT_SIZES[GGMLQuantizationType(ggml_type)]
    except (ValueError, KeyError) as exc:
        raise _Corrupt(f"tensor type {ggml_type}, unknown to this version") from exc
    return math.prod(dims) // block * type_size


def _quant_name(file_type: Any, type_bytes: dict[int, int]) -> str | None:
    from gguf.constants import GGMLQuantizationType, LlamaFileType

    if isinstance(file_type, int) and not isinstance(file_type, bool):
        try:
            name = LlamaFileType(file_type).name
            if name != "GUESSED":
                return name.removeprefix("MOSTLY_").removeprefix("ALL_")
        except ValueError:
            pass
    if not type_bytes:
        return None
    commonest = max(type_bytes, key=lambda t: type_bytes[t])
    try:
        return GGMLQuantizationType(commonest).name
    except ValueError:
        return None


def _parse(buf, path: Path, file_size: int) -> GGUFInfo:
    if bytes(buf[:4]) != GGUF_MAGIC:
        raise _NotGGUF()
    r = _Reader(buf)
    r.skip(4)
    version = r.unpack("I")
    if version > 0xFFFF:  # a big-endian file
        r.endian = ">"
        version = struct.unpack(">I", bytes(buf[4:8]))[0]
    if version < 2 or version > 3:
        raise _Corrupt(f"GGUF version {version}, which is not supported")
    n_tensors = r.count("tensors")
    n_kv = r.count("metadata keys")
    meta: dict[str, Any] = {}
    for _ in range(n_kv):
        key = r.string()
        vtype = r.unpack("I")
        meta[key] = r.value(vtype)
    tensors = []
    for _ in range(n_tensors):
        name = r.string()
        n_dims = r.unpack("I")
        if n_dims > _MAX_DIMS:
            raise _Corrupt(f"tensor {name!r} with {n_dims} dimensions")
        dims = [r.unpack("Q") for _ in range(n_dims)]
        ggml_type = r.unpack("I")
        offset = r.unpack("Q")
        tensors.append((name, dims, ggml_type, offset))
    alignment = meta.get("general.alignment", DEFAULT_ALIGNMENT)
    if not isinstance(alignment, int) or alignment <= 0:
        raise _Corrupt(f"alignment {alignment!r}")
    data_offset = -(-r.pos // alignment) * alignment
    end = data_offset if tensors else r.pos
    params = 0
    type_bytes: dict[int, int] = {}
    for _name, dims, ggml_type, offset in tensors:
        nbytes = _tensor_nbytes(dims, ggml_type)
        end = max(end, data_offset + offset + nbytes)
        params += math.prod(dims)
        type_bytes[ggml_type] = type_bytes.get(ggml_type, 0) + nbytes
    return _build_info(path, meta, version, len(tensors), data_offset, end, params,
                       type_bytes, file_size)


def _build_info(path, meta, version, n_tensors, data_offset, end, params, type_bytes,
                file_size) -> GGUFInfo:
    arch = meta.get("general.architecture")
    arch = arch if isinstance(arch, str) else None

    def arch_int(key: str) -> int | None:
        value = meta.get(f"{arch}.{key}") if arch else None
        if isinstance(value, _ArrayLen) or not isinstance(value, int) or isinstance(value, bool):
            return None  # per-layer arrays (some archs) are not a single number
        return int(value)

    template = meta.get("tokenizer.chat_template")
    tokens = meta.get("tokenizer.ggml.tokens")
    return GGUFInfo(
        path=path,
        architecture=arch,
        name=meta.get("general.name") if isinstance(meta.get("general.name"), str) else None,
        parameter_count=params,
        quantization=_quant_name(meta.get("general.file_type"), type_bytes),
        context_length=arch_int("context_length"),
        chat_template=template if isinstance(template, str) else None,
        file_size=file_size,
        tensor_data_end=end,
        version=version,
        tensor_count=n_tensors,
        data_offset=data_offset,
        general_type=meta.get("general.type") if isinstance(meta.get("general.type"), str) else None,
        block_count=arch_int("block_count"),
        embedding_length=arch_int("embedding_length"),
        head_count=arch_int("attention.head_count"),
        head_count_kv=arch_int("attention.head_count_kv"),
        key_length=arch_int("attention.key_length"),
        value_length=arch_int("attention.value_length"),
        vocab_size=int(tokens) if isinstance(tokens, _ArrayLen) else None,
        metadata=meta,
    )


def _check_file(path: Path) -> int:
    if not path.exists():
        raise ModelLoadError(f"The model file {path} does not exist.")
    if path.is_dir():
        raise ModelLoadError(f"{path} is a folder, not a GGUF model file.")
    try:
        return path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"The model file {path} cannot be read ({exc.strerror}).") from exc


def read_gguf_info(path: str | os.PathLike) -> GGUFInfo:
    """Parse the header of the GGUF at `path` (no tensor data is read).

    Raises ModelLoadError when the file is missing, unreadable, not a GGUF, or its header is
    cut off or damaged. A file whose tensor data is cut off still parses: see `validate_gguf`.
    """
    path = Path(path).expanduser()
    size = _check_file(path)
    if size < 8:
        raise ModelLoadError(f"{path} is not a GGUF model file (it is only {size} bytes).")
    try:
        with open(path, "rb") as fh, mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            return _parse(buf, path, size)
    except _NotGGUF:
        raise ModelLoadError(f"{path} is not a GGUF model file (it does not start with 'GGUF').") from None
    except _Truncated:
        raise ModelLoadError(
            f"The model file {path} is incomplete (its header is cut off); download it again.") from None
    except _Corrupt as exc:
        raise ModelLoadError(f"The model file {path} is damaged or unsupported: {exc}.") from None
    except OSError as exc:
        raise ModelLoadError(f"The model file {path} cannot be read ({exc.strerror or exc}).") from exc


def validate_gguf(path: str | os.PathLike) -> GGUFInfo:
    """`read_gguf_info` plus the truncation check; returns the info of a sound file.

    Raises ModelLoadError (one sentence) for: missing path, a folder, not GGUF, header cut off
    or damaged, tensor data ending past the end of the file.
    """
    info = read_gguf_info(path)
    if info.truncated:
        have, need = human_size(info.file_size), human_size(info.tensor_data_end)
        if have == need:
            have, need = f"{info.file_size} bytes", f"{info.tensor_data_end} bytes"
        raise ModelLoadError(
            f"The model file {info.path} is incomplete ({have} of {need}); download it again.")
    return info


def human_size(n: float) -> str:
    """A byte count as people read it (binary units, as file managers show them).

    >>> human_size(512)
    '512 bytes'
    >>> human_size(3 * 1024 ** 3)
    '3.0 GB'
    """
    for unit in ("bytes", "KB", "MB", "GB"):
        if n < 1024:
            return f"{int(n)} bytes" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"

"""core.llm.gguf_info: header facts of the real embedded GGUF, and one clear error per bad file."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from core import fakes
from core.errors import ModelLoadError
from core.llm.gguf_info import read_gguf_info, validate_gguf
from core.paths import embedded_gguf

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def embedded() -> Path:
    return embedded_gguf()


def test_embedded_model_header(embedded):
    info = validate_gguf(embedded)
    assert info.architecture == "llama"
    assert info.quantization == "Q4_1"
    assert info.context_length == 8192
    assert info.block_count == 30 and info.embedding_length == 576
    assert info.head_count == 9 and info.head_count_kv == 3
    assert info.vocab_size == 49152
    assert 120e6 < info.parameter_count < 150e6  # SmolLM2-135M
    assert info.file_size == embedded.stat().st_size == info.tensor_data_end
    assert "<|im_start|>" in info.chat_template
    assert not info.is_adapter and not info.truncated
    # 30 layers x 3 kv heads x 64 dims x (K + V) x 2 bytes
    assert info.kv_bytes_per_token() == 30 * 3 * 64 * 2 * 2


def _write_gguf(path: Path, *, arch="llama", general_type=None, tensors=None, file_type=None):
    return fakes.write_gguf(path, tensors, arch=arch, general_type=general_type, name="tiny test",
                            context_length=128, file_type=file_type)


def test_written_gguf_counts_params_and_guesses_quantization(tmp_path):
    path = _write_gguf(tmp_path / "t.gguf", tensors={
        "a.weight": np.zeros((4, 8), dtype=np.float32),
        "b.weight": np.ones((3,), dtype=np.float32)})
    info = validate_gguf(path)
    assert info.parameter_count == 35
    assert info.quantization == "F32"  # no general.file_type: the commonest tensor type
    assert info.context_length == 128 and info.name == "tiny test"
    assert info.tensor_data_end <= info.file_size


def test_file_type_name(tmp_path):
    path = _write_gguf(tmp_path / "t.gguf", file_type=1,
                       tensors={"a.weight": np.zeros((2, 2), dtype=np.float16)})
    assert read_gguf_info(path).quantization == "F16"


def test_adapter_is_recognised(tmp_path):
    path = _write_gguf(tmp_path / "lora.gguf", general_type="adapter",
                       tensors={"x.lora_a": np.zeros((2, 2), dtype=np.float32)})
    assert read_gguf_info(path).is_adapter


@pytest.mark.parametrize("make, words", [
    (lambda p: p, "does not exist"),
    (lambda p: (p.mkdir(), p)[1], "folder"),
    (lambda p: (p.write_bytes(b""), p)[1], "not a GGUF"),
    (lambda p: (p.write_bytes(os.urandom(4096)), p)[1], "not a GGUF"),
    (lambda p: (p.write_bytes(b"GGUF\x03\x00\x00\x00"), p)[1], "cut off"),
])
def test_bad_files_raise_one_clear_error(tmp_path, make, words):
    path = make(tmp_path / "model.gguf")
    with pytest.raises(ModelLoadError) as err:
        validate_gguf(path)
    assert words in str(err.value)
    assert "\n" not in str(err.value)


def test_truncated_to_half_is_incomplete(tmp_path, embedded):
    half = tmp_path / "half.gguf"
    data = embedded.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    info = read_gguf_info(half)  # the header is intact...
    assert info.truncated and info.tensor_data_end == len(data)
    with pytest.raises(ModelLoadError, match="incomplete"):  # ...the data is not
        validate_gguf(half)


def test_header_cut_inside_vocabulary(tmp_path, embedded):
    cut = tmp_path / "cut.gguf"
    with open(embedded, "rb") as fh:
        cut.write_bytes(fh.read(100_000))  # inside tokenizer.ggml.tokens
    with pytest.raises(ModelLoadError, match="header is cut off"):
        validate_gguf(cut)


def test_damaged_counts(tmp_path):
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + (3).to_bytes(4, "little") + (1 << 60).to_bytes(8, "little")
                    + (0).to_bytes(8, "little"))
    with pytest.raises(ModelLoadError, match="damaged"):
        validate_gguf(bad)
    bad.write_bytes(b"GGUF" + (1).to_bytes(4, "little") + bytes(16))
    with pytest.raises(ModelLoadError, match="version 1"):
        validate_gguf(bad)


def test_modules_import_without_llama_cpp():
    code = ("import sys, core.llm.gguf_info, core.llm.runtime; "
            "sys.exit(1 if 'llama_cpp' in sys.modules else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr

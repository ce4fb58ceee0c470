"""core.llm.runtime: bad model files, too little memory, native failures, LoRA adapters, and the
native log going to Python logging (never the terminal). Uses the real embedded GGUF."""

from __future__ import annotations

import logging
import os

import numpy as np
import pytest

import core.llm.native as native
import core.llm.runtime as runtime
from core import fakes
from core.errors import ModelLoadError
from core.paths import embedded_gguf
from core.llm.runtime import LlamaBackend
from core.types import GenParams

pytestmark = pytest.mark.slow
THREADS = 1  # the test machine's 2 cores are shared: 2 spinning threads crawl there

GREEDY = GenParams(temperature=0.0, max_tokens=12)
HELLO = [{"role": "user", "content": "Tell me about the sea."}]
N_EMBD, N_LAYER = 576, 30  # SmolLM2-135M


@pytest.fixture(scope="module")
def base():
    b = LlamaBackend(n_ctx=512, n_threads=THREADS)
    yield b
    b.close()


def _no_terminal_output(capfd):
    out, err = capfd.readouterr()
    assert out == "" and err == "", (out, err)


def _load_error(capfd, **kwargs) -> str:
    with pytest.raises(ModelLoadError) as err:
        LlamaBackend(**kwargs)
    message = str(err.value)
    assert "\n" not in message
    _no_terminal_output(capfd)
    return message


def test_missing_file(tmp_path, capfd):
    assert "does not exist" in _load_error(capfd, path=tmp_path / "nope.gguf")


def test_random_bytes(tmp_path, capfd):
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(os.urandom(1 << 16))
    assert "not a GGUF" in _load_error(capfd, path=junk)


def test_truncated_to_half(tmp_path, capfd):
    half = tmp_path / "half.gguf"
    data = embedded_gguf().read_bytes()
    half.write_bytes(data[: len(data) // 2])
    assert "incomplete" in _load_error(capfd, path=half)


def test_model_too_big_for_available_memory(monkeypatch, capfd):
    monkeypatch.setattr(runtime, "available_memory", lambda: 50 * 1024 * 1024)
    message = _load_error(capfd)
    assert "memory" in message and "available" in message


def test_huge_context_does_not_fit(capfd):
    message = _load_error(capfd, n_ctx=5_000_000)
    assert "5000000-token context" in message


def test_estimate_counts_kv_cache():
    info = runtime.validate_gguf(embedded_gguf())
    small, big = runtime.estimate_memory(info, 512), runtime.estimate_memory(info, 8192)
    assert big["kv_cache"] - small["kv_cache"] == info.kv_bytes_per_token() * (8192 - 512)
    assert small["weights"] > 90 * 1024 * 1024


def _write(path, arch, tensors, *, adapter=False, alpha=8.0):
    if adapter:
        return fakes.write_gguf(path, tensors, arch=arch, lora=True, lora_alpha=alpha)
    return fakes.write_gguf(path, tensors, arch=arch, block_count=1, context_length=64)


def test_unknown_architecture_fails_cleanly_in_native_code(tmp_path, capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="core.llm.runtime.native")
    odd = _write(tmp_path / "odd.gguf", "notarealarch", {"w": np.zeros((4, 4), np.float32)})
    message = _load_error(capfd, path=odd)
    assert "llama.cpp could not load odd.gguf" in message and "notarealarch" in message
    assert any("notarealarch" in r.getMessage() for r in caplog.records)


def _lora(tmp_path, name, scale, *, arch="llama", rank=4, seed=0):
    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(N_LAYER):
        a = rng.normal(0, 1, (rank, N_EMBD)).astype(np.float32)  # ne = [576, r]
        b = (rng.normal(0, 1, (N_EMBD, rank)) * scale).astype(np.float32)  # ne = [r, 576]
        tensors[f"blk.{layer}.attn_q.weight.lora_a"] = a
        tensors[f"blk.{layer}.attn_q.weight.lora_b"] = b
    return _write(tmp_path / f"{name}.gguf", arch, tensors, adapter=True)


def test_lora_adapter_is_applied(tmp_path, base, capfd):
    expected = "".join(base.complete(HELLO, params=GREEDY))
    zero = _lora(tmp_path, "zero", 0.0)
    with LlamaBackend(adapter=zero, n_ctx=512, n_threads=THREADS) as b:
        assert b.name == "SmolLM2-135M-Instruct.Q4_1+zero" and b.adapter_path == zero
        assert "".join(b.complete(HELLO, params=GREEDY)) == expected  # B = 0: no change
    strong = _lora(tmp_path, "strong", 1.0)
    with LlamaBackend(adapter=strong, n_ctx=512, n_threads=THREADS) as b:
        assert "".join(b.complete(HELLO, params=GREEDY)) != expected
    _no_terminal_output(capfd)


def test_bad_adapters(tmp_path, capfd):
    other = _lora(tmp_path, "other", 0.0, arch="qwen2")
    assert "for a 'qwen2' model" in _load_error(capfd, adapter=other)
    assert "not a LoRA adapter" in _load_error(capfd, adapter=embedded_gguf())
    assert "is a LoRA adapter, not a model" in _load_error(capfd, path=other)
    wrong_shape = _write(tmp_path / "shape.gguf", "llama", {
        "blk.0.attn_q.weight.lora_a": np.zeros((4, 100), np.float32),
        "blk.0.attn_q.weight.lora_b": np.zeros((N_EMBD, 4), np.float32)}, adapter=True)
    assert "llama.cpp could not load" in _load_error(capfd, adapter=wrong_shape)


def test_native_log_goes_to_python_logging_not_the_terminal(capfd, caplog):
    caplog.set_level(logging.DEBUG, logger="core.llm.runtime.native")
    with LlamaBackend(n_ctx=512, n_threads=THREADS) as b:
        "".join(b.complete(HELLO, params=GREEDY))
    native = [r for r in caplog.records if r.name == "core.llm.runtime.native"]
    assert len(native) > 10  # a model load logs its metadata, tensors, buffers...
    assert any("llama" in r.getMessage() for r in native)
    assert all("\n" not in r.getMessage() for r in native)  # one record per line
    _no_terminal_output(capfd)


def test_native_log_lines_are_reassembled():
    log = native._NativeLog()
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append((record.levelno, record.getMessage()))
    native.native_log.addHandler(handler)
    old = native.native_log.level
    native.native_log.setLevel(logging.DEBUG)
    try:
        log(3, b"load: half a ", None)  # WARN
        log(5, b"line\nsecond", None)  # CONT
        log(2, b"chatty info\n", None)  # INFO: DEBUG, not kept as recent
        log(4, b"boom\n", None)  # ERROR
    finally:
        native.native_log.removeHandler(handler)
        native.native_log.setLevel(old)
    assert seen == [(logging.WARNING, "load: half a line"), (logging.WARNING, "second"),
                    (logging.DEBUG, "chatty info"), (logging.ERROR, "boom")]
    assert log.take_recent() == ["load: half a line", "second", "boom"]

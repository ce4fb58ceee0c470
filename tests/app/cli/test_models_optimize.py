"""`memory-r1 models optimize`: derives the embedded model's Q8_0 copy once (again with --force
or when it is damaged), says whether the app uses it, and --use / --no-use switch the setting."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from app.cli import main
from core import fakes
from core.config import Settings, settings_path
from core.fileio import sha256_file
from core.llm import variant
from core.paths import embedded_gguf


def _run(capsys, *argv):
    code = main(["models", "optimize", *argv])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def fake_shipped(tmp_path, monkeypatch, data_home):
    src = fakes.write_gguf(tmp_path / "Tiny.Q4_1.gguf", {"token_embd.weight": np.ones(32, dtype=np.float32)},
                           file_type=3)
    monkeypatch.setenv("MEMORY_R1_EMBEDDED_GGUF", str(src))
    calls = []

    def quantize(source, dst, quant, *, threads=None, allow_requantize=False):
        calls.append(threads)
        fakes.write_gguf(Path(dst), {"token_embd.weight": np.zeros(32, dtype=np.float32)},
                         file_type=variant.FILE_TYPES[quant])

    monkeypatch.setattr(variant, "quantize_gguf", quantize)
    variant._sha_cache.clear()
    return src, calls


def test_optimize_derives_once_then_says_it_is_there(capsys, fake_shipped, data_home):
    src, calls = fake_shipped
    code, out, err = _run(capsys, "--json")
    first = json.loads(out)
    target = data_home / "models" / "derived" / "Tiny.Q8_0.gguf"
    # fast_embedded_model is on by default: the copy is used as soon as it is there
    assert code == 0 and first["derived"] is True and first["used"] is True and first["path"] == str(target)
    assert first["sha256"] == sha256_file(target) and first["source_sha256"] == sha256_file(src)
    code, out, err = _run(capsys)
    assert code == 0 and calls == [1] and err == ""
    assert out.strip().startswith(f"{target} is already derived") and "the embedded model uses it" in out
    code, out, err = _run(capsys, "--force", "--threads", "2")
    assert code == 0 and calls == [1, 2] and "Deriving Tiny.Q8_0.gguf from Tiny.Q4_1.gguf (forced)" in err


def test_optimize_use_and_no_use_switch_the_setting(capsys, fake_shipped):
    code, out, _ = _run(capsys, "--use")
    assert code == 0 and "the embedded model uses it" in out
    assert Settings.load(settings_path()).fast_embedded_model is True
    code, out, _ = _run(capsys, "--no-use", "--json")
    assert code == 0 and json.loads(out)["used"] is False
    assert Settings.load(settings_path()).fast_embedded_model is False


def test_optimize_rederives_a_damaged_copy(capsys, fake_shipped, data_home):
    _run(capsys)
    target = data_home / "models" / "derived" / "Tiny.Q8_0.gguf"
    target.write_bytes(target.read_bytes()[:-1] + b"\x01")
    variant._sha_cache.clear()
    code, _, err = _run(capsys)
    assert code == 0 and "(its checksum does not match its record)" in err
    assert variant.check_variant(target, fake_shipped[0]) is None


def test_optimize_refuses_zero_threads(capsys, fake_shipped):
    code, out, err = _run(capsys, "--threads", "0")
    assert code != 0 and out == "" and "--threads must be at least 1." in err


@pytest.mark.slow
def test_optimize_the_real_embedded_model(capsys, data_home):
    code, out, _ = _run(capsys, "--json", "--use")
    record = json.loads(out)
    assert code == 0 and record["derived"] and record["used"] and record["quant"] == "Q8_0"
    assert record["source_name"] == embedded_gguf().name
    assert record["size_bytes"] > 0 and record["sha256"] != record["source_sha256"]

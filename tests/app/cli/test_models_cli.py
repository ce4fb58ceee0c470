"""`memory-r1 models ...` through `app.cli.main`: a model already installed is recognised on
import, the embedded model cannot be removed, and `models list` aligns its columns."""

from __future__ import annotations

import json
import re
import shutil

import numpy as np

from app.cli import main
from core import fakes
from core.paths import embedded_gguf


def _run(capsys, *argv):
    code = main(["models", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_importing_the_same_model_twice_says_where_it_is_and_lists_it_once(capsys, tmp_path, data_home):
    model = fakes.write_gguf(tmp_path / "Twice.gguf", {"token_embd.weight": np.zeros(500, dtype=np.float32)})
    code, out, _ = _run(capsys, "import", str(model), "--json")
    first = json.loads(out)
    assert code == 0 and "already_installed" not in first
    copy = tmp_path / "copy-of-twice.gguf"
    shutil.copy(model, copy)
    code, out, err = _run(capsys, "import", str(copy))
    assert code == 0 and err == ""
    assert out.strip() == f"copy-of-twice.gguf is already installed as {first['id']!r} (Twice); nothing was copied."
    code, out, _ = _run(capsys, "import", str(model), "--json")
    assert json.loads(out)["already_installed"] is True and json.loads(out)["id"] == first["id"]
    code, out, _ = _run(capsys, "list", "--json")
    assert [m["id"] for m in json.loads(out)["installed"]] == ["smollm2-135m-instruct-q4_1", first["id"]]
    assert sorted(p.name for p in (data_home / "models").glob("*.gguf")) == ["Twice.gguf"]


def test_importing_a_copy_of_the_embedded_model_is_recognised(capsys, tmp_path, data_home):
    copy = tmp_path / "smollm.gguf"
    shutil.copy(embedded_gguf(), copy)
    code, out, _ = _run(capsys, "import", str(copy))
    assert code == 0 and "already installed as 'smollm2-135m-instruct-q4_1'" in out
    assert not list((data_home / "models").glob("*.gguf"))


def test_the_embedded_model_cannot_be_removed(capsys):
    code, out, err = _run(capsys, "remove", "smollm2-135m-instruct-q4_1", "--yes")
    assert code == 1 and out == ""
    assert err.strip().splitlines() == ["error: The embedded model ships with the app and cannot be removed."]
    assert embedded_gguf().exists()


def test_models_list_aligns_ids_sizes_and_fit(capsys, tmp_path):
    model = fakes.write_gguf(tmp_path / "a-model-with-a-much-longer-name-than-the-catalog-ids.gguf",
                             {"token_embd.weight": np.zeros(300, dtype=np.float32)})
    assert main(["models", "import", str(model), "--link"]) == 0
    capsys.readouterr()
    code, out, _ = _run(capsys, "list")
    assert code == 0
    rows = [line for line in out.splitlines() if line.startswith("  ")]
    assert len(rows) >= 3 and any("much-longer-name" in r for r in rows)
    size = re.compile(r"~?\d+(\.\d)? (bytes|KB|MB|GB|TB)")
    spans = [next(size.finditer(r)).span() for r in rows]
    assert len({end for _, end in spans}) == 1, out  # sizes right-aligned: one right edge
    fit_at = {end + 2 for _, end in spans}
    assert all(r[next(iter(fit_at)):].split()[0] in ("fits", "slow", "won't", "?", "file") for r in rows), out
    assert all(r[2] != " " for r in rows)  # ids start in one column

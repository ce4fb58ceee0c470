"""`memory-r1 memory ...`: commands that need no model load none, and the ones that embed do it
through the GGUF embedder, without torch (issue 17: a command line that answers at once)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
HEAVY = ("torch", "sentence_transformers", "transformers", "llama_cpp")

RUNNER = """
import json, sys
from app.cli import main
codes = [main(argv) for argv in json.loads(sys.argv[1])]
heavy = [m for m in {heavy!r} if m in sys.modules]
print("RESULT " + json.dumps({{"codes": codes, "heavy": heavy}}))
"""


def run_in_subprocess(home: Path, *commands: list[str]) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT), MEMORY_R1_HOME=str(home), HF_HUB_OFFLINE="1",
               TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-c", RUNNER.format(heavy=HEAVY), json.dumps(list(commands))],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr
    line = [x for x in res.stdout.splitlines() if x.startswith("RESULT ")][-1]
    return {**json.loads(line[len("RESULT "):]), "stdout": res.stdout}


def test_commands_without_a_model_import_no_torch_nor_llama_cpp(data_home, tmp_path):
    from core.embeddings import DEFAULT_DIM, DEFAULT_EMBEDDER_NAME
    from core.fakes import HashEmbedder
    from core.memory import MemoryBank

    # vectors under the default embedder's identity, so opening the bank re-embeds nothing
    with MemoryBank(data_home / "memory.sqlite3", HashEmbedder(DEFAULT_DIM, DEFAULT_EMBEDDER_NAME)) as bank:
        for text in ("I adopted a dog named Max", "My sister lives in Lisbon", "I work night shifts"):
            bank.add(text, speaker="Ann")
    out = run_in_subprocess(data_home, ["memory", "list"], ["memory", "show", "1"], ["memory", "stats"],
                            ["memory", "history"], ["memory", "export", str(tmp_path / "e.jsonl")],
                            ["memory", "delete", "2"], ["memory", "restore", "2"], ["memory", "undo"],
                            ["memory", "forget", "3"], ["memory", "list", "--json"])
    assert out["codes"] == [0] * 10, out["stdout"]
    assert out["heavy"] == [], out["heavy"]
    assert "I adopted a dog named Max" in out["stdout"] and (tmp_path / "e.jsonl").is_file()
    assert not (data_home / "embedder").exists()  # nothing converted either


@pytest.mark.slow
def test_add_and_search_use_the_gguf_embedder_without_torch(data_home):
    out = run_in_subprocess(data_home, ["memory", "add", "Caroline adopted a golden retriever puppy"],
                            ["memory", "add", "The quarterly tax filing is due in April"],
                            ["memory", "search", "Which pet does Caroline have?", "-k", "1", "--mode", "vector",
                             "--json"])
    assert out["codes"] == [0, 0, 0], out["stdout"]
    assert out["heavy"] == ["llama_cpp"]
    hits = json.loads([x for x in out["stdout"].splitlines() if x.startswith("[")][-1])
    assert hits[0]["text"].startswith("Caroline adopted")
    assert (data_home / "embedder" / "all-MiniLM-L6-v2.f32.gguf").is_file()

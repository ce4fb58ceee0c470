"""`memory-r1 memory ...` through `app.cli.main` (HashEmbedder) and one real subprocess run."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from app.cli import main
from core.fakes import HashEmbedder
from core.memory.migrations import LATEST

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(autouse=True)
def fast_embedder(monkeypatch):
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: HashEmbedder())


def run(capsys, *argv):
    code = main(["memory", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv, "--json")
    assert code == 0, err
    return json.loads(out)


def test_add_list_search_edit_delete_restore(capsys, data_home):
    first = run_json(capsys, "add", "Caroline went to a support group", "--speaker", "Caroline",
                     "--time", "1:56 pm on 8 May, 2023")
    assert first["id"] == 1 and first["speaker"] == "Caroline" and first["observed_at"] == "1:56 pm on 8 May, 2023"
    run_json(capsys, "add", "Melanie painted a sunrise")
    assert [m["id"] for m in run_json(capsys, "list")] == [2, 1]
    hits = run_json(capsys, "search", "support group", "-k", "1", "--mode", "keyword")
    assert hits[0]["id"] == 1 and hits[0]["score"] > 0
    assert run_json(capsys, "search", "sunrise", "--mode", "vector")[0]["id"] == 2
    assert run_json(capsys, "edit", "1", "Caroline went to two support groups")["version"] == 2
    assert run_json(capsys, "delete", "2")["status"] == "deleted"
    assert [m["id"] for m in run_json(capsys, "list", "--status", "deleted")] == [2]
    assert run_json(capsys, "restore", "2")["status"] == "active"
    assert (data_home / "memory.sqlite3").exists()
    code, out, err = run(capsys, "list")
    assert code == 0 and "#1 (1:56 pm on 8 May, 2023) Caroline: Caroline went to two support groups" in out


def test_history_undo_forget_stats(capsys):
    run_json(capsys, "add", "secret thing")
    run_json(capsys, "edit", "1", "secret thing two")
    events = run_json(capsys, "history", "1")
    assert [e["event"] for e in events] == ["EDIT", "ADD"]
    undone = run_json(capsys, "undo")
    assert undone["updated"][0]["text"] == "secret thing" and undone["summary"] == "1 updated"
    assert run_json(capsys, "forget", "1") == {"forgotten": [1], "sources_removed": False}
    assert [e["event"] for e in run_json(capsys, "history")] == ["FORGET"]
    stats = run_json(capsys, "stats")
    assert stats["memories"]["active"] == 0 and stats["embedder"] == "hash-embedder"
    code, out, _ = run(capsys, "stats")
    assert code == 0 and re.search(rf"^schema version +{LATEST}$", out, re.M)


def test_stats_is_an_aligned_table_and_json_the_dict(capsys, data_home):
    for text in ("Maya has a dog", "Maya lives in Porto", "Maya likes tea"):
        run_json(capsys, "add", text, "--speaker", "Maya")
    run_json(capsys, "delete", "3")
    stats = run_json(capsys, "stats")
    assert stats["memories"]["active"] == 2 and stats["memories"]["deleted"] == 1 and stats["total"] == 3
    assert stats["path"] == str(data_home / "memory.sqlite3") and isinstance(stats["size_bytes"], int)
    code, out, _ = run(capsys, "stats")
    lines = out.splitlines()
    assert code == 0 and len(lines) == sum(len(v) if isinstance(v, dict) else 1 for v in stats.values())
    row = {re.split(r"  +", line.strip())[0] if not line.startswith("memories  ") else
           " ".join(line.split()[:2]): line for line in lines}
    assert row["memories active"].split()[-1] == "2" and row["memories deleted"].split()[-1] == "1"
    assert row["history events"].split()[-1] == str(stats["events"])
    assert row["database"].endswith(str(data_home / "memory.sqlite3"))
    assert re.search(r"\d+(\.\d)? (bytes|KB|MB)$", row["size on disk"])
    numeric = [line for line in lines if re.search(r"\d$", line) and "database" not in line]
    assert len({len(line) for line in numeric}) == 1, out  # numbers right-aligned: one right edge
    value_at = {len(line) - len(line.split()[-1]) for line in (row["embedder"], row["database"])}
    label_w = max(len(line) - len(line.lstrip()) for line in lines)  # no leading spaces
    assert label_w == 0 and len(value_at) == 1, out  # text values start in one column


def test_export_import(capsys, tmp_path):
    run_json(capsys, "add", "Caroline likes tea", "--speaker", "Caroline")
    out = tmp_path / "mem.jsonl"
    assert run_json(capsys, "export", str(out)) == {"exported": 1, "file": str(out)}
    assert main(["--data-dir", str(tmp_path / "other"), "memory", "import", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == {"imported": 1, "skipped": 0, "without_sources": 0, "notes": []}
    assert main(["--data-dir", str(tmp_path / "other"), "memory", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)[0]["text"] == "Caroline likes tea"


@pytest.mark.parametrize("argv, message", [
    (["delete", "42"], "There is no memory #42."),
    (["edit", "42", "x"], "There is no memory #42."),
    (["add", "   "], "The memory text is empty."),
    (["undo"], "There is nothing to undo."),
    (["import", "/nonexistent/file.jsonl"], "Cannot read"),
])
def test_errors_are_one_line_on_stderr_with_a_nonzero_exit(capsys, argv, message):
    code, out, err = run(capsys, *argv, "--json")
    assert code != 0 and out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]


def test_a_broken_import_line_names_the_line(capsys, tmp_path):
    src = tmp_path / "bad.jsonl"
    src.write_text('{"text": "fine"}\n{"text": \n', encoding="utf-8")
    code, _, err = run(capsys, "import", str(src))
    assert code == 1 and "line 2:" in err and "nothing was imported" in err
    assert run_json(capsys, "list") == []


def test_subprocess_json_with_the_real_embedder(tmp_path, real_embedder):
    """`python -m app memory search --json` in a fresh process, on a bank filled with MiniLM vectors."""
    from core.memory import MemoryBank

    data = tmp_path / "data"
    with MemoryBank(data / "memory.sqlite3", real_embedder) as bank:
        bank.add("Caroline adopted a golden retriever puppy last spring", speaker="Caroline")
        bank.add("Melanie ran a marathon in Boston", speaker="Melanie")
        bank.add("The quarterly tax filing is due in April")
    env = dict(os.environ, PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    res = subprocess.run([sys.executable, "-m", "app", "--data-dir", str(data), "memory", "search",
                          "Which pet does Caroline have?", "-k", "3", "--mode", "vector", "--json"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    hits = json.loads(res.stdout)
    assert hits[0]["text"].startswith("Caroline adopted a golden retriever")
    res = subprocess.run([sys.executable, "-m", "app", "--data-dir", str(data), "memory", "delete", "99"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 1 and res.stderr.strip() == "error: There is no memory #99."
    assert "torch" not in res.stderr

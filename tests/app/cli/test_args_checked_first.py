"""Arguments are checked before any model loads: a bad model/adapter path, conversation id,
memory id or model id is one sentence (exit 1) and neither the LLM loader nor the embedder
ran."""

from __future__ import annotations

import json

import pytest

from app.cli import chat_cmd, main
from core.fakes import HashEmbedder
from core.memory import MemoryBank
from core.paths import db_path


class NoLoadEmbedder(HashEmbedder):
    def embed(self, texts):
        raise AssertionError("the embedder was used before the arguments were checked")


def _no_load(spec):
    raise AssertionError("a model was loaded before the arguments were checked")


@pytest.fixture
def guarded(monkeypatch, data_home):
    with MemoryBank(db_path(), HashEmbedder()) as bank:
        bank.add("Maya has a dog")
        bank.add("Maya lives in Porto")
        bank.delete(2)
    monkeypatch.setattr(chat_cmd, "_load", _no_load)
    monkeypatch.setattr("core.memory.bank.lazy_default_embedder", lambda: NoLoadEmbedder())
    monkeypatch.setattr(chat_cmd, "_open_bank", lambda: MemoryBank(db_path(), NoLoadEmbedder()))


def _err(capsys, argv) -> list[str]:
    code = main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and err[0].startswith("error: "), (argv, code, err)
    return err


@pytest.mark.parametrize("argv", [
    ["ask", "Where does Maya live?", "--answer-model", "{missing}"],
    ["ask", "Where does Maya live?", "--answer-adapter", "{missing}"],
    ["chat", "--manager-model", "{missing}"],
    ["chat", "--answer-adapter", "{folder}"],
    ["ingest", "{sample}", "--manager-model", "{missing}"],
])
def test_a_bad_model_path_is_said_before_anything_loads(guarded, capsys, tmp_path, argv):
    sample = tmp_path / "s.json"
    sample.write_text(json.dumps({"conversation": {"speaker_a": "A", "speaker_b": "B",
                                                   "session_1": [{"speaker": "A", "text": "hi"}]}}))
    names = {"missing": str(tmp_path / "absent.gguf"), "folder": str(tmp_path), "sample": str(sample)}
    err = _err(capsys, [a.format(**names) for a in argv])[0]
    assert "does not exist" in err and ("absent.gguf" in err or str(tmp_path) in err), err


def test_a_bad_conversation_id_is_said_before_the_models_load(guarded, capsys):
    assert "999" in _err(capsys, ["chat", "--conversation", "999"])[0]


@pytest.mark.parametrize("argv, said", [
    (["memory", "edit", "99", "Maya has two dogs"], "99"),
    (["memory", "edit", "2", "Maya lives in Lisbon"], "restore it before editing"),
    (["memory", "edit", "-1", "x"], "-1"),
    (["memory", "delete", "99"], "99"),
])
def test_a_bad_memory_id_is_said_before_the_embedder_loads(guarded, capsys, argv, said):
    assert said in _err(capsys, argv)[0]


def test_models_use_checks_the_model_id_and_the_adapter_first(guarded, capsys, monkeypatch, tmp_path):
    import numpy as np

    from core.catalog import ModelStore
    from core.fakes import write_gguf

    assert "nosuch" in _err(capsys, ["models", "use", "nosuch"])[0]
    model = write_gguf(tmp_path / "Pick-Me.gguf", {"token_embd.weight": np.zeros(64, dtype=np.float32)})
    assert main(["models", "import", str(model), "--link", "--json"]) == 0
    model_id = json.loads(capsys.readouterr().out)["id"]

    def no_hash(self, record):
        raise AssertionError("the model was hashed before the adapter was checked")

    monkeypatch.setattr(ModelStore, "sha256_of", no_hash)
    assert "absent.gguf" in _err(capsys, ["models", "use", model_id, "--adapter", str(tmp_path / "absent.gguf")])[0]


def test_chat_says_a_locked_database_before_the_models_load(guarded, capsys, monkeypatch):
    import core.memory.db as db

    monkeypatch.setattr(db, "check_writable", lambda path, **k: (_ for _ in ()).throw(
        db.DatabaseLockedError(f"The memory database {path} is locked by another program.")))
    assert "locked" in _err(capsys, ["chat"])[0]


@pytest.fixture
def files(tmp_path):
    import numpy as np

    from core.fakes import write_gguf

    text = tmp_path / "notes.gguf"
    text.write_text("not a model at all, just some words in a file")
    model = write_gguf(tmp_path / "model.gguf", {"token_embd.weight": np.zeros(64, dtype=np.float32)})
    adapter = write_gguf(tmp_path / "lora.gguf", {"token_embd.weight": np.zeros(64, dtype=np.float32)}, lora=True)
    return {"text": str(text), "model": str(model), "adapter": str(adapter), "missing": str(tmp_path / "absent.gguf"),
            "data": str(tmp_path / "data.json")}


@pytest.mark.parametrize("argv, said", [
    (["chat", "--answer-model", "{text}"], "not a GGUF model file"),
    (["ask", "q", "--manager-model", "{text}"], "--manager-model"),
    (["chat", "--answer-model", "{adapter}"], "is a LoRA adapter, not a model"),
    (["chat", "--manager-adapter", "{model}"], "is a model, not a LoRA adapter"),
    (["eval", "locomo", "--data", "{data}", "--judge-model", "{missing}"], "does not exist"),
    (["eval", "locomo", "--data", "{data}", "--answer-model", "{text}"], "not a GGUF model file"),
])
def test_a_model_file_that_is_not_a_gguf_of_its_kind_is_said_before_anything_loads(guarded, capsys, files,
                                                                                   monkeypatch, argv, said):
    monkeypatch.setattr("core.memory.MemoryBank.open",
                        classmethod(lambda cls, *a, **k: pytest.fail("the bank was opened first")))
    err = _err(capsys, [a.format(**files) for a in argv])[0]
    assert said in err, err


def test_a_missing_import_file_is_said_before_the_embedder_loads(guarded, capsys, files):
    err = _err(capsys, ["memory", "import", files["missing"]])[0]
    assert "Cannot read" in err and "absent.gguf" in err


def test_eval_checks_the_models_before_importing_the_evaluation(files):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[3]
    code = ("import sys; from app.cli import main; rc = main(['eval', 'locomo', '--data', sys.argv[1], "
            "'--manager-model', sys.argv[2]]); "
            "print(rc, 'training.eval.runner' in sys.modules, 'llama_cpp' in sys.modules)")
    res = subprocess.run([sys.executable, "-c", code, files["data"], files["missing"]], cwd=root,
                         capture_output=True, text=True, timeout=120)
    assert res.stdout.split() == ["1", "False", "False"], res.stdout + res.stderr
    assert "absent.gguf does not exist" in res.stderr


@pytest.mark.parametrize("argv", [["memory", "list", "--limit", "0"], ["memory", "history", "--limit", "-2"],
                                  ["memory", "edit", "x1", "text"], ["chat", "--conversation", "abc"]])
def test_bad_numbers_are_refused_by_the_parser(guarded, capsys, argv):
    with pytest.raises(SystemExit) as exit_:
        main(argv)
    assert exit_.value.code == 2
    assert "error:" in capsys.readouterr().err

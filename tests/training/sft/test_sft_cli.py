"""`memory-r1 train sft`: registration without heavy imports, argument errors said before
anything loads, and the answer role's wiring (examples -> pairs -> the loop)."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import pytest

from core.errors import InvalidInputError


def _parser():
    from app.cli.train_cmd import register

    parser = argparse.ArgumentParser()
    register(parser.add_subparsers(dest="command"))
    return parser


def _example(i: int) -> dict:
    return {"id": f"c/{i}", "question": f"q{i}?", "answer": f"a{i}", "memories": [{"text": "m"}],
            "evidence": ["D1:1"], "category": 4,
            "prompt_sources": [{"role": "system", "content": "S"}, {"role": "user", "content": f"- t: m{i}\nq{i}?"}],
            "shown": [{"line": f"t: m{i}", "source": "locomo:c/D1:1", "refs": []}]}


def test_registration_and_parsing_import_nothing_heavy():
    args = _parser().parse_args(["train", "sft", "--role", "answer", "--data", "d.jsonl", "--out", "o",
                                 "--val-data", "v.jsonl", "--time-budget", "2", "--threads", "1",
                                 "--max-examples", "3", "--config", "c.json"])
    assert (args.role, args.val, args.time_budget, args.threads, args.max_examples, args.base) == \
        ("answer", "v.jsonl", 2.0, 1, 3, "embedded")
    assert args.func.__name__ == "run_train_sft"
    code = ("import sys, argparse; from app.cli.train_cmd import register;"
            "register(argparse.ArgumentParser().add_subparsers());"
            "bad=[m for m in ('torch','trl','peft','transformers','llama_cpp','training') if m in sys.modules];"
            "print(bad); sys.exit(1 if bad else 0)")
    res = subprocess.run([sys.executable, "-c", code], cwd=Path(__file__).resolve().parents[3],
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.parametrize("argv", [
    ["train", "sft", "--data", "d.json", "--out", "o"],  # no --role
    ["train", "sft", "--role", "judge", "--data", "d.json", "--out", "o"],
    ["train", "sft", "--role", "answer", "--out", "o"],  # no --data
    ["train", "sft", "--role", "answer", "--data", "d.json", "--out", "o", "--max-examples", "0"],
    ["train", "sft", "--role", "answer", "--data", "d.json", "--out", "o", "--time-budget", "-1"],
    ["train", "sft", "--role", "answer", "--data", "d.json", "--out", "o", "--no-evidence", "guess"],
])
def test_bad_arguments_exit_with_usage(argv, capsys):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(argv)
    assert exc.value.code == 2


def test_user_errors_before_anything_loads(tmp_path, monkeypatch):
    parser = _parser()
    data = tmp_path / "ex.jsonl"
    data.write_text(json.dumps(_example(0)) + "\n")

    def run(*extra):
        args = parser.parse_args(["train", "sft", "--out", str(tmp_path / "o"), *extra])
        return args.func(args)

    with pytest.raises(InvalidInputError, match="does not exist"):
        run("--role", "answer", "--data", str(tmp_path / "missing.json"), "--no-val")
    with pytest.raises(InvalidInputError, match="validation data .* not found"):
        run("--role", "answer", "--data", str(data), "--val", str(tmp_path / "nope.json"))
    bad = tmp_path / "c.json"
    bad.write_text('{"epoch": 3}')
    with pytest.raises(InvalidInputError, match="unknown SFT setting"):
        run("--role", "answer", "--data", str(data), "--no-val", "--config", str(bad))
    with pytest.raises(InvalidInputError, match="Not a LoCoMo sample"):  # the manager's pairs need LoCoMo
        run("--role", "manager", "--data", str(data), "--no-val")
    old = tmp_path / "old.jsonl"
    old.write_text(json.dumps({"question": "q", "answer": "a", "memories": []}) + "\n")
    with pytest.raises(InvalidInputError, match="rebuild the examples"):
        run("--role", "answer", "--data", str(old), "--no-val")


def test_answer_role_feeds_the_pairs_and_options_to_the_loop(tmp_path, monkeypatch, capsys):
    from training.sft import loop

    data, val = tmp_path / "train.jsonl", tmp_path / "val.jsonl"
    data.write_text("".join(json.dumps(_example(i)) + "\n" for i in range(5)))
    val.write_text(json.dumps(_example(9)) + "\n")
    seen = {}

    def fake_train(config, pairs, out_dir, *, val_pairs=None, model=None, tokenizer=None, progress=False,
                   data_notes=None):
        seen.update(config=config, pairs=pairs, val=val_pairs, out=Path(out_dir))
        return {"steps": 1, "examples_seen": 2, "stop": "done", "first_loss": 2.0, "last_loss": 1.0,
                "seconds": {"train": 3.0}, "seconds_per_example": 1.5, "best_dir": str(Path(out_dir) / "best"),
                "final_dir": str(Path(out_dir) / "final"),
                "validation": {"baseline": {"val_loss": 2.0}, "best": {"val_loss": 1.5, "step": 1}}}

    monkeypatch.setattr(loop, "train_sft", fake_train)
    from core.paths import repo_root

    args = _parser().parse_args(["train", "sft", "--role", "answer", "--data", str(data), "--val-data", str(val),
                                 "--out", str(tmp_path / "o"), "--max-examples", "3", "--threads", "1",
                                 "--time-budget", "1.5",
                                 "--config", str(repo_root() / "training" / "configs" / "sft_cpu.json")])
    assert args.func(args) == 0
    cfg = seen["config"]
    assert (cfg.role, cfg.threads, cfg.time_budget_s, cfg.grad_accum) == ("answer", 1, 90.0, 8)
    assert [p["id"] for p in seen["pairs"]] == ["c/0", "c/1", "c/2"] and [p["id"] for p in seen["val"]] == ["c/9"]
    assert seen["pairs"][0]["messages"] == _example(0)["prompt_sources"]
    assert seen["pairs"][0]["completion"] == "**Memories selected as relevant:**\n- t: m0\n**Answer:** a0"
    out = capsys.readouterr().out
    assert "3 training pairs" in out and "validation loss 2.0 -> best 1.5" in out and "memory-r1 export" in out
    counts = json.loads((tmp_path / "o" / "data" / "pair_counts.json").read_text())
    assert counts["train"]["with_evidence"] == 5 and counts["val"]["pairs"] == 1


def test_manager_role_takes_its_pairs_from_sft_manager(tmp_path, monkeypatch, capsys):
    import types

    from training.sft import loop

    data = tmp_path / "train.json"
    data.write_text("[]")
    calls = []

    def build_pairs(path, *, samples=None, max_sessions=None, threshold=None, stats=None):
        calls.append((path, samples, max_sessions, threshold))
        stats["pairs"] = 2
        return [{"id": f"t{i}", "messages": [{"role": "user", "content": "turn"}], "completion": "{}"}
                for i in range(2)]

    from training.data.sft_manager import balance_empty

    monkeypatch.setitem(sys.modules, "training.data.sft_manager",
                        types.SimpleNamespace(build_pairs=build_pairs, balance_empty=balance_empty))
    seen = {}

    def fake_train(config, pairs, out_dir, *, val_pairs=None, data_notes=None, **_):
        seen.update(role=config.role, pairs=pairs, val=val_pairs, notes=data_notes)
        return {"steps": 1, "examples_seen": 2, "stop": "done", "first_loss": 1.0, "last_loss": 0.5,
                "seconds": {"train": 1.0}, "seconds_per_example": 0.5, "best_dir": None,
                "final_dir": str(Path(out_dir) / "final"), "validation": {"baseline": None, "best": None}}

    monkeypatch.setattr(loop, "train_sft", fake_train)
    args = _parser().parse_args(["train", "sft", "--role", "manager", "--data", str(data), "--no-val",
                                 "--out", str(tmp_path / "o"), "--max-sessions", "2", "--samples", "conv-26"])
    assert args.func(args) == 0
    assert calls == [(str(data), ("conv-26",), 2, 0.5)]  # the config's default match rule
    assert seen["role"] == "manager" and len(seen["pairs"]) == 2 and seen["val"] == []
    assert seen["notes"]["train"]["balance"]["empty_kept"] == 0  # "{}" is no empty choice
    assert "manager-sft-lora.gguf" in capsys.readouterr().out


def _manager_locomo(tmp_path) -> Path:
    from tests.training.data.test_sft_manager import CHATTY
    from tests.training.locomo_fixtures import write_locomo

    return write_locomo(tmp_path, CHATTY)


def test_manager_balance_and_threshold_reach_the_pairs_and_the_run_record(tmp_path, monkeypatch, capsys):
    from core.paths import repo_root
    from training.sft import loop

    data = _manager_locomo(tmp_path)  # 8 pairs, 5 with the empty choice
    seen = {}

    def fake_train(config, pairs, out_dir, *, val_pairs=None, data_notes=None, **_):
        seen.update(config=config, pairs=pairs, val=val_pairs, notes=data_notes)
        return {"steps": 1, "examples_seen": 2, "stop": "done", "first_loss": 1.0, "last_loss": 0.5,
                "seconds": {"train": 1.0}, "seconds_per_example": 0.5, "best_dir": None,
                "final_dir": str(Path(out_dir) / "final"), "validation": {"baseline": None, "best": None}}

    monkeypatch.setattr(loop, "train_sft", fake_train)
    args = _parser().parse_args(["train", "sft", "--role", "manager", "--data", str(data), "--val", str(data),
                                 "--out", str(tmp_path / "o"), "--max-empty-share", "0.25",
                                 "--match-threshold", "0.4"])
    assert args.func(args) == 0
    cfg = seen["config"]
    assert (cfg.max_empty_share, cfg.match_threshold) == (0.25, 0.4)  # recorded in train_config
    empties = [p for p in seen["pairs"] if p["completion"] == '{"keep": []}']
    assert len(seen["pairs"]) == 4 and len(empties) == 1  # 3 non-empty + 1 empty: share 0.25
    assert seen["val"] == seen["pairs"]  # validation pairs are balanced the same way
    notes = seen["notes"]
    assert notes["train"]["match_threshold"] == 0.4
    assert notes["train"]["balance"] == {"max_empty_share": 0.25, "seed": 42, "pairs_in": 8, "empty_in": 5,
                                         "empty_kept": 1, "pairs_kept": 4, "empty_share": 0.25}
    counts = json.loads((tmp_path / "o" / "data" / "pair_counts.json").read_text())
    assert counts["val"]["balance"]["pairs_kept"] == 4
    # the shipped balanced config: its fields load and the flags override them
    args = _parser().parse_args(["train", "sft", "--role", "manager", "--data", str(data), "--no-val",
                                 "--out", str(tmp_path / "o2"), "--config",
                                 str(repo_root() / "training" / "configs" / "sft_manager_balanced_cpu.json")])
    assert args.func(args) == 0
    assert (seen["config"].max_empty_share, seen["config"].match_threshold) == (0.4, 0.5)
    assert len(seen["pairs"]) == 5  # 3 + 2 empty


@pytest.mark.parametrize("flag,value", [("--max-empty-share", "1.5"), ("--max-empty-share", "x"),
                                        ("--match-threshold", "0"), ("--match-threshold", "2")])
def test_bad_balance_flags_exit_with_usage(flag, value):
    with pytest.raises(SystemExit) as exc:
        _parser().parse_args(["train", "sft", "--role", "manager", "--data", "d.json", "--out", "o", flag, value])
    assert exc.value.code == 2


def test_balance_flags_are_for_the_manager_only_and_bad_config_values_are_said(tmp_path):
    data = _manager_locomo(tmp_path)
    args = _parser().parse_args(["train", "sft", "--role", "answer", "--data", str(data), "--no-val",
                                 "--out", str(tmp_path / "o"), "--max-empty-share", "0.5"])
    with pytest.raises(InvalidInputError, match="for --role manager only"):
        args.func(args)
    bad = tmp_path / "c.json"
    bad.write_text('{"max_empty_share": 2}')
    args = _parser().parse_args(["train", "sft", "--role", "manager", "--data", str(data), "--no-val",
                                 "--out", str(tmp_path / "o"), "--config", str(bad)])
    with pytest.raises(InvalidInputError, match="max_empty_share must be between 0 and 1"):
        args.func(args)
    assert not (tmp_path / "o").exists()  # nothing written

"""The evaluation's switches for the grounding gate and the extraction mode: parsed from the
command line, recorded in the run's options, keyed into the bank cache, and the gate's
rejected facts counted in the summary and the report."""

from __future__ import annotations

import json

from core.fakes import FakeBackend, HashEmbedder
from tests.training.locomo_fixtures import T1, extracted_facts, locomo_sample, write_locomo
from training.eval.runner import Components, EvalConfig, run_locomo

CONV = locomo_sample("conv-gate", [
    (T1, [{"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a dog named Rex yesterday."},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "I moved to Oslo in 2022."}]),
], [{"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4}])
INVENTED = "Ann has a cat named Luna."


def inventing_manager(messages, schema):
    """Every extraction: what was said plus a fact nobody said; every choice: all statements."""
    facts = extracted_facts(messages, schema)
    if facts is not None:
        return json.dumps({"facts": facts + [INVENTED]})
    if "keep" in schema["properties"]:
        return json.dumps({"keep": schema["properties"]["keep"]["items"]["enum"]})
    return json.dumps({"memory": []})


def components(manager):
    answer = FakeBackend(default="**Answer:** Oslo", name="fake-answer")
    return Components(HashEmbedder(), answer=lambda: answer, manager=lambda: manager,
                      ids={"manager": "fake-manager-v1", "answer": "fake-answer-v1"})


def run(tmp_path, name, **kw):
    data = write_locomo(tmp_path, CONV)
    manager = FakeBackend(default=inventing_manager, name="fake-manager")
    config = EvalConfig(data=str(data), out=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
                        systems=("memory-r1",), progress=False, **kw)
    return run_locomo(config, components(manager))["memory-r1"], manager


def test_the_gate_is_on_by_default_and_its_rejects_counted(tmp_path):
    summary, manager = run(tmp_path, "on")
    assert summary["config"]["gate"] is True and summary["config"]["manager_extraction"] == "auto"
    ing = summary["ingestion"]
    assert ing["rejected"] == 2 and ing["memories"] == 2  # one invented fact per turn refused
    report = (tmp_path / "on" / "report.md").read_text(encoding="utf-8")
    assert "rejected by the grounding gate: 2" in report


def test_no_gate_and_extractive_are_recorded_and_build_their_own_banks(tmp_path):
    on, _ = run(tmp_path, "on")
    off, manager = run(tmp_path, "off", gate=False)
    assert manager.calls, "a bank built with the gate was reused without it"
    assert off["config"]["gate"] is False and off["ingestion"]["rejected"] == 0
    assert off["ingestion"]["memories"] == 4  # the invented facts written: the paper's path
    ext, manager = run(tmp_path, "ext", manager_extraction="extractive")
    assert ext["config"]["manager_extraction"] == "extractive"
    assert all("keep" in c["schema"]["properties"] for c in manager.calls)  # no free extraction call
    assert ext["ingestion"]["rejected"] == 0 and ext["ingestion"]["memories"] == 2
    summary = json.loads((tmp_path / "ext" / "summary.json").read_text(encoding="utf-8"))
    assert summary["config"]["manager_extraction"] == "extractive"


def test_the_flags_parse_into_the_config():
    from app.cli import build_parser
    from app.cli.eval_cmd import _config

    args = build_parser().parse_args(["eval", "locomo", "--data", "x.json", "--manager-extraction",
                                      "extractive", "--no-gate"])
    config = _config(args)
    assert (config.manager_extraction, config.gate) == ("extractive", False)
    default = _config(build_parser().parse_args(["eval", "locomo", "--data", "x.json"]))
    assert (default.manager_extraction, default.gate) == ("auto", True)

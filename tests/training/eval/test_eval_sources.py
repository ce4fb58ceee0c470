"""Evidence kept for answering in the evaluation: recall counts a memory's provenance links,
the records keep the shown source refs, `--no-sources` gives the paper's answer prompt, the
options name the output folder and show in `eval compare`, and the bank audit counts the
memories whose names or numbers their source turns do not hold."""

from __future__ import annotations

import json

from core.agents.answer import AnswerAgent
from core.fakes import FakeBackend, HashEmbedder
from core.types import Memory, MemoryOp, MemorySource, SourceTurn
from tests.training.locomo_fixtures import T1, T2, extracted_facts, locomo_sample, write_locomo
from training.eval.audit import audit_bank, missing_claims
from training.eval.report import compare_runs
from training.eval.runner import Components, EvalConfig, covers, default_out, option_tag, run_locomo
from training.eval.systems import answer_with_agent

CONV = locomo_sample("conv-src", [
    (T1, [{"speaker": "Ann", "dia_id": "D1:1", "text": "I adopted a dog named Rex yesterday."},
          {"speaker": "Bob", "dia_id": "D1:2", "text": "I moved to Oslo in 2022."}]),
], [{"question": "Where does Bob live?", "answer": "Oslo", "evidence": ["D1:2"], "category": 4}])
INVENTED = "Ann has a cat named Luna."


def inventing_manager(messages, schema):
    facts = extracted_facts(messages, schema)
    if facts is not None:
        return json.dumps({"facts": facts + [INVENTED]})
    if "keep" in schema["properties"]:
        return json.dumps({"keep": schema["properties"]["keep"]["items"]["enum"]})
    return json.dumps({"memory": []})


def run(tmp_path, name, **kw):
    data = write_locomo(tmp_path, CONV)
    answer = FakeBackend(default="**Answer:** Oslo", name="fake-answer")
    manager = FakeBackend(default=inventing_manager, name="fake-manager")
    comps = Components(HashEmbedder(), answer=lambda: answer, manager=lambda: manager,
                       ids={"manager": "fake-manager-v1", "answer": "fake-answer-v1"})
    config = EvalConfig(data=str(data), out=str(tmp_path / name), cache_dir=str(tmp_path / "cache"),
                        systems=("memory-r1",), progress=False, **kw)
    summary = run_locomo(config, comps)["memory-r1"]
    records = [json.loads(line) for line in (tmp_path / name / "predictions.jsonl").read_text().splitlines()]
    return summary, records, answer


def test_evidence_recall_counts_linked_turns(bank):
    first = bank.apply([MemoryOp("ADD", text="Ann lives in Lisbon", speaker="Ann", observed_at=T1,
                                 source="locomo:c/D1:1")],
                       turn="locomo:c/D1:1", source=SourceTurn("I live in Lisbon.", "Ann", T1, ref="locomo:c/D1:1"))
    mid = first.added[0].id
    bank.apply([MemoryOp("UPDATE", memory_id=mid, text="Ann lives in Lisbon, near the sea", speaker="Ann")],
               turn="locomo:c/D2:4", source=SourceTurn("My flat in Lisbon is near the sea.", "Ann", T2,
                                                        ref="locomo:c/D2:4"))
    bank.apply([MemoryOp("NOOP", memory_id=mid, text="Ann lives in Lisbon", speaker="Ann")], turn="locomo:c/D3:1",
               source=SourceTurn("Lisbon, Lisbon, Lisbon.", "Ann", T2, ref="locomo:c/D3:1"))
    assert any(s.role == "repeated" for s in bank.memory_sources(mid))
    agent = AnswerAgent(bank, FakeBackend(default="**Answer:** Lisbon"))
    ans = answer_with_agent(agent, "Where does Ann live?", ["Ann"], distill=True)
    assert not covers(ans.evidence_refs(), ["D3:1"])  # a turn that only repeated the memory
    assert [m.id for m in ans.shown] == [mid]
    assert not covers([m.source for m in ans.retrieved], ["D2:4"])  # the memory's own source string
    assert covers(ans.evidence_refs(), ["D2:4"]) and covers(ans.evidence_refs(), ["D1:1"])
    assert ans.source_refs == ["locomo:c/D2:4"]  # the updating turn is quoted: it shares most words
    assert not covers(ans.evidence_refs(), ["D2:40"])


def test_records_keep_the_shown_sources_and_no_sources_is_the_paper_prompt(tmp_path):
    on, records, answer = run(tmp_path, "on")
    assert on["config"]["sources"] is True and on["evidence_recall"] == 1.0
    [rec] = records
    assert rec["evidence_retrieved"] is True and rec["shown_source_refs"]
    assert all(r.startswith("locomo:conv-src/") for r in rec["evidence_refs"])
    assert "(said #1:" in answer.calls[-1]["messages"][1]["content"]
    off, records, answer = run(tmp_path, "off", sources=False)
    assert off["config"]["sources"] is False and off["evidence_recall"] == 1.0
    assert records[0]["shown_source_refs"] == []
    assert "(said #" not in answer.calls[-1]["messages"][1]["content"]
    run_file = json.loads((tmp_path / "off" / "run.json").read_text())
    assert run_file["answer_sources"] is False
    table, _ = compare_runs([tmp_path / "on", tmp_path / "off"], tmp_path / "cmp")
    assert "| option sources | on | off |" in table and "| option gate | on | on |" in table
    assert "memories with unsupported name/number" in table


def test_the_audit_counts_unsupported_memories(tmp_path):
    gated, _, _ = run(tmp_path, "gated")
    audit = gated["ingestion"]["audit"]
    assert audit["memories"] == 2 and audit["unsupported"] == 0 and audit["no_source_text"] == 0
    open_, _, _ = run(tmp_path, "open", gate=False)
    audit = open_["ingestion"]["audit"]
    assert audit["unsupported"] == 2 and audit["unsupported_share"] == 0.5  # the two Lunas
    report = (tmp_path / "open" / "report.md").read_text(encoding="utf-8")
    assert "absent from their source turns: 2 of 4 (50.00%)" in report


def test_missing_claims_reads_every_source_and_its_time():
    m = Memory(1, "Ann went to Oslo on 7 May, 2023", speaker="Ann")
    said = [MemorySource(1, "turn", "added", "I went to Oslo yesterday.", "Ann", T1)]
    assert missing_claims(m, said) == []  # "yesterday" said on 8 May
    assert missing_claims(m, [MemorySource(1, "turn", "added", "I went to Oslo.", "Ann", T2)]) == ["7", "May"]
    two = said + [MemorySource(2, "turn", "updated", "Oslo was great!", "Ann", T2)]
    assert missing_claims(m, two) == []
    assert missing_claims(m, [MemorySource(None, "user", "edited", None)]) is None


def test_audit_bank_separates_memories_without_source_text(bank):
    bank.apply([MemoryOp("ADD", text="Bob has a cat named Tom", speaker="Bob")], actor="user")
    bank.apply([MemoryOp("ADD", text="Bob lives in Rome", speaker="Bob")], turn="t:1",
               source=SourceTurn("I live in Oslo.", "Bob", T1, ref="t:1"))
    assert audit_bank(bank) == {"memories": 2, "with_source_text": 1, "no_source_text": 1, "unsupported": 1,
                                "unsupported_share": 1.0}


def test_the_flags_parse_and_name_the_output_folder():
    from app.cli import build_parser
    from app.cli.eval_cmd import _config

    args = build_parser().parse_args(["eval", "locomo", "--data", "val.json", "--no-sources", "--no-gate",
                                      "--manager-extraction", "free"])
    config = _config(args)
    assert (config.sources, config.gate, config.manager_extraction) == (False, False, "free")
    assert option_tag(config) == "-nogate-free-nosources"
    default = _config(build_parser().parse_args(["eval", "locomo", "--data", "val.json"]))
    assert default.sources is True and option_tag(default) == ""
    assert default_out(config) != default_out(default)
    assert default_out(default).parent.name == "val"

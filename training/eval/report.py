"""Turn per-question records into summary.json, report.md and PNG plots; compare runs.

Pure aggregation over the records `training/eval/runner.py` writes to predictions.jsonl (one
dict per question: category, f1, bleu1, em, judge, latencies, prompt tokens...) and the
per-conversation ingestion stats. Plots use matplotlib's Agg backend (no display; any thread,
but matplotlib itself is not thread-safe: one plot at a time).

Overall scores are the plain mean over questions (Mem0 / Memory-R1), not a mean of categories.
"""

from __future__ import annotations

from pathlib import Path
from typing import Iterable, Sequence

from core.agents.prompts import op_counts
from core.errors import InvalidInputError
from core.fileio import atomic_write_json, read_json
from core.locomo import CATEGORY_NAMES, PAPER_CATEGORY_NAMES, SCORED_CATEGORIES
from core.types import OP_EVENTS

from training.eval.metrics import mean

SCORE_KEYS = ("f1", "bleu1", "em", "judge")
OP_NAMES = OP_EVENTS


def percentiles(values: Iterable[float]) -> dict:
    """p50 / p95 / mean / n of a list of numbers (linear interpolation, numpy's default).

    >>> percentiles([1.0, 2.0, 3.0, 4.0])
    {'n': 4, 'mean': 2.5, 'p50': 2.5, 'p95': 3.85}
    >>> percentiles([])
    {'n': 0, 'mean': None, 'p50': None, 'p95': None}
    """
    vals = sorted(float(v) for v in values if v is not None)
    if not vals:
        return {"n": 0, "mean": None, "p50": None, "p95": None}

    def pct(q: float) -> float:
        pos = (len(vals) - 1) * q
        lo = int(pos)
        hi = min(lo + 1, len(vals) - 1)
        return round(vals[lo] + (vals[hi] - vals[lo]) * (pos - lo), 6)

    return {"n": len(vals), "mean": round(sum(vals) / len(vals), 6), "p50": pct(0.5), "p95": pct(0.95)}


def _judge_value(label) -> float | None:
    if label is None:
        return None
    return 1.0 if str(label).upper() == "CORRECT" else 0.0


def score_block(records: Sequence[dict]) -> dict:
    """n and mean F1 / BLEU-1 / EM (and judge accuracy when every record has a label).

    >>> score_block([{"f1": 1.0, "bleu1": 0.5, "em": 1.0}, {"f1": 0.0, "bleu1": 0.0, "em": 0.0}])
    {'n': 2, 'f1': 0.5, 'bleu1': 0.25, 'em': 0.5, 'judge': None}
    """
    judged = [_judge_value(r.get("judge")) for r in records]
    judge = mean(judged) if records and all(j is not None for j in judged) else None
    return {"n": len(records), "f1": mean(r["f1"] for r in records),
            "bleu1": mean(r["bleu1"] for r in records), "em": mean(r["em"] for r in records),
            "judge": judge}


def merge_ingestion(stats: Sequence[dict]) -> dict | None:
    """Sum the per-conversation ingestion stats (None when the system has no memory manager)."""
    from training.eval.extraction import merge_scores

    stats = [s for s in stats if s]
    if not stats:
        return None
    ops = {op: sum(int(s.get("ops", {}).get(op, 0)) for s in stats) for op in OP_NAMES}
    turn_s = [t for s in stats for t in s.get("turn_seconds", [])]
    return {
        "conversations": len(stats),
        "turns": sum(int(s.get("turns", 0)) for s in stats),
        "seconds": round(sum(float(s.get("seconds", 0.0)) for s in stats), 3),
        "memories": sum(int(s.get("memories", 0)) for s in stats),
        "ops": ops,
        "failures": sum(int(s.get("failures", 0)) for s in stats),
        "rejected": sum(int(s.get("rejected") or 0) for s in stats),  # refused by the grounding gate
        "audit": merge_audits([s["audit"] for s in stats if isinstance(s.get("audit"), dict)]),
        # what the banks kept per turn against LoCoMo's gold facts (training.eval.extraction)
        "extraction": merge_scores([s["extraction"] for s in stats if isinstance(s.get("extraction"), dict)]),
        "cached": sum(1 for s in stats if s.get("cached")),
        "manager_turn_s": percentiles(turn_s),
        "kind": stats[0].get("kind", "memory"),
    }


AUDIT_COUNTS = ("memories", "with_source_text", "no_source_text", "unsupported")


def merge_audits(audits: Sequence[dict]) -> dict | None:
    """Sum `training.eval.audit.audit_bank` results (None when there are none: banks built
    before the audit).

    >>> merge_audits([{"memories": 3, "with_source_text": 2, "no_source_text": 1, "unsupported": 1},
    ...               {"memories": 2, "with_source_text": 2, "no_source_text": 0, "unsupported": 0}])
    {'memories': 5, 'with_source_text': 4, 'no_source_text': 1, 'unsupported': 1, 'unsupported_share': 0.25}
    """
    if not audits:
        return None
    out = {k: sum(int(a.get(k) or 0) for a in audits) for k in AUDIT_COUNTS}
    out["unsupported_share"] = round(out["unsupported"] / out["with_source_text"], 4) if out["with_source_text"] \
        else None
    return out


def summarise(records: Sequence[dict], *, system: str, config: dict,
              ingestion: Sequence[dict] = ()) -> dict:
    """The summary.json object of one run."""
    cats = {}
    for c in SCORED_CATEGORIES:
        block = score_block([r for r in records if int(r["category"]) == c])
        cats[str(c)] = {"name": CATEGORY_NAMES[c], "paper_name": PAPER_CATEGORY_NAMES[c], **block}
    return {
        "system": system,
        "config": config,
        "n_questions": len(records),
        "overall": score_block(records),
        "categories": cats,
        "ingestion": merge_ingestion(ingestion),
        "timings": {
            "retrieval_s": percentiles(r.get("retrieval_s") for r in records),
            "answer_s": percentiles(r.get("answer_s") for r in records),
            "latency_s": percentiles(r.get("latency_s") for r in records),
        },
        "prompt_tokens": percentiles(r.get("prompt_tokens") for r in records),
        "completion_tokens": percentiles(r.get("completion_tokens") for r in records),
        "answer_failures": sum(1 for r in records if r.get("error")),
    }


def _pct(x) -> str:
    return "-" if x is None else f"{100 * x:.2f}"


def _sec(block: dict | None) -> str:
    if not block or not block.get("n"):
        return "-"
    return f"{block['p50']:.3f} / {block['p95']:.3f}"


def _audit_line(audit: dict | None) -> str:
    if not audit:
        return "- memories checked against their source turns: not measured"
    return (f"- memories with a name or number absent from their source turns: {audit['unsupported']} of "
            f"{audit['with_source_text']} ({_pct(audit['unsupported_share'])}%); memories without source text: "
            f"{audit['no_source_text']}")


def extraction_pr(score: dict | None) -> str:
    """"P 41.2% R 30.0%" of a `training.eval.extraction` score, "-" without one."""
    if not score:
        return "-"
    return f"P {_pct(score.get('precision'))}% R {_pct(score.get('recall'))}%"


def _extraction_line(score: dict | None) -> str:
    if not score:
        return "- facts kept per turn against the gold facts: not measured (no gold facts)"
    return (f"- facts kept per turn against LoCoMo's gold facts ({score['match']}): precision "
            f"{_pct(score['precision'])}% ({score['correct']} of {score['proposed']}), recall {_pct(score['recall'])}% "
            f"({score['recalled']} of {score['gold']} over {score['turns_with_gold']} turns with gold facts)")


def render_report(summary: dict, plots: Sequence[str] = ()) -> str:
    """report.md: scores per category (the data's and the papers' names), timings, plots."""
    cfg = summary.get("config", {})
    lines = [f"# LoCoMo evaluation: {summary['system']}", ""]
    for key in ("data", "samples", "max_sessions", "max_questions", "answer_model", "answer_adapter",
                "manager_model", "manager_adapter", "manager_extraction", "gate", "sources", "judge_model",
                "prompt_version", "embedder"):
        if cfg.get(key) is not None:
            lines.append(f"- {key}: `{cfg[key]}`")
    lines += ["", "Scores x100; overall is the plain mean over questions.", "",
              "| category | data name | papers' name | n | F1 | BLEU-1 | EM | judge |",
              "|---|---|---|---|---|---|---|---|"]
    for c, b in summary["categories"].items():
        lines.append(f"| {c} | {b['name']} | {b['paper_name']} | {b['n']} | {_pct(b['f1'] if b['n'] else None)} "
                     f"| {_pct(b['bleu1'] if b['n'] else None)} | {_pct(b['em'] if b['n'] else None)} "
                     f"| {_pct(b['judge'])} |")
    o = summary["overall"]
    lines.append(f"| **overall** | | | {o['n']} | **{_pct(o['f1'])}** | **{_pct(o['bleu1'])}** "
                 f"| {_pct(o['em'])} | {_pct(o['judge'])} |")
    ing = summary.get("ingestion")
    lines += ["", "## Memory bank", ""]
    if ing and ing.get("kind") == "memory":
        ops = ing["ops"]
        lines += [f"- conversations: {ing['conversations']} ({ing['cached']} from the bank cache)",
                  f"- turns ingested: {ing['turns']} in {ing['seconds']:.1f} s",
                  f"- memories in the bank(s): {ing['memories']}",
                  "- operations: " + ", ".join(f"{k} {ops[k]}" for k in OP_NAMES),
                  f"- proposed facts rejected by the grounding gate: {ing.get('rejected', 0)}",
                  _audit_line(ing.get("audit")),
                  _extraction_line(ing.get("extraction")),
                  f"- manager failures (unparseable output after the retry; turn skipped): {ing['failures']}"]
    elif ing:
        how = "from the cache" if ing.get("cached") else f"in {ing['seconds']:.1f} s"
        lines += [f"- no memory manager: {ing['memories']} raw dialogue turns indexed ({how})"]
    else:
        lines += ["- no memory manager, no index (the conversation goes into the prompt)"]
    t = summary["timings"]
    mgr = ing.get("manager_turn_s") if ing and ing.get("kind") == "memory" else None
    tok = summary["prompt_tokens"]
    lines += ["", "## Timings (seconds, p50 / p95)", "",
              "| step | p50 / p95 |", "|---|---|",
              f"| manager per turn | {_sec(mgr)} |",
              f"| retrieval per question | {_sec(t['retrieval_s'])} |",
              f"| answering per question | {_sec(t['answer_s'])} |",
              f"| question total | {_sec(t['latency_s'])} |", "",
              f"Prompt tokens per question: mean {tok['mean'] or 0:.0f}, p50 {tok['p50'] or 0:.0f}, "
              f"p95 {tok['p95'] or 0:.0f}; generated tokens per question: mean "
              f"{(summary.get('completion_tokens') or {}).get('mean') or 0:.0f}.",
              f"Answer failures (counted as empty answers): {summary['answer_failures']}."]
    if summary.get("evidence_recall") is not None:
        lines.append(f"Evidence recall (share of questions with a memory or turn in the prompt that came from "
                     f"one of its evidence turns, by its source or its provenance links): "
                     f"{_pct(summary['evidence_recall'])}.")
    if summary.get("evidence_recall_plain") is not None:
        lines.append(f"Evidence recall, earlier measure (any retrieved memory's own source string): "
                     f"{_pct(summary['evidence_recall_plain'])}.")
    if plots:
        lines += ["", "## Plots", ""] + [f"![{Path(p).stem}]({Path(p).name})" for p in plots]
    return "\n".join(lines) + "\n"


# --- plots ---------------------------------------------------------------------------------

def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _category_labels() -> list[str]:
    return [f"{c} {CATEGORY_NAMES[c]}\n({PAPER_CATEGORY_NAMES[c]})" for c in SCORED_CATEGORIES] + ["overall"]


def plot_scores(summaries: Sequence[dict], labels: Sequence[str], path: Path) -> Path:
    """Grouped bars: F1 (top) and BLEU-1 (bottom) per category and overall, one bar per system."""
    plt = _pyplot()
    fig, axes = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    xs = list(range(len(SCORED_CATEGORIES) + 1))
    width = 0.8 / max(1, len(summaries))
    for ax, key, title in ((axes[0], "f1", "F1"), (axes[1], "bleu1", "BLEU-1")):
        for i, (s, label) in enumerate(zip(summaries, labels)):
            vals = [100 * s["categories"][str(c)][key] for c in SCORED_CATEGORIES] + [100 * s["overall"][key]]
            ax.bar([x + i * width - 0.4 + width / 2 for x in xs], vals, width, label=label)
        ax.set_ylabel(f"{title} x100")
        ax.set_ylim(0, 100)
        ax.grid(axis="y", alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[1].set_xticks(xs)
    axes[1].set_xticklabels(_category_labels(), fontsize=8)
    axes[0].set_title("LoCoMo scores by category (data's name, papers' name)")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_ops(summaries: Sequence[dict], labels: Sequence[str], path: Path) -> Path | None:
    """Bars of ADD/UPDATE/DELETE/NOOP counts per system with a memory manager (None if none has)."""
    pairs = [(s, lab) for s, lab in zip(summaries, labels)
             if s.get("ingestion") and s["ingestion"].get("kind") == "memory"]
    if not pairs:
        return None
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    width = 0.8 / len(pairs)
    for i, (s, label) in enumerate(pairs):
        ops = s["ingestion"]["ops"]
        ax.bar([x + i * width - 0.4 + width / 2 for x in range(len(OP_NAMES))],
               [ops[k] for k in OP_NAMES], width, label=label)
    ax.set_xticks(range(len(OP_NAMES)))
    ax.set_xticklabels(OP_NAMES)
    ax.set_ylabel("operations")
    ax.set_title("Memory Manager operations during ingestion")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def plot_latency(records: Sequence[dict], turn_seconds: Sequence[float], path: Path) -> Path:
    """Histograms: seconds per question (retrieval + answer) and, if any, manager seconds per turn."""
    plt = _pyplot()
    panels = [("seconds per question", [r["latency_s"] for r in records if r.get("latency_s") is not None])]
    if turn_seconds:
        panels.append(("manager seconds per turn", list(turn_seconds)))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.5), squeeze=False)
    for ax, (title, vals) in zip(axes[0], panels):
        ax.hist(vals or [0.0], bins=min(30, max(5, len(vals) // 3)))
        ax.set_title(title)
        ax.set_xlabel("seconds")
        ax.set_ylabel("count")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def write_outputs(out: Path, summary: dict, records: Sequence[dict], turn_seconds: Sequence[float]) -> list[Path]:
    """summary.json, report.md and the plots of one run, written into `out`."""
    plots = [plot_scores([summary], [summary["system"]], out / "scores_by_category.png")]
    ops = plot_ops([summary], [summary["system"]], out / "memory_ops.png")
    if ops:
        plots.append(ops)
    plots.append(plot_latency(records, turn_seconds, out / "latency.png"))
    summary = {**summary, "plots": [p.name for p in plots]}
    atomic_write_json(out / "summary.json", summary, indent=2)
    (out / "report.md").write_text(render_report(summary, [str(p) for p in plots]), encoding="utf-8")
    return [out / "summary.json", out / "report.md", *plots]


# --- compare -------------------------------------------------------------------------------

def load_summary(run_dir: str | Path) -> dict:
    summary = read_json(Path(run_dir) / "summary.json",
                        missing=f"{run_dir}: no summary.json (not an evaluation output folder)")
    ing = summary.get("ingestion") if isinstance(summary, dict) else None
    if isinstance(ing, dict) and isinstance(ing.get("ops"), dict):  # saved with "NONE": read as NOOP
        ing["ops"] = op_counts(ing["ops"])
    return summary


def run_labels(dirs: Sequence[str | Path], summaries: Sequence[dict]) -> list[str]:
    """Column names: the system, plus the folder name where two runs share a system."""
    systems = [s.get("system", "?") for s in summaries]
    return [s if systems.count(s) == 1 else f"{s} ({Path(d).name})" for s, d in zip(systems, dirs)]


def _opt(value) -> str:
    return "-" if value is None else ("on" if value is True else "off" if value is False else str(value))


def _unsupported(ing: dict) -> str:
    audit = ing.get("audit")
    if not audit:
        return "-"
    return f"{audit['unsupported']} ({_pct(audit['unsupported_share'])}%)"


def comparison_table(summaries: Sequence[dict], labels: Sequence[str]) -> str:
    """A Markdown table, one column per run: scores x100, bank size, ops, timings."""
    rows: list[tuple[str, list[str]]] = [("questions", [str(s["n_questions"]) for s in summaries])]
    rows += [(f"option {key}", [_opt(s.get("config", {}).get(key)) for s in summaries])
             for key in ("manager_extraction", "gate", "sources")]
    for key, name in (("f1", "F1"), ("bleu1", "BLEU-1"), ("em", "EM"), ("judge", "judge")):
        rows.append((f"overall {name}", [_pct(s["overall"][key]) for s in summaries]))
    for c in SCORED_CATEGORIES:
        for key, name in (("f1", "F1"), ("bleu1", "BLEU-1")):
            rows.append((f"{c} {CATEGORY_NAMES[c]} ({PAPER_CATEGORY_NAMES[c]}) {name}",
                         [_pct(s["categories"][str(c)][key]) if s["categories"][str(c)]["n"] else "-"
                          for s in summaries]))

    def ing(s, f):
        i = s.get("ingestion")
        return f(i) if i and i.get("kind") == "memory" else "-"

    rows += [
        ("ingestion s", [ing(s, lambda i: f"{i['seconds']:.1f}") for s in summaries]),
        ("memories in bank", [ing(s, lambda i: str(i["memories"])) for s in summaries]),
        ("ops ADD/UPD/DEL/NOOP", [ing(s, lambda i: "/".join(str(i["ops"][k]) for k in OP_NAMES))
                                  for s in summaries]),
        ("facts rejected", [ing(s, lambda i: str(i.get("rejected", 0))) for s in summaries]),
        ("memories with unsupported name/number", [ing(s, _unsupported) for s in summaries]),
        ("kept facts vs gold P/R", [ing(s, lambda i: extraction_pr(i.get("extraction"))) for s in summaries]),
        ("memories without source text", [ing(s, lambda i: str((i.get("audit") or {}).get("no_source_text", "-")))
                                          for s in summaries]),
        ("manager s/turn p50/p95", [ing(s, lambda i: _sec(i["manager_turn_s"])) for s in summaries]),
        ("retrieval s p50/p95", [_sec(s["timings"]["retrieval_s"]) for s in summaries]),
        ("answer s p50/p95", [_sec(s["timings"]["answer_s"]) for s in summaries]),
        ("prompt tokens mean", [f"{s['prompt_tokens']['mean'] or 0:.0f}" for s in summaries]),
        ("generated tokens mean", [f"{(s.get('completion_tokens') or {}).get('mean') or 0:.0f}"
                                   for s in summaries]),
        ("evidence recall", [_pct(s.get("evidence_recall")) for s in summaries]),
        ("evidence recall (earlier measure)", [_pct(s.get("evidence_recall_plain")) for s in summaries]),
    ]
    out = ["| | " + " | ".join(labels) + " |", "|---" * (len(labels) + 1) + "|"]
    out += [f"| {name} | " + " | ".join(vals) + " |" for name, vals in rows]
    return "\n".join(out) + "\n"


def paired_delta(base: Sequence[float], other: Sequence[float], *, resamples: int = 2000,
                 seed: int = 0) -> dict:
    """Mean of other - base over paired questions, a 95% percentile-bootstrap interval (seeded:
    the same runs give the same interval), and how many questions got better / worse / equal.

    >>> d = paired_delta([0.0, 0.5, 1.0, 0.2], [0.5, 0.5, 1.0, 0.6])
    >>> d["delta"], d["better"], d["worse"], d["equal"], d["ci95"][0] >= 0
    (0.225, 2, 0, 2, True)
    """
    import random

    if len(base) != len(other) or not base:
        raise ValueError("paired_delta needs two non-empty lists of the same length")
    diffs = [b - a for a, b in zip(base, other)]
    n = len(diffs)
    rng = random.Random(seed)
    means = sorted(sum(rng.choices(diffs, k=n)) / n for _ in range(resamples))
    lo, hi = means[int(0.025 * (resamples - 1))], means[int(0.975 * (resamples - 1))]
    return {"n": n, "delta": round(sum(diffs) / n, 4), "ci95": (round(lo, 4), round(hi, 4)),
            "better": sum(d > 0 for d in diffs), "worse": sum(d < 0 for d in diffs),
            "equal": sum(d == 0 for d in diffs)}


def _predictions(run_dir: str | Path) -> dict:
    """A run's per-question records by (sample_id, qa_index), read without touching the file."""
    from core.fileio import read_jsonl

    return {(r["sample_id"], r["qa_index"]): r for r in read_jsonl(Path(run_dir) / "predictions.jsonl", repair=False)
            if isinstance(r, dict) and "sample_id" in r and "qa_index" in r}


def paired_table(dirs: Sequence[str | Path], labels: Sequence[str]) -> str:
    """Each run against the FIRST one on the questions both answered: F1 and BLEU-1 deltas x100
    with 95% bootstrap intervals, and questions better / worse / equal by F1. '' when fewer
    than two runs have predictions."""
    preds = [_predictions(d) for d in dirs]
    if len(preds) < 2 or not preds[0]:
        return ""
    lines = [f"Paired against {labels[0]} (questions both answered; x100, 95% bootstrap interval):", "",
             "| run | questions | F1 delta | BLEU-1 delta | better / worse / equal (F1) |", "|---|---|---|---|---|"]
    for label, other in zip(labels[1:], preds[1:]):
        keys = sorted(set(preds[0]) & set(other))
        if not keys:
            lines.append(f"| {label} | 0 | - | - | - |")
            continue
        cells = []
        for key in ("f1", "bleu1"):
            d = paired_delta([preds[0][k][key] for k in keys], [other[k][key] for k in keys])
            cells.append(f"{100 * d['delta']:+.2f} ({100 * d['ci95'][0]:+.2f} to {100 * d['ci95'][1]:+.2f})")
            if key == "f1":
                counts = f"{d['better']} / {d['worse']} / {d['equal']}"
        lines.append(f"| {label} | {len(keys)} | {cells[0]} | {cells[1]} | {counts} |")
    return "\n".join(lines) + "\n"


def compare_runs(dirs: Sequence[str | Path], out: str | Path) -> tuple[str, list[Path]]:
    """Side-by-side table (returned, and written to out/comparison.md), the paired deltas
    against the first run, and comparison plots."""
    if not dirs:
        raise InvalidInputError("Give at least one evaluation output folder to compare.")
    summaries = [load_summary(d) for d in dirs]
    labels = run_labels(dirs, summaries)
    table = comparison_table(summaries, labels)
    paired = paired_table(dirs, labels)
    if paired:
        table += "\n" + paired
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "comparison.md").write_text("# LoCoMo comparison\n\n" + table, encoding="utf-8")
    files = [out / "comparison.md", plot_scores(summaries, labels, out / "comparison.png")]
    ops = plot_ops(summaries, labels, out / "comparison_ops.png")
    if ops:
        files.append(ops)
    return table, files

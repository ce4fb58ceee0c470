"""Calibrates and reports the grounding gate (core/agents/grounding.py) on LoCoMo gold facts.

Data: `observation` of ../shared/data/locomo/train.json (conv-26, calibration) and val.json
(conv-30, report), read in place, never copied. Each gold fact ("session_N_observation" ->
{speaker: [[fact, dia_id], ...]}) makes
- one positive: the fact against the turn(s) it cites (several cited turns: their texts joined);
- negatives: the same fact against EVERY other turn of the same speaker (all of them, no
  sampling; some of those turns do support the fact, so 100% rejection is not the ceiling).
Turns come from core.locomo (`parse_sample`, `Turn.full_text` with the image caption, the
session's time); the Source names the other participant as a known name.

Three deciders, each with thresholds chosen on train only and reported on val with them:
(a) baseline: share of the fact's content words (lower-cased words minus stopwords and the
    speaker's name) found verbatim in the turn >= t;
(b) the gate without an embedder (`min_support`);
(c) the gate with all-MiniLM-L6-v2 (`min_support`, `min_support_with_cosine`, `min_cosine`).
Selection rule: the most positives accepted on train subject to at least `--min-reject`
(default 98%) of the train negatives rejected (one point of margin over the 97% target);
ties go to more negatives rejected. The final figures are `check_fact` itself with the chosen
config, so they are the module's decisions, not the grid's.

Also prints the gate's verdicts on the prompt-example leak cases (every fact of
prompts.FACT_EXAMPLES against unrelated small talk must be rejected) and two true facts.

    python benchmarks/grounding.py [--data ../shared/data/locomo] [--no-embedder] [--json]
    python benchmarks/grounding.py --no-address-rule    # before session 6: a greeted name supports

`--shipped` skips the calibration grid and reports the module's own constants (DEFAULT_CONFIG,
with the embedder unless --no-embedder): the gate as it ships, in a fraction of the time.
`--no-address-rule` switches off `grounding_text.STRIP_ADDRESS` (a name the turn only greets,
"Hi John!", supports nothing) for a before/after on the same code.

`--json` prints one JSON object of the figures (and nothing else on stdout).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from core.agents import grounding  # noqa: E402
from core.agents.grounding import GateConfig, Source, check_fact  # noqa: E402
from core.agents.grounding_text import STOPWORDS  # noqa: E402
from core.locomo import Sample, parse_sample  # noqa: E402
from training.data.gold_facts import GoldFact, gold_facts  # noqa: E402  (the same parse as training)

# ../shared/data/locomo beside the checkout; from a worktree under <root>/wt/<name>, the main one's
_CANDIDATES = [ROOT.parent / "shared" / "data" / "locomo", ROOT.parent.parent / "shared" / "data" / "locomo"]
DEFAULT_DATA = next((p for p in _CANDIDATES if p.is_dir()), _CANDIDATES[0])
@dataclass(frozen=True)
class Pair:
    fact: str
    source: Source
    positive: bool


def pairs(sample: Sample, facts: list[GoldFact]) -> list[Pair]:
    """Positives and negatives as described in the module docstring. A fact whose cited ids are
    not turns of the sample is skipped."""
    turns = {t.dia_id: t for t in sample.turns}
    out = []
    for f in facts:
        cited = [turns[d] for d in f.dia_ids if d in turns]
        if not cited:
            continue
        others = tuple(s for s in sample.speakers if s != f.speaker)
        text = " ".join(t.full_text for t in cited)
        out.append(Pair(f.text, Source(text, f.speaker, cited[0].time, names=others), True))
        skip = {t.dia_id for t in cited}
        for t in sample.turns:
            if t.speaker == f.speaker and t.dia_id not in skip:
                out.append(Pair(f.text, Source(t.full_text, f.speaker, t.time, names=others), False))
    return out


def load(path: Path) -> tuple[Sample, list[GoldFact]]:
    raw = json.loads(path.read_text(encoding="utf-8"))
    raw = raw[0] if isinstance(raw, list) else raw
    return parse_sample(raw), gold_facts(raw)


# --------------------------------------------------------------------------- deciders

def baseline_support(fact: str, source: Source) -> float:
    """(a): share of the fact's content words found verbatim (lower-cased) in the turn."""
    speaker = {w for n in (source.speaker, *source.names) if n for w in re.findall(r"[a-z0-9]+", n.lower())}
    words = [w for w in re.findall(r"[a-z0-9]+", fact.lower()) if w not in STOPWORDS and w not in speaker]
    said = set(re.findall(r"[a-z0-9]+", source.text.lower()))
    return sum(w in said for w in words) / len(words) if words else 0.0


class CachedEmbedder:
    """Embeds each distinct text once (prime() in one batch); the same vectors check_fact gets."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.name, self.dim = inner.name, inner.dim
        self.cache: dict[str, np.ndarray] = {}

    def prime(self, texts) -> None:
        todo = list(dict.fromkeys(t for t in texts if t not in self.cache))
        if todo:
            for t, v in zip(todo, self.inner.embed(todo)):
                self.cache[t] = v

    def embed(self, texts):
        self.prime(texts)
        return np.stack([self.cache[t] for t in texts]) if texts else np.zeros((0, self.dim), np.float32)


def features(data: list[Pair], embedder=None) -> dict[str, np.ndarray]:
    """Per pair: the gate's hard verdict (a name, number, date or form check failed), its
    support, the fact-source cosine (when an embedder is given) and the baseline's support."""
    hard, support, base = [], [], []
    for p in data:
        v = check_fact(p.fact, p.source)
        hard.append(not v.checks_ok)
        support.append(v.support)
        base.append(baseline_support(p.fact, p.source))
    out = {"hard": np.array(hard), "support": np.array(support), "base": np.array(base),
           "positive": np.array([p.positive for p in data])}
    if embedder is not None:
        texts = [grounding.support_text(p.source)[:grounding.EMBED_MAX_CHARS] for p in data]
        embedder.prime([p.fact for p in data] + texts)
        out["cosine"] = np.array([float(embedder.cache[p.fact] @ embedder.cache[t]) for p, t in zip(data, texts)])
    return out


def rates(accept: np.ndarray, positive: np.ndarray) -> tuple[float, float]:
    return float(accept[positive].mean()), float(1.0 - accept[~positive].mean())


def choose(candidates, positive: np.ndarray, min_reject: float):
    """The (params, accept) with the most positives accepted at >= min_reject negatives rejected."""
    best, key = None, None
    for params, accept in candidates:
        acc, rej = rates(accept, positive)
        if rej >= min_reject and (key is None or (acc, rej) > key):
            best, key = params, (acc, rej)
    return tuple(float(x) for x in best) if isinstance(best, tuple) else (None if best is None else float(best))


def calibrate(feat: dict, min_reject: float) -> dict:
    pos = feat["positive"]
    grid = [round(x, 2) for x in np.arange(0.0, 1.0001, 0.05)]
    out = {"baseline": choose(((t, feat["base"] >= t) for t in grid), pos, min_reject)}
    ok = ~feat["hard"]
    out["gate"] = choose(((t, ok & (feat["support"] >= t)) for t in grid), pos, min_reject)
    if "cosine" in feat:
        sup, cos = feat["support"], feat["cosine"]
        cands = (((floor, w, t), ok & (sup >= floor) & (sup + w * cos >= t))
                 for floor in (0.0, 0.1, 0.2, 0.3) for w in np.round(np.arange(0.0, 2.001, 0.1), 2)
                 for t in np.round(np.arange(0.2, 2.001, 0.02), 2))
        out["gate+embedder"] = choose(cands, pos, min_reject)
    return out


def evaluate(data: list[Pair], feat: dict, chosen: dict, embedder) -> dict:
    """Figures for one split: the baseline from its support, the gate by calling check_fact."""
    pos = feat["positive"]
    res = {}
    if chosen["baseline"] is not None:
        acc, rej = rates(feat["base"] >= chosen["baseline"], pos)
        res["baseline"] = {"threshold": chosen["baseline"], "accepted": acc, "rejected": rej}
    configs = {"gate": (GateConfig(min_support=chosen["gate"]), None)}
    if chosen.get("gate+embedder") is not None:
        floor, w, t = chosen["gate+embedder"]
        configs["gate+embedder"] = (GateConfig(min_support=chosen["gate"], min_support_with_cosine=floor,
                                               cosine_weight=w, min_score=t), embedder)
    for name, (cfg, emb) in configs.items():
        verdicts = [check_fact(p.fact, p.source, embedder=emb, config=cfg) for p in data]
        accept = np.array([v.ok for v in verdicts])
        acc, rej = rates(accept, pos)
        why = Counter(v.reason.split(":")[0].split(" (")[0] for v, p in zip(verdicts, data) if p.positive and not v.ok)
        res[name] = {"config": cfg.__dict__, "accepted": acc, "rejected": rej,
                     "positives_rejected_because": dict(why.most_common())}
    res["positives"], res["negatives"] = int(pos.sum()), int((~pos).sum())
    return res


# --------------------------------------------------------------------------- leak cases

SMALL_TALK = ("Haha ok.", "Sure, sounds good!", "Hi! I'm Sam. I live in Lisbon and I have a dog called Rex.")
SAM_TIME = "4:05 pm on 12 March, 2024"
GREETED = (("Hi John! How are you?", "Sam has a brother named John who is a doctor."),
           ("Thanks, John! See you soon.", "Sam's friend John is a doctor."))


def leak_cases(config: GateConfig, embedder=None) -> list[dict]:
    from core.agents.prompts import FACT_EXAMPLES

    facts = [f for _, _, _, fs in FACT_EXAMPLES for f in fs]
    out = []
    for turn in SMALL_TALK:
        src = Source(turn, "Sam", SAM_TIME)
        for f in facts:
            v = check_fact(f, src, embedder=embedder, config=config)
            out.append({"turn": turn, "fact": f, "expect": False, "ok": v.ok, "reason": v.reason})
    for f in ("Sam lives in Lisbon.", "Sam has a dog named Rex.", "Sam has a cat named Luna."):
        v = check_fact(f, Source(SMALL_TALK[2], "Sam", SAM_TIME), embedder=embedder, config=config)
        out.append({"turn": SMALL_TALK[2], "fact": f, "expect": "Luna" not in f, "ok": v.ok, "reason": v.reason})
    for turn, f in GREETED:  # a name only greeted supports no relation (session 6)
        v = check_fact(f, Source(turn, "Sam", SAM_TIME), embedder=embedder, config=config)
        out.append({"turn": turn, "fact": f, "expect": False, "ok": v.ok, "reason": v.reason})
    return out


def shipped(data_dir: Path, embedder, as_json: bool, say, t0: float) -> int:
    """Accepted/rejected with `grounding.DEFAULT_CONFIG` on train and val (no grid)."""
    report: dict = {"config": grounding.DEFAULT_CONFIG.__dict__, "embedder": embedder is not None}
    for split in ("train", "val"):
        sample, facts = load(data_dir / f"{split}.json")
        data = pairs(sample, facts)
        if embedder is not None:
            embedder.prime([p.fact for p in data] + [grounding.support_text(p.source)[:grounding.EMBED_MAX_CHARS]
                                                     for p in data])
        accept = np.array([check_fact(p.fact, p.source, embedder=embedder).ok for p in data])
        acc, rej = rates(accept, np.array([p.positive for p in data]))
        report[split] = {"sample": sample.sample_id, "accepted": acc, "rejected": rej,
                         "positives": sum(p.positive for p in data), "negatives": sum(not p.positive for p in data)}
        say(f"{split} ({sample.sample_id}): accepted {acc:.2%} of {report[split]['positives']}, "
            f"rejected {rej:.2%} of {report[split]['negatives']}")
    report["leaks"] = leak_cases(grounding.DEFAULT_CONFIG, embedder)
    report["leaks_all_as_expected"] = all(c["ok"] == c["expect"] for c in report["leaks"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    say(f"leak cases as expected: {report['leaks_all_as_expected']}; {report['seconds']} s")
    if as_json:
        print(json.dumps(report))
    return 0


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", type=Path, default=DEFAULT_DATA)
    ap.add_argument("--no-embedder", action="store_true")
    ap.add_argument("--min-reject", type=float, default=0.98)
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--no-address-rule", action="store_true", help="grounding_text.STRIP_ADDRESS off")
    ap.add_argument("--shipped", action="store_true", help="only the shipped DEFAULT_CONFIG, no calibration")
    args = ap.parse_args(argv)
    if args.no_address_rule:
        from core.agents import grounding_text

        grounding_text.STRIP_ADDRESS = False
    say = (lambda *a: print(*a, file=sys.stderr)) if args.json else print
    t0 = time.perf_counter()
    embedder = None
    if not args.no_embedder:
        from core.embeddings import default_embedder

        embedder = CachedEmbedder(default_embedder())
    if args.shipped:
        return shipped(args.data, embedder, args.json, say, t0)
    splits = {}
    for split in ("train", "val"):
        sample, facts = load(args.data / f"{split}.json")
        data = pairs(sample, facts)
        splits[split] = (sample.sample_id, data, features(data, embedder))
    chosen = calibrate(splits["train"][2], args.min_reject)
    report = {"selection": f"max positives accepted on train with >= {args.min_reject:.0%} negatives rejected",
              "chosen": chosen}
    for split, (sid, data, feat) in splits.items():
        report[split] = {"sample": sid, **evaluate(data, feat, chosen, embedder)}
    cfg = GateConfig(**report["train"]["gate+embedder"]["config"]) if "gate+embedder" in report["train"] \
        else GateConfig(**report["train"]["gate"]["config"])
    report["leaks"] = leak_cases(cfg, embedder)
    report["leaks_all_as_expected"] = all(c["ok"] == c["expect"] for c in report["leaks"])
    report["seconds"] = round(time.perf_counter() - t0, 1)
    if args.json:
        print(json.dumps(report))
        return 0
    say(f"selection: {report['selection']}")
    for split in ("train", "val"):
        r = report[split]
        say(f"\n{split} ({r['sample']}): {r['positives']} positives, {r['negatives']} negatives")
        for name in ("baseline", "gate", "gate+embedder"):
            if name in r:
                params = r[name].get("threshold", r[name].get("config"))
                say(f"  {name:14s} accepted {r[name]['accepted']:6.1%}  rejected {r[name]['rejected']:6.1%}  {params}")
                if "positives_rejected_because" in r[name]:
                    say(f"  {'':14s} positives rejected because: {r[name]['positives_rejected_because']}")
    say("\nprompt-example leak cases (config of the last line above):")
    for c in report["leaks"]:
        mark = "ok " if c["ok"] == c["expect"] else "BAD"
        say(f"  {mark} {'accept' if c['ok'] else 'reject'}  {c['fact']!r} vs {c['turn'][:30]!r}: {c['reason']}")
    say(f"\n{report['seconds']} s")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

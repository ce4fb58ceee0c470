"""How much of a chat reply's prompt a prefill of the draft leaves to evaluate at send, on real
questions over a real bank (prints figures; no pass/fail).

For each question of categories 1-4 in `--data` (e.g. val conv-30) sent as a new chat's first
message against `--bank` (e.g. the evaluation's cached memory-r1 bank of that conversation),
with the real embedder and the embedded model's tokenizer, the default chat settings: the
prompt the reply sends, and the prompt `Assistant.prefill` evaluated for a draft of it. NEW
tokens at send = the prompt's tokens after its common text prefix with the draft's (what
llama.cpp evaluates again). Drafts: the whole message (typing paused before Enter), without
its last word, without its last two words (Enter pressed right after typing them), and no
prefill at all (everything after the fixed system text is new). Also: how often the memory
block is the same as the final message's.

    python benchmarks/chat_prefill.py --bank <data dir>/eval-cache/memory-conv-30-*/bank.sqlite3 \\
        --data ../shared/data/locomo/val.json
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from benchmarks.common import percentile  # noqa: E402
from core.agents.prompts import format_time  # noqa: E402
from core.assistant.pipeline import Assistant  # noqa: E402
from core.config import Settings  # noqa: E402
from core.embeddings import default_embedder  # noqa: E402
from core.fakes import FakeBackend  # noqa: E402
from core.llm.runtime import LlamaBackend  # noqa: E402
from core.locomo import load_locomo  # noqa: E402
from core.memory import MemoryBank  # noqa: E402

DRAFTS = {"whole message": 0, "without the last word": 1, "without the last 2 words": 2}


def draft(text: str, drop: int) -> str:
    words = text.split(" ")
    return " ".join(words[:len(words) - drop]) if drop < len(words) else words[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--bank", required=True, help="a memory bank (copied; the copy is read)")
    parser.add_argument("--data", required=True, help="LoCoMo JSON whose questions are sent")
    parser.add_argument("--model", default=None, metavar="PATH", help="GGUF whose tokenizer counts (default: embedded)")
    args = parser.parse_args()
    backend = LlamaBackend(path=args.model, n_threads=1, n_ctx=4096)
    questions = [qa.question for s in load_locomo(args.data) for qa in s.qa if qa.category in (1, 2, 3, 4)]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bank.sqlite3"
        shutil.copy(args.bank, path)
        bank = MemoryBank(path, default_embedder())
        a = Assistant(bank, backend, FakeBackend(), settings=Settings())
        agent = a._agent()
        now = format_time(datetime.now())

        def prompt(text: str) -> tuple[str, list[int]]:
            history, history_memories, _, shown = a._turn(agent, None, text, 1 << 62, temporary=False)
            msgs = agent.chat_prompt(text, history=history, memories=shown, params=a.settings.gen_params(),
                                     user_name=a.user_name, assistant_name=a.assistant_name, now=now,
                                     history_memories=history_memories, system=a.system_extra(None))
            return backend.apply_chat_template(msgs), [m.id for m in shown]

        def new_tokens(final: str, cached: str) -> int:
            common = len(os.path.commonprefix([final, cached]))
            return backend.count_tokens(final) - (backend.count_tokens(final[:common]) if common else 0)

        system = backend.apply_chat_template(agent.chat_prompt("x", params=a.settings.gen_params(),
                                                               system=a.system_extra(None))[:1])
        rows: dict[str, list[int]] = {"no prefill": [], **{k: [] for k in DRAFTS}}
        same: dict[str, int] = {k: 0 for k in DRAFTS}
        shown_counts = []
        for q in questions:
            final, ids = prompt(q)
            shown_counts.append(len(ids))
            rows["no prefill"].append(new_tokens(final, system))
            for name, drop in DRAFTS.items():
                text, dids = prompt(draft(q, drop))
                rows[name].append(new_tokens(final, text))
                same[name] += dids == ids
        a.close()
        bank.close()
    backend.close()
    print(f"{len(questions)} questions, {bank_name(args.bank)}; memories in the block: "
          f"p50 {percentile(shown_counts, 50):.0f}, max {max(shown_counts)}")
    for name, v in rows.items():
        extra = f", memory block unchanged {same[name]}/{len(questions)}" if name in same else ""
        print(f"{name:26s}: new prompt tokens at send p50 {percentile(v, 50):.0f}, p95 {percentile(v, 95):.0f}, "
              f"mean {sum(v) / len(v):.1f}{extra}")


def bank_name(path: str) -> str:
    return Path(path).parent.name


if __name__ == "__main__":
    main()

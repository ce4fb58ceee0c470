"""The process `test_kill.py` SIGKILLs: a chat loop over a real bank with slow scripted models.

    python kill_child.py BANK TRIAL SEED [--drain]

Prints `READY <resumed>` once the assistant has queued the turns an earlier (killed) run
left, then chats forever (`--drain`: only waits for the manager and exits 0).
"""

from __future__ import annotations

import random
import re
import sys
import time

from core.assistant.pipeline import Assistant
from core.fakes import FakeBackend, HashEmbedder, add_every_fact, router
from core.memory.bank import MemoryBank

ITEM = re.compile(r"item-\d+-\d+")


def facts(content: str) -> list[str]:
    """One fact per turn: the item its message names (the last one in the prompt)."""
    found = ITEM.findall(content)
    return [f"Ann bought {found[-1]}."] if found else []


def main(argv: list[str]) -> int:
    path, trial, seed = argv[0], int(argv[1]), int(argv[2])
    bank = MemoryBank(path, HashEmbedder())
    # a few ms per streamed piece: a reply or a manager call takes tens of ms, so kills land
    # mid-reply, mid-extraction, mid-decision and between turns
    answer = FakeBackend(default=router("**Answer:** Noted, that sounds like a fine purchase."), chunk=3,
                         delay=0.002)
    manager = FakeBackend(default=router(facts=facts, decide=add_every_fact), chunk=3, delay=0.002)
    assistant = Assistant(bank, answer, manager, user_name="Ann")
    resumed = assistant.resume_pending()
    print(f"READY {resumed}", flush=True)
    if "--drain" in argv:
        ok = assistant.wait_idle(60)
        assistant.close()
        bank.close()
        return 0 if ok else 1
    rng = random.Random(seed)
    cid = bank.chats.create_conversation(f"Trial {trial}").id
    for i in range(10_000):
        assistant.reply(cid, f"I bought item-{trial}-{i} today.")
        time.sleep(rng.uniform(0.0, 0.25))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
